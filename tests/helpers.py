"""Small helpers shared by several test modules (imported as ``from helpers import ...``)."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn as nn


@torch.no_grad()
def perturb_(module: nn.Module, seed: int, scale: float = 0.05) -> nn.Module:
    """Move every parameter (norms, biases, mask tokens included) so that a swapped or missed tensor
    shows in a comparison."""
    gen = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(torch.randn(p.shape, generator=gen) * scale)
    return module


class StopAt(L.Callback):
    """Simulates a job killed right after the checkpoint of step ``step``."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def run_cli(*args: str) -> tuple[int, str, str]:
    """``vjepa <args>`` in-process: (exit code, stdout, stderr)."""
    import contextlib
    import io

    from vjepa_pipeline.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def two_rooms_shards(root, episodes: int, steps: int):
    """``vjepa data collect --env two_rooms`` into ``root/episodes`` and one-sample trajectory shards in
    ``root/shards`` (returned); asserts both commands succeed."""
    code, out, err = run_cli("data", "collect", "--env", "two_rooms", "--out", str(root / "episodes"),
                             "--episodes", str(episodes), "--steps", str(steps))
    assert code == 0, err
    assert f"{episodes} episodes written" in out
    code, _, err = run_cli("shards", "build", str(root / "episodes"), str(root / "shards"), "--samples-per-shard",
                           "1", "--no-progress")
    assert code == 0, err
    return root / "shards"
