"""Frozen-feature probes, the multi-view rule, the one-pass lr x wd grid, k-NN and low-shot subsets.

All on small synthetic features (CPU, a few seconds): a video's features are (S, V, N, D); its class
is which of C prototype directions is planted (scaled) in a few of its tokens, on top of N(0, 1) noise.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vjepa_pipeline.eval.grid import (
    classification_metrics,
    evaluate_head,
    holdout_split,
    selection_rule_name,
    train_probe_grid,
    train_single,
)
from vjepa_pipeline.eval.lowshot import low_shot_indices, low_shot_split, summarize
from vjepa_pipeline.eval.probes import (
    AttentiveProbe,
    LinearProbe,
    knn_predict,
    multiview_logits,
    multiview_loss,
    multiview_probs,
    multiview_tokens,
)
from vjepa_pipeline.eval.suite import ProbeConfig

C, N, D = 4, 8, 32


def toy(m: int, s: int, v: int, seed: int, amp: float = 4.0, planted: int = 2):
    """(m, s, v, N, D) features and balanced labels: class c plants amp * prototype_c in `planted`
    random tokens of every (segment, view). Prototypes are fixed (seed 123) across splits."""
    protos = F.normalize(torch.randn(C, D, generator=torch.Generator().manual_seed(123)), dim=-1)
    g = torch.Generator().manual_seed(seed)
    y = (torch.arange(m) % C)[torch.randperm(m, generator=g)]
    x = torch.randn(m, s, v, N, D, generator=g)
    pos = torch.rand(m, s, v, N, generator=g).argsort(dim=-1)[..., :planted]
    signal = (amp * protos[y])[:, None, None, None, :].expand(m, s, v, planted, D)
    x.scatter_add_(3, pos[..., None].expand(m, s, v, planted, D), signal.contiguous())
    return x, y


def cfg_for(kind: str, **kw) -> ProbeConfig:
    base = dict(
        kind=kind,
        self_attn_blocks=1,
        num_heads=4,
        epochs=10,
        batch_size=16,
        lrs=[1e-3, 3e-3],
        weight_decays=[0.01, 0.1],
        knn_k=10,
        knn_temperature=0.07,
        segment_mode="attend",
    )
    base.update(kw)
    return ProbeConfig(**base)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The probes here are tiny: one intra-op thread is as fast and does not stall when the machine
    is shared (measured 17 s alone vs minutes with 2 threads on a busy 2-core box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    # training features: 2 segments x 1 view; val: 2 segments x 3 views (the multi-view test)
    tx, ty = toy(240, 2, 1, seed=1)
    vx, vy = toy(200, 2, 3, seed=2)
    return tx, ty, vx, vy


# ----------------------------------------------------------------------------- learning + control


@pytest.mark.parametrize("kind", ["attentive", "attentive_v2", "linear", "knn"])
def test_probe_learns_toy_problem_and_shuffled_control_is_at_chance(kind, data):
    tx, ty, vx, vy = data
    cfg = cfg_for(kind)
    res = train_probe_grid(tx, ty, vx, vy, C, cfg, seed=0)
    assert res.top1 >= 95.0, (kind, res.top1, res.grid)
    assert res.top5 == 100.0  # C = 4 < 5
    assert len(res.per_class) == C and res.mean_class_acc >= 95.0
    assert sum(map(sum, res.confusion)) == len(vy)
    assert res.val_probs.shape == (len(vy), C)
    torch.testing.assert_close(res.val_probs.sum(dim=1), torch.ones(len(vy)))

    # Control: the labels of train and of val are each replaced by an independent random
    # permutation, so no label depends on any feature. Given the features and the (shuffled)
    # training labels the predictions are fixed, and val's labels are a uniform permutation of a
    # balanced vector, so E[top-1] = 1/C = 25% exactly and its std is at most the binomial
    # sqrt(.25 * .75 / 200) = 3.1 points: we allow 4 std (12.5 points). (Shuffling only the train
    # labels and scoring true val labels is a much noisier control here: the toy classes are tight
    # clusters, each class's val videos get one common arbitrary label, and the accuracy moves in
    # steps of 100/C = 25 points; measured 9.5-57% over 8 shuffles.)
    sty = ty[torch.randperm(len(ty), generator=torch.Generator().manual_seed(7))]
    svy = vy[torch.randperm(len(vy), generator=torch.Generator().manual_seed(8))]
    ctrl = train_probe_grid(tx, sty, vx, svy, C, cfg, seed=0)
    assert abs(ctrl.top1 - 25.0) <= 12.5, (kind, ctrl.top1)


# ----------------------------------------------------------------------------- multi-view rule


def _hand_linear_probe() -> LinearProbe:
    """D = C = 2, logits = mean-pooled tokens (identity weights, BatchNorm made exactly identity)."""
    head = LinearProbe(2, 2)
    with torch.no_grad():
        head.linear.weight.copy_(torch.eye(2))
        head.linear.bias.zero_()
        head.bn.running_mean.zero_()
        head.bn.running_var.fill_(1.0 - head.bn.eps)
    return head.eval()


def test_multiview_average_is_exact_on_hand_example():
    l3 = math.log(3.0)

    def seg(mean1):  # two tokens whose mean is [0, mean1]
        return torch.tensor([[0.0, mean1 + 1.0], [0.0, mean1 - 1.0]])

    # (S=2, V=2, N=2, D=2); segment means: view 0: [0, 2 ln3], [0, 0]; view 1: [0, ln3], [0, -ln3]
    video = torch.stack([torch.stack([seg(2 * l3), seg(l3)]), torch.stack([seg(0.0), seg(-l3)])])
    feats = video[None]  # B = 1
    head = _hand_linear_probe()
    # attend: one output per view from the mean of its S*N tokens: view 0 -> [0, ln3] -> (1/4, 3/4);
    # view 1 -> [0, 0] -> (1/2, 1/2); averaged probabilities (3/8, 5/8)
    torch.testing.assert_close(multiview_probs(head, feats, "attend"), torch.tensor([[3 / 8, 5 / 8]]))
    # average: one output per (segment, view): (1/10, 9/10), (1/2, 1/2), (1/4, 3/4), (3/4, 1/4)
    # -> averaged probabilities (0.4, 0.6)
    torch.testing.assert_close(multiview_probs(head, feats, "average"), torch.tensor([[0.4, 0.6]]))
    # multiview_logits are the log of the averaged probabilities
    torch.testing.assert_close(multiview_logits(head, feats, "average").exp(), torch.tensor([[0.4, 0.6]]))
    # the training loss is the mean cross-entropy over the outputs (official), here for label 1
    loss = multiview_loss(head, feats, torch.tensor([1]), "average")
    expected = -(math.log(0.9) + math.log(0.5) + math.log(0.75) + math.log(0.25)) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_multiview_token_layout():
    b, s, v, n, d = 2, 3, 2, 4, 5
    feats = torch.randn(b, s, v, n, d)
    tok, k = multiview_tokens(feats, "attend")
    assert (tok.shape, k) == ((b * v, s * n, d), v)
    # row b*V + v holds view v of video b, segments concatenated in order
    torch.testing.assert_close(tok[1 * v + 1], torch.cat([feats[1, si, 1] for si in range(s)]))
    tok, k = multiview_tokens(feats, "average")
    assert (tok.shape, k) == ((b * s * v, n, d), s * v)
    torch.testing.assert_close(tok[(1 * s + 2) * v + 1], feats[1, 2, 1])
    with pytest.raises(ValueError):
        multiview_tokens(feats, "max")


# ----------------------------------------------------------------------------- probe modules


def test_attentive_probe_shapes_and_official_layout():
    head = AttentiveProbe(32, 7, num_heads=4, self_attn_blocks=2, final_norm=False)
    assert head(torch.randn(3, 10, 32)).shape == (3, 7)
    keys = set(head.state_dict())
    for k in [
        "pooler.query_tokens",
        "pooler.cross_attention_block.norm1.weight",
        "pooler.cross_attention_block.xattn.q.weight",
        "pooler.cross_attention_block.xattn.kv.weight",
        "pooler.cross_attention_block.xattn.proj.weight",
        "pooler.cross_attention_block.mlp.fc2.bias",
        "pooler.blocks.1.attn.qkv.weight",
        "pooler.blocks.1.mlp.fc1.weight",
        "linear.weight",
    ]:
        assert k in keys, k
    assert not any(k.startswith("norm.") for k in keys)
    assert "norm.weight" in AttentiveProbe(32, 7, num_heads=4).state_dict()
    # init: truncated normal std 0.02 (cut at 2 std) for weights and the query token
    assert head.pooler.query_tokens.abs().max() <= 0.04 + 1e-6
    assert 0.01 < head.linear.weight.std().item() < 0.03
    # V-JEPA 1 style: the query attends to the tokens directly (no self-attention blocks)
    assert len(AttentiveProbe(32, 7, num_heads=4).pooler.blocks) == 0
    with pytest.raises(ValueError):
        AttentiveProbe(30, 7, num_heads=4)


def test_attentive_probe_is_permutation_invariant_over_tokens():
    head = AttentiveProbe(32, 5, num_heads=4, self_attn_blocks=1).eval()
    x = torch.randn(2, 12, 32)
    torch.testing.assert_close(head(x), head(x[:, torch.randperm(12)]), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- grid


def test_grid_selection_and_rules(data):
    tx, ty, vx, vy = data
    cfg = cfg_for("attentive", epochs=3, lrs=[1e-4, 1e-3, 1e-2], weight_decays=[0.0, 0.3])
    res = train_probe_grid(tx, ty, vx, vy, C, cfg, seed=0, keep_all_heads=True)
    assert res.selection_rule == "held-out 10% of train"
    assert (res.num_fit, res.num_holdout) == (216, 24)
    assert len(res.grid) == 6 and res.grid[0]["lr"] == 1e-4 and res.grid[1]["wd"] == 0.3  # lr-major order
    best = max(e["holdout_top1"] for e in res.grid)
    assert res.grid[res.chosen_index]["holdout_top1"] == best
    assert res.chosen == {"lr": res.grid[res.chosen_index]["lr"], "wd": res.grid[res.chosen_index]["wd"]}
    assert res.top1 == pytest.approx(res.grid[res.chosen_index]["val_top1"])
    # curves: one entry per epoch, one value per head
    assert res.curves["epoch"] == [1, 2, 3]
    assert all(
        len(row) == 6
        for row in res.curves["train_loss"] + res.curves["holdout_top1"] + res.curves["val_top1"]
    )
    # every head is different: lrs differ, and so do wds at the same lr
    flat = [torch.cat([t.flatten().float() for t in st.values()]) for st in res.head_states]
    for i in range(6):
        for j in range(i + 1, 6):
            assert not torch.allclose(flat[i], flat[j]), (res.grid[i], res.grid[j])
    torch.testing.assert_close(res.head_state, res.head_states[res.chosen_index])

    val = train_probe_grid(tx, ty, vx, vy, C, dataclasses_replace(cfg, selection="best_on_val"), seed=0)
    assert val.selection_rule == "best on val (optimistic)"
    assert val.num_holdout == 0 and val.grid[0]["holdout_top1"] is None
    assert val.top1 == max(e["val_top1"] for e in val.grid)
    assert selection_rule_name(ProbeConfig(holdout_fraction=0.2)) == "held-out 20% of train"


def dataclasses_replace(cfg, **kw):
    import dataclasses

    return dataclasses.replace(cfg, **kw)


@pytest.mark.parametrize("kind,mode", [("attentive_v2", "attend"), ("linear", "average")])
def test_one_pass_grid_equals_separate_runs(kind, mode, data):
    tx, ty, vx, vy = data
    cfg = cfg_for(
        kind, epochs=3, warmup_epochs=1.0, segment_mode=mode, lrs=[1e-3, 5e-3], weight_decays=[0.01, 0.5]
    )
    grid = train_probe_grid(tx, ty, vx, vy, C, cfg, seed=3, keep_all_heads=True)
    settings = [(lr, wd) for lr in cfg.lrs for wd in cfg.weight_decays]
    for i, (lr, wd) in enumerate(settings):
        single = train_single(tx, ty, vx, vy, C, cfg, lr, wd, seed=3)
        assert single.grid[0]["lr"] == lr and single.grid[0]["wd"] == wd
        for key, value in single.head_state.items():
            torch.testing.assert_close(grid.head_states[i][key], value, rtol=1e-6, atol=1e-7, msg=key)
        assert single.grid[0]["val_top1"] == grid.grid[i]["val_top1"]
        assert single.curves["train_loss"][-1][0] == pytest.approx(grid.curves["train_loss"][-1][i], rel=1e-6)


def test_evaluate_saved_head_reproduces_val(data):
    tx, ty, vx, vy = data
    for kind in ("attentive", "linear", "knn"):
        res = train_probe_grid(tx, ty, vx, vy, C, cfg_for(kind, epochs=2), seed=0)
        again = evaluate_head(res.head_state, res.head_config, vx, vy, "attend")
        torch.testing.assert_close(again["probs"], res.val_probs, rtol=1e-5, atol=1e-6)
        assert again["top1"] == pytest.approx(res.top1)


def test_knn_grid_result_shape(data):
    tx, ty, vx, vy = data
    res = train_probe_grid(tx, ty, vx, vy, C, cfg_for("knn", knn_k=5, knn_temperature=0.1), seed=0)
    assert res.chosen == {"k": 5, "temperature": 0.1}
    assert len(res.grid) == 1 and res.grid[0]["holdout_top1"] is not None
    assert res.curves["epoch"] == []


def test_one_shot_falls_back_to_val_selection_and_says_so(data):
    tx, ty, vx, vy = data
    idx = low_shot_indices(ty, 1, seed=0)
    for kind in ("linear", "knn"):
        res = train_probe_grid(tx[idx], ty[idx], vx, vy, C, cfg_for(kind, epochs=2, batch_size=4), seed=0)
        assert res.selection_rule.startswith("best on val (optimistic")
        assert res.num_holdout == 0 and res.num_fit == C


def test_grid_logs_every_epoch_and_leaves_global_rng_alone(data):
    tx, ty, vx, vy = data
    records = []
    torch.manual_seed(5)
    before = torch.get_rng_state()
    train_probe_grid(tx, ty, vx, vy, C, cfg_for("attentive", epochs=2), seed=0, log=records.append)
    assert torch.equal(before, torch.get_rng_state())
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(len(r["train_loss"]) == 4 and len(r["holdout_top1"]) == 4 for r in records)


def test_holdout_split_is_stratified_and_seeded():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 19 + [3] * 1)
    fit, hold = holdout_split(labels, 0.1, seed=0)
    assert len(hold) == 10 and len(fit) == 90
    assert set(fit.tolist()).isdisjoint(hold.tolist()) and len(set(fit.tolist()) | set(hold.tolist())) == 100
    counts = torch.bincount(labels[hold], minlength=4).tolist()
    assert (
        counts[0] == 5 and counts[1] == 3 and counts[2] in (1, 2) and counts[3] == 0
    )  # single sample stays in fit
    assert torch.equal(hold, holdout_split(labels, 0.1, seed=0)[1])
    assert not torch.equal(hold, holdout_split(labels, 0.1, seed=1)[1])


def test_classification_metrics_by_hand():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4]])
    labels = torch.tensor([0, 1, 1, 0])
    m = classification_metrics(probs, labels, 3)
    assert m["top1"] == 50.0 and m["top5"] == 100.0
    assert m["confusion"] == [[1, 0, 1], [0, 1, 1], [0, 0, 0]]
    assert m["per_class"] == [50.0, 50.0, None] and m["mean_class_acc"] == 50.0


# ----------------------------------------------------------------------------- k-NN


def test_knn_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    train = torch.randn(12, 3, 6, generator=g)  # (N, tokens, D): mean-pooled first
    labels = torch.randint(0, 3, (12,), generator=g)
    test = torch.randn(5, 3, 6, generator=g)
    k, temp = 4, 0.5
    got = knn_predict(train, labels, test, 3, k=k, temperature=temp, chunk_size=2)
    tr = [t.mean(0) / t.mean(0).norm() for t in train]
    for i, q in enumerate(test):
        q = q.mean(0) / q.mean(0).norm()
        sims = sorted(((float(q @ t), j) for j, t in enumerate(tr)), reverse=True)[:k]
        votes = [0.0, 0.0, 0.0]
        for sim, j in sims:
            votes[int(labels[j])] += math.exp(sim / temp)
        expected = torch.tensor([v / sum(votes) for v in votes])
        torch.testing.assert_close(got[i], expected, rtol=1e-5, atol=1e-6)
    # k larger than the bank uses the whole bank
    assert knn_predict(train, labels, test, 3, k=100).shape == (5, 3)


# ----------------------------------------------------------------------------- low-shot


def test_low_shot_indices():
    labels = torch.tensor([0] * 20 + [1] * 15 + [2] * 3 + [3] * 10)[
        torch.randperm(48, generator=torch.Generator().manual_seed(0))
    ]
    idx = low_shot_indices(labels, 5, seed=0)
    assert idx.dtype == torch.long and len(set(idx.tolist())) == len(idx)
    assert torch.bincount(labels[idx], minlength=4).tolist() == [5, 5, 3, 5]
    assert torch.equal(idx, low_shot_indices(labels, 5, seed=0))
    assert not torch.equal(idx, low_shot_indices(labels, 5, seed=1))
    split = low_shot_split(labels, 5, seed=0, num_classes=5)
    assert torch.equal(split.indices, idx)
    assert split.short_classes == {2: 3, 4: 0} and split.per_class == {0: 5, 1: 5, 2: 3, 3: 5, 4: 0}
    assert torch.bincount(labels[low_shot_indices(labels, 1, seed=3)]).tolist() == [1, 1, 1, 1]
    with pytest.raises(ValueError):
        low_shot_indices(labels, 0, seed=0)


def test_summarize():
    s = summarize([70.0, 72.0, 74.0])
    assert s["mean"] == pytest.approx(72.0) and s["std"] == pytest.approx(2.0) and s["runs"] == 3
    assert summarize([5.0])["std"] == 0.0
