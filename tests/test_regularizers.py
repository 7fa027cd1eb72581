"""Collapse regularisers (objectives/regularizers.py): SIGReg and the VICReg variance / covariance
terms against hand-computed values and known properties; their config keys; and short trainings
that log each term in metrics.jsonl, including training without an EMA target."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vjepa_pipeline.config import ConfigError, load_config
from vjepa_pipeline.objectives.regularizers import (SIGREG_KNOTS, SIGREG_T_MAX, RegularizerWeights, epps_pulley,
                                                    random_directions, regularization, sigreg,
                                                    sigreg_null_expectation, vicreg_covariance, vicreg_variance)
from vjepa_pipeline.train.pretrain import pretrain

ROOT = Path(__file__).resolve().parents[1]
DEBUG = ROOT / "configs" / "pretrain" / "debug.yaml"


def trapezoid_weights() -> tuple[list[float], list[float]]:
    """The quadrature written out by hand: knots on [0, 3], doubled trapezoid weights x exp(-t^2/2)."""
    k = SIGREG_KNOTS
    dt = SIGREG_T_MAX / (k - 1)
    ts = [i * dt for i in range(k)]
    ws = [(dt if i in (0, k - 1) else 2 * dt) * math.exp(-t * t / 2) for i, t in enumerate(ts)]
    return ts, ws


# ----------------------------------------------------------------------------- SIGReg math
def test_epps_pulley_matches_hand_computed_values():
    ts, ws = trapezoid_weights()
    # A constant sample at 0: ECF = 1 everywhere, so |ECF - phi|^2 = (1 - phi)^2.
    n = 5
    expected = n * sum(w * (1 - math.exp(-t * t / 2)) ** 2 for t, w in zip(ts, ws))
    assert float(epps_pulley(torch.zeros(n, 1))) == pytest.approx(expected, rel=1e-5)
    # The symmetric pair {a, -a}: ECF(t) = cos(t a) (the sine parts cancel).
    a = 0.7
    expected = 2 * sum(w * (math.cos(t * a) - math.exp(-t * t / 2)) ** 2 for t, w in zip(ts, ws))
    assert float(epps_pulley(torch.tensor([[a], [-a]]))) == pytest.approx(expected, rel=1e-5)
    # A shifted pair {a, a}: ECF(t) = cos(t a) + i sin(t a).
    expected = 2 * sum(w * ((math.cos(t * a) - math.exp(-t * t / 2)) ** 2 + math.sin(t * a) ** 2)
                       for t, w in zip(ts, ws))
    assert float(epps_pulley(torch.tensor([[a], [a]]))) == pytest.approx(expected, rel=1e-5)


def test_null_expectation_is_the_closed_form_and_matches_gaussian_samples():
    ts, ws = trapezoid_weights()
    assert sigreg_null_expectation() == pytest.approx(sum(w * (1 - math.exp(-t * t)) for t, w in zip(ts, ws)))
    # ... which approximates the integral of (1 - exp(-t^2)) exp(-t^2/2) over [-3, 3]
    t = np.linspace(-3, 3, 20001)
    assert sigreg_null_expectation() == pytest.approx(np.trapezoid((1 - np.exp(-t**2)) * np.exp(-t**2 / 2), t),
                                                      rel=2e-3)
    # The mean statistic of standard-normal samples is that value, whatever the batch size.
    gen = torch.Generator().manual_seed(0)
    for n in (16, 512):
        stats = torch.cat([epps_pulley(torch.randn(n, 50, generator=gen)) for _ in range(40)])
        assert float(stats.mean()) == pytest.approx(sigreg_null_expectation(), rel=0.06)


def test_sigreg_is_small_for_gaussians_and_large_for_collapsed_or_low_rank_embeddings():
    gen = torch.Generator().manual_seed(1)
    n, d = 4096, 32
    gaussian = float(sigreg(torch.randn(n, d, generator=gen), seed=3))
    constant = float(sigreg(torch.full((n, d), 0.3), seed=3))
    rank_one = float(sigreg(torch.randn(n, 1, generator=gen) * torch.randn(1, d, generator=gen), seed=3))
    shrunk = float(sigreg(0.1 * torch.randn(n, d, generator=gen), seed=3))  # right shape, wrong scale
    assert gaussian < 2 * sigreg_null_expectation()
    assert gaussian / n < 1e-3  # the per-sample discrepancy vanishes for large N
    for collapsed in (constant, rank_one, shrunk):
        assert collapsed > 100 * gaussian
    # A collapsed batch scores in proportion to N; a Gaussian one does not grow.
    assert float(sigreg(torch.zeros(2 * n, d), seed=3)) == pytest.approx(2 * float(sigreg(torch.zeros(n, d), seed=3)))


def test_sigreg_directions_are_unit_and_deterministic_by_seed():
    a = random_directions(16, 8, seed=7)
    assert a.shape == (16, 8)
    torch.testing.assert_close(a.norm(dim=0), torch.ones(8))
    assert torch.equal(a, random_directions(16, 8, seed=7))
    assert not torch.equal(a, random_directions(16, 8, seed=8))
    z = torch.randn(32, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sigreg(z, seed=5), sigreg(z, seed=5))
    assert not torch.equal(sigreg(z, seed=5), sigreg(z, seed=6))


# ----------------------------------------------------------------------------- VICReg math
def test_vicreg_variance_hand_values_and_zero_above_gamma():
    z = torch.tensor([[0.0, 0.0], [1.0, 2.0]])  # unbiased variances 0.5 and 2
    expected = (max(0.0, 1 - math.sqrt(0.5 + 1e-4)) + max(0.0, 1 - math.sqrt(2 + 1e-4))) / 2
    assert float(vicreg_variance(z)) == pytest.approx(expected, rel=1e-6)
    wide = 3 * torch.randn(256, 8, generator=torch.Generator().manual_seed(0))
    assert float(vicreg_variance(wide)) == 0.0
    assert float(vicreg_variance(torch.ones(10, 4))) == pytest.approx(1 - math.sqrt(1e-4))  # collapsed: ~gamma


def test_vicreg_covariance_hand_values():
    correlated = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])  # covariance [[2, 2], [2, 2]]
    assert float(vicreg_covariance(correlated)) == pytest.approx((2**2 + 2**2) / 2)
    decorrelated = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    assert float(vicreg_covariance(decorrelated)) == 0.0


def test_too_few_embeddings_or_wrong_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="at least 2"):
        vicreg_variance(torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        sigreg(torch.zeros(4), seed=0)


# ----------------------------------------------------------------------------- combined
def test_regularization_weighs_the_active_terms_and_gradients_flow():
    gen = torch.Generator().manual_seed(0)
    views = [torch.randn(8, 6, generator=gen).requires_grad_(True) for _ in range(2)]
    w = RegularizerWeights(sigreg=0.5, vicreg_variance=2.0, vicreg_covariance=0.0, sigreg_slices=16)
    total, terms = regularization(views, w, seed=11)
    assert set(terms) == {"loss_sigreg", "loss_vicreg_var"}  # covariance is off: not computed nor logged
    by_hand = (0.5 * (sigreg(views[0], 11, 16) + sigreg(views[1], 11, 16)) / 2
               + 2.0 * (vicreg_variance(views[0]) + vicreg_variance(views[1])) / 2)
    assert float(total.detach()) == pytest.approx(float(by_hand.detach()), rel=1e-6)
    assert terms["loss_sigreg"] == pytest.approx(float((sigreg(views[0], 11, 16) + sigreg(views[1], 11, 16)).detach()) / 2)
    total.backward()
    for v in views:
        assert v.grad is not None and torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0
    for fn in (lambda z: sigreg(z, 0, 16), vicreg_covariance):
        z = torch.randn(8, 6, generator=gen).requires_grad_(True)
        fn(z).backward()
        assert z.grad.abs().sum() > 0


def _sigreg_rank_worker(rank: int, init_file: str, out: str):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    z = torch.load(Path(out, "z.pt"))
    part = z[:5] if rank == 0 else z[5:]  # unequal shares: the global count must be summed, not assumed
    part = part.clone().requires_grad_(True)
    value = sigreg(part, seed=3, num_slices=16, distributed=True)
    value.backward()
    local = sigreg(part.detach(), seed=3, num_slices=16)  # distributed=False: this rank's rows alone
    torch.save({"value": value.detach(), "grad": part.grad, "local": local}, Path(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_sigreg_under_data_parallelism_is_the_global_batch_statistic(tmp_path):
    # 2 gloo ranks with 5 and 7 rows equal one process with all 12: the value on every rank, and
    # each row's gradient (DDP then averages parameter gradients over ranks, so the autograd
    # all-reduce's sum of the ranks' identical losses is scaled back to one loss).
    import torch.multiprocessing as mp

    z = torch.randn(12, 8, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.2
    torch.save(z, tmp_path / "z.pt")
    mp.start_processes(_sigreg_rank_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2,
                       start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    full = z.clone().requires_grad_(True)
    expected = sigreg(full, seed=3, num_slices=16)
    expected.backward()
    for r in ranks:
        assert torch.allclose(r["value"], expected.detach(), rtol=1e-5, atol=1e-6)
    grads = torch.cat([ranks[0]["grad"], ranks[1]["grad"]]) / 2  # DDP's average over the 2 ranks
    assert torch.allclose(grads, full.grad, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(ranks[0]["local"], expected.detach(), rtol=1e-3)  # per rank differs


def _vicreg_rank_worker(rank: int, init_file: str, out: str):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    z = torch.load(Path(out, "z.pt"))
    part = (z[:1] if rank == 0 else z[1:]).clone().requires_grad_(True)  # one row alone has no variance
    var, cov = vicreg_variance(part, distributed=True), vicreg_covariance(part, distributed=True)
    (var + 0.5 * cov).backward()
    local = vicreg_covariance(part.detach()) if len(part) > 1 else None  # this rank's rows alone
    torch.save({"var": var.detach(), "cov": cov.detach(), "grad": part.grad, "local": local},
               Path(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_vicreg_terms_under_data_parallelism_are_the_global_batch_statistics(tmp_path):
    # 2 gloo ranks with 1 and 9 rows equal one process with all 10, as the official VICReg's gathered
    # embeddings: the values on every rank and each row's gradient after DDP's average over ranks.
    import torch.multiprocessing as mp

    z = torch.randn(10, 6, generator=torch.Generator().manual_seed(1)) * 0.4 + 0.3
    z[:, 1] = z[:, 0] * 0.8 + 0.1 * z[:, 1]  # correlated dimensions: a covariance term to reproduce
    torch.save(z, tmp_path / "z.pt")
    mp.start_processes(_vicreg_rank_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2,
                       start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    full = z.clone().requires_grad_(True)
    var, cov = vicreg_variance(full), vicreg_covariance(full)
    (var + 0.5 * cov).backward()
    for r in ranks:
        assert torch.allclose(r["var"], var.detach(), rtol=1e-5, atol=1e-7)
        assert torch.allclose(r["cov"], cov.detach(), rtol=1e-5, atol=1e-7)
    grads = torch.cat([ranks[0]["grad"], ranks[1]["grad"]]) / 2  # DDP's average over the 2 ranks
    assert torch.allclose(grads, full.grad, rtol=1e-4, atol=1e-7)
    assert not torch.allclose(ranks[1]["local"], cov.detach(), rtol=1e-3)  # per rank differs


def test_sigreg_gradient_takes_a_shrunken_batch_to_unit_spread():
    z = (0.05 * torch.randn(64, 8, generator=torch.Generator().manual_seed(0))).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=0.05)
    first = float(sigreg(z.detach(), seed=0, num_slices=64))
    for step in range(40):
        opt.zero_grad()
        sigreg(z, seed=step, num_slices=64).backward()
        opt.step()
    std = z.detach().std(dim=0)
    assert ((std > 0.7) & (std < 1.3)).all(), std  # every dimension near the N(0, 1) target
    assert float(sigreg(z.detach(), seed=99, num_slices=64)) < first / 10


# ----------------------------------------------------------------------------- config
def cfg_for(tmp_path, *overrides):
    return load_config(DEBUG, [f"train.run_dir={tmp_path}", "train.max_steps=5", "train.checkpoint_every_steps=5",
                               "logging.log_every_steps=1", *overrides])


@pytest.mark.parametrize("overrides, message", [
    (["objective.regularize=encoder"], "objective.regularize: must be one of"),
    (["objective.sigreg_weight=-1"], "objective.sigreg_weight: must be >= 0"),
    (["objective.sigreg_slices=0"], "objective.sigreg_slices: must be > 0"),
    (["optim.ema_schedule=none"], "optim.ema_schedule: none (target = the online encoder) collapses"),
    (["optim.ema_schedule=none", "objective.vicreg_covariance_weight=1"], "collapses without a regulariser"),
    (["objective.vicreg_variance_weight=1", "data.batch_size=1"], "data.batch_size must be >= 2"),
    (["objective.regularize_unit=patch"], "objective.regularize_unit: must be one of"),
])
def test_bad_settings_are_one_line_errors(tmp_path, overrides, message):
    with pytest.raises(ConfigError) as err:
        cfg_for(tmp_path, *overrides)
    lines = [line for line in str(err.value).splitlines() if message in line]
    assert len(lines) == 1, str(err.value)


def test_per_token_regularisation_is_for_the_vjepa_objective_and_needs_no_second_clip(tmp_path):
    with pytest.raises(ConfigError, match="objective.regularize_unit: token applies to the V-JEPA objective"):
        load_config(ROOT / "configs/world_model/moving_square_cpu.yaml", ["objective.regularize_unit=token"])
    # tokens of one clip are many samples: a batch of one is fine per token, refused per clip
    cfg_for(tmp_path, "objective.vicreg_variance_weight=1", "data.batch_size=1", "objective.regularize_unit=token")


def test_published_recipes_keep_the_regularisers_off():
    for path in sorted((ROOT / "configs" / "pretrain").glob("*.yaml")):
        cfg = load_config(path)
        ob = cfg.objective
        assert (ob.sigreg_weight, ob.vicreg_variance_weight, ob.vicreg_covariance_weight) == (0, 0, 0), path.name
        assert cfg.optim.ema_schedule != "none", path.name


# ----------------------------------------------------------------------------- training
def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("overrides, logged", [
    (["objective.sigreg_weight=0.05"], {"loss_sigreg"}),
    (["objective.vicreg_variance_weight=1.0", "objective.vicreg_covariance_weight=0.04", "objective.regularize=both"],
     {"loss_vicreg_var", "loss_vicreg_cov"}),
    (["objective.sigreg_weight=0.05", "objective.regularize=predictor", "optim.ema_schedule=none"], {"loss_sigreg"}),
    (["objective.vicreg_variance_weight=1.0", "objective.regularize_unit=token"], {"loss_vicreg_var"}),
])
def test_five_training_steps_log_each_term(tmp_path, overrides, logged):
    pretrain(cfg_for(tmp_path, *overrides), progress=False)
    rows = metrics(tmp_path / "debug")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    terms = {"loss_sigreg", "loss_vicreg_var", "loss_vicreg_cov"}
    for r in rows:
        assert {k for k in terms if k in r} == logged
        assert all(math.isfinite(r[k]) for k in logged)
        assert r["loss"] > r["loss_pred"]  # the total includes the weighted regulariser
    assert "collapse/pooled_rankme" in rows[0]
    ckpt = torch.load(tmp_path / "debug/checkpoints/step_0000000005/model.ckpt", weights_only=True)
    encoder = {k.removeprefix("encoder."): v for k, v in ckpt["state_dict"].items() if k.startswith("encoder.")}
    same = all(torch.equal(v, encoder[k]) for k, v in ckpt["target_encoder"].items())
    if "optim.ema_schedule=none" in overrides:  # no EMA: the stored target is the online encoder
        assert same and all(r["ema"] == 0.0 for r in rows)
        from vjepa_pipeline.checkpoint.export import export
        from vjepa_pipeline.checkpoint.interop import read_checkpoint

        export(tmp_path / "debug", tmp_path / "all.pt", what="all")  # exports keep working
        exported = read_checkpoint(tmp_path / "all.pt")
        assert all(torch.equal(v, exported["encoder"][k]) for k, v in exported["target_encoder"].items())
    else:
        assert not same


def test_without_regularisers_the_step_is_unchanged(tmp_path):
    """Weights 0: no extra terms in the metrics; the forward also hands over the context-encoder outputs
    the regularisers read (one per mask pair, the context's token count)."""
    from vjepa_pipeline.data.synthetic import SyntheticClips, synthetic_batch
    from vjepa_pipeline.models.inputs import normalize_clips
    from vjepa_pipeline.objectives import build_objective

    cfg = cfg_for(tmp_path)
    objective = build_objective(cfg)
    batch = synthetic_batch(SyntheticClips(8, 32, seed=0), 0, 4)
    out = objective.step(batch)
    assert not {"loss_pred", "loss_sigreg", "loss_vicreg_var", "loss_vicreg_cov"} & set(out.terms)
    clips, masks = normalize_clips(batch.clips), objective.masks.sample(4, 0)
    plain = objective.model(clips, masks)
    assert [z.shape[1] for z in plain.contexts] == [c.shape[1] for c, _ in masks]
    assert all(z.requires_grad for z in plain.contexts)


@pytest.mark.parametrize("unit, where", [("clip", "context"), ("token", "context"), ("token", "both")])
def test_the_regularised_samples_are_clips_or_tokens(tmp_path, unit, where):
    """regularize_unit: clip regularises one mean-pooled embedding per clip and view, token every token
    of every clip (batch x tokens rows): the logged terms equal regularization() on exactly those rows."""
    from vjepa_pipeline.data.synthetic import SyntheticClips, synthetic_batch
    from vjepa_pipeline.models.inputs import normalize_clips
    from vjepa_pipeline.objectives import build_objective
    from vjepa_pipeline.objectives.vjepa import SIGREG_STREAM
    from vjepa_pipeline.utils.seeds import mix_seed

    cfg = cfg_for(tmp_path, "objective.sigreg_weight=0.05", "objective.vicreg_variance_weight=1.0",
                  "objective.vicreg_covariance_weight=0.04", f"objective.regularize_unit={unit}",
                  f"objective.regularize={where}")
    objective = build_objective(cfg)
    batch = synthetic_batch(SyntheticClips(8, 32, seed=0), 0, 4)
    with torch.no_grad():
        terms = objective.step(batch).terms
        plain = objective.model(normalize_clips(batch.clips), objective.masks.sample(4, batch.stream.step))
    outputs = list(plain.contexts) + (list(plain.predictions) if where == "both" else [])
    views = [z.flatten(0, 1) if unit == "token" else z.mean(dim=1) for z in outputs]
    assert views[0].shape[0] == (4 * plain.contexts[0].shape[1] if unit == "token" else 4)
    _, expected = regularization(views, objective.regularizers,
                                 seed=mix_seed(cfg.train.seed, SIGREG_STREAM, batch.stream.step))
    for key in ("loss_sigreg", "loss_vicreg_var", "loss_vicreg_cov"):
        assert terms[key] == pytest.approx(expected[key], rel=1e-5), key
