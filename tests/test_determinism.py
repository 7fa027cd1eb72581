"""Reproducible pretraining (train/determinism.py): the switch sets the torch flags and restores
them, and the same short pretraining run twice gives bit-identical weights, also with loader
workers on real shards."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
import torch

from vjepa_pipeline.config import ConfigError, load_config
from vjepa_pipeline.train.determinism import TorchSettings, pinned
from vjepa_pipeline.train.pretrain import pretrain

ROOT = Path(__file__).resolve().parents[1]
DEBUG = ROOT / "configs" / "pretrain" / "debug.yaml"


def cfg_for(run_dir, *overrides):
    return load_config(DEBUG, [f"train.run_dir={run_dir}", "train.max_steps=4", "train.checkpoint_every_steps=4",
                               *overrides])


def test_the_switch_sets_the_torch_flags_and_restores_them(tmp_path):
    before = TorchSettings.current()
    env_before = os.environ.get("PL_SEED_WORKERS")
    threads = 1 if before.num_threads != 1 else 2
    cfg = cfg_for(tmp_path, "train.deterministic=true", f"train.num_threads={threads}")
    with pinned(cfg.train) as now:
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert torch.get_num_threads() == threads
        assert os.environ["PL_SEED_WORKERS"] == "1"  # Lightning seeds every DataLoader worker
        if torch.cuda.is_available():
            assert os.environ["CUBLAS_WORKSPACE_CONFIG"]
        assert now == TorchSettings.current()
    assert TorchSettings.current() == before
    assert os.environ.get("PL_SEED_WORKERS") == env_before


def test_off_leaves_everything_as_it_is(tmp_path):
    before = TorchSettings.current()
    with pinned(cfg_for(tmp_path, "train.deterministic=false").train) as now:
        assert now == before


def test_bad_thread_count_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="train.num_threads: must be > 0"):
        cfg_for(tmp_path, "train.num_threads=0")


class RecordSettings(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen = TorchSettings.current()


def test_pretrain_runs_under_the_switch(tmp_path):
    before = TorchSettings.current()
    probe = RecordSettings()
    pretrain(cfg_for(tmp_path, "train.deterministic=true", "train.num_threads=1", "train.max_steps=2"),
             extra_callbacks=[probe], progress=False)
    assert probe.seen.deterministic_algorithms and probe.seen.num_threads == 1
    assert TorchSettings.current() == before


def weights(run: Path) -> dict[str, torch.Tensor]:
    last = (run / "last").read_text().strip()
    ckpt = torch.load(run / "checkpoints" / last / "model.ckpt", weights_only=True)
    out = dict(ckpt["state_dict"])
    out.update({f"target_encoder.{k}": v for k, v in ckpt["target_encoder"].items()})
    return out


def assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


def test_the_same_pretraining_twice_gives_bit_identical_weights(tmp_path):
    for name in ("a", "b"):
        pretrain(cfg_for(tmp_path / name, "train.deterministic=true"), progress=False)
    a, b = weights(tmp_path / "a/debug"), weights(tmp_path / "b/debug")
    assert_bit_identical(a, b)
    pretrain(cfg_for(tmp_path / "c", "train.deterministic=true", "train.seed=1"), progress=False)
    # another seed gives other weights: the comparison above can fail
    assert any(not torch.equal(v, weights(tmp_path / "c/debug")[k]) for k, v in a.items())


@pytest.mark.slow
def test_bit_identical_with_two_loader_workers_on_shards(tmp_path, generated_clips):
    from vjepa_pipeline.config.schema import ShardsConfig
    from vjepa_pipeline.shards.build import ShardBuilder

    shards = tmp_path / "shards"
    ShardBuilder(generated_clips, shards, ShardsConfig(short_side=64, samples_per_shard=1),
                 log=lambda *a: None).run(progress=False)
    data = ["data.source=shards", f"data.path={shards}", "data.num_workers=2", "data.frame_step=2",
            "data.batches_per_epoch=3", "data.shuffle_buffer=4", "train.deterministic=true", "train.max_steps=4"]
    for name in ("a", "b"):
        pretrain(cfg_for(tmp_path / name, *data), progress=False)
    assert_bit_identical(weights(tmp_path / "a/debug"), weights(tmp_path / "b/debug"))
