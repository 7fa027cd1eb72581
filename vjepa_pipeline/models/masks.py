"""V-JEPA 3D multi-block masks (the official "multiblock3d" semantics, pure PyTorch).

A clip of ``num_frames x height x width`` pixels becomes a token grid ``(T, H, W)`` with
``T = num_frames // tubelet_size``, ``H = height // patch_size``, ``W = width // patch_size``,
flattened row-major: ``index = t*H*W + h*W + w``.

One mask spec (the config's :class:`~vjepa_pipeline.config.schema.MaskBlockConfig`) drives one
:class:`MultiBlockMaskGenerator`:

* The block size ``(t, h, w)`` is drawn **once per batch**:
  ``t = max(1, int(T * temporal_draw))``, ``n = int(H*W * spatial_draw)``,
  ``aspect = uniform(aspect_ratio)``, ``h = round(sqrt(n * aspect))``,
  ``w = round(sqrt(n / aspect))``, clamped to ``[1, H]`` / ``[1, W]`` (``t`` to ``[1, T]``).
* Per sample, ``num_blocks`` boxes of that size are placed uniformly at random (each fits in the
  grid) and their union is removed from the context. If ``max_temporal_keep < 1`` the time steps
  ``>= max(1, int(T * max_temporal_keep))`` are removed from the context too.
* Context = tokens still kept; target = every removed token (the block union plus, as in the
  official code, any time steps dropped by ``max_temporal_keep``). Before truncation the two are
  complementary.
* A sample whose context is empty is redrawn (positions only, the batch's block size is kept), at
  most ``max_redraws`` times; a spec whose block can cover the whole grid (so the redraw could
  never succeed) is rejected with :class:`EmptyContextError` (a ``ValueError``) at construction.
* Rows are truncated to the batch minimum (context also to ``max_keep``) keeping the smallest
  indices, as the official collator does, so they stack to ``(B, n_ctx)`` / ``(B, n_tgt)``
  ``int64`` tensors, sorted ascending within each row.

Randomness never touches the global RNG: every draw uses an explicit ``torch.Generator``.
:class:`MaskCollator` seeds one generator per (seed, rank, step, spec index) with a fixed integer
hash, so the same ``(seed, rank, step)`` gives the same masks on every machine and every number of
dataloader workers.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import torch

from ..config.schema import MaskBlockConfig
from ..config.validate import mask_block_problems
from ..utils.seeds import mix_seed

__all__ = [
    "EmptyContextError",
    "MultiBlockMaskGenerator",
    "MaskCollator",
    "grid_for",
    "mask_statistics",
    "specs_from_config",
]

Grid = tuple[int, int, int]


class EmptyContextError(ValueError):
    """A mask spec leaves (or would always leave) a sample without any context token."""


def grid_for(
    num_frames: int,
    crop_size: int | Sequence[int],
    patch_size: int,
    tubelet_size: int,
    height: int | None = None,
) -> Grid:
    """Token grid ``(T, H, W)`` of a clip.

    ``crop_size`` is the width (and the height unless ``height`` is given); it may also be a
    ``(height, width)`` pair. Example: ``grid_for(16, 224, 16, 2) == (8, 14, 14)``.
    """
    if isinstance(crop_size, (tuple, list)):
        if height is not None:
            raise ValueError("give either crop_size=(height, width) or height=, not both")
        height, width = int(crop_size[0]), int(crop_size[1])
    else:
        width = int(crop_size)
        height = width if height is None else int(height)
    grid = (int(num_frames) // int(tubelet_size), height // int(patch_size), width // int(patch_size))
    if min(grid) < 1:
        raise ValueError(
            f"empty token grid {grid} for num_frames={num_frames}, size={height}x{width}, "
            f"patch_size={patch_size}, tubelet_size={tubelet_size}"
        )
    return grid


def specs_from_config(mask_cfgs: Any) -> list[MaskBlockConfig]:
    """Validated :class:`MaskBlockConfig` values from config objects (duck-typed) or mappings.

    Accepts one object or a sequence of them; each needs ``num_blocks`` and ``spatial_scale``
    and may have ``temporal_scale``, ``aspect_ratio``, ``max_temporal_keep``, ``max_keep``
    (attributes or dict keys). Sequences become float tuples. Raises ``ValueError`` naming every
    broken rule (the rules of :func:`~vjepa_pipeline.config.validate.mask_block_problems`).
    """
    if isinstance(mask_cfgs, dict) or hasattr(mask_cfgs, "num_blocks"):
        mask_cfgs = [mask_cfgs]
    specs: list[MaskBlockConfig] = []
    for cfg in mask_cfgs:
        get = cfg.get if isinstance(cfg, dict) else (lambda name, default=None, c=cfg: getattr(c, name, default))
        missing = [n for n in ("num_blocks", "spatial_scale") if get(n) is None]
        if missing:
            raise ValueError(f"mask config {cfg!r} lacks required field(s) {missing}")
        kwargs: dict[str, Any] = {"num_blocks": int(get("num_blocks"))}
        for name in ("spatial_scale", "temporal_scale", "aspect_ratio"):
            value = get(name)
            if value is not None:
                value = tuple(float(v) for v in value)
                if len(value) != 2:
                    raise ValueError(f"mask.{name} must be a (low, high) pair, got {list(value)}")
                kwargs[name] = value
        if get("max_temporal_keep") is not None:
            kwargs["max_temporal_keep"] = float(get("max_temporal_keep"))
        if get("max_keep") is not None:
            kwargs["max_keep"] = int(get("max_keep"))
        spec = MaskBlockConfig(**kwargs)
        problems = mask_block_problems(spec)
        if problems:
            raise ValueError("; ".join(problems))
        specs.append(spec)
    return specs


def _block_hw(n: int, aspect: float, H: int, W: int) -> tuple[int, int]:
    h = int(round(math.sqrt(n * aspect)))
    w = int(round(math.sqrt(n / aspect)))
    return max(1, min(h, H)), max(1, min(w, W))


def _max_draw_int(total: int, lo: float, hi: float) -> int:
    """Largest value of ``int(total * u)`` for ``u = lo + rand * (hi - lo)``, rand in [0, 1)."""
    if lo == hi:
        return int(total * hi)
    return max(int(total * lo), math.ceil(total * hi) - 1)


class MultiBlockMaskGenerator:
    """Samples V-JEPA multi-block 3D masks for one :class:`~vjepa_pipeline.config.schema.MaskBlockConfig` on a ``(T, H, W)`` grid.

    ``gen(batch_size, generator)`` returns ``(context_idx, target_idx)``: ``int64`` tensors of
    shape ``(B, n_ctx)`` and ``(B, n_tgt)`` with flat token indices, sorted per row, disjoint.
    ``gen.sample_masks(batch_size, generator)`` returns the untruncated boolean masks
    ``(B, T, H, W)`` (``True`` = removed from the context, i.e. target).
    """

    def __init__(self, spec: MaskBlockConfig, grid: Sequence[int], max_redraws: int = 100) -> None:
        (spec,) = specs_from_config([spec])  # validated, with float tuples
        T, H, W = (int(g) for g in grid)
        if min(T, H, W) < 1:
            raise ValueError(f"grid must be positive (T, H, W), got {tuple(grid)}")
        self.spec = spec
        self.grid: Grid = (T, H, W)
        self.num_tokens = T * H * W
        self.max_redraws = int(max_redraws)
        self.context_duration = max(1, int(T * spec.max_temporal_keep))
        if self._can_cover_grid():
            raise EmptyContextError(
                f"mask spec {spec} can draw a block covering the whole {self.grid} token grid; "
                "such a batch would have an empty context for every placement and the redraw "
                "could never succeed. Lower spatial_scale/temporal_scale or widen aspect_ratio."
            )

    # -- block size ---------------------------------------------------------------------------
    def _can_cover_grid(self) -> bool:
        """Whether some block size this spec can draw equals the full grid."""
        T, H, W = self.grid
        s = self.spec
        if max(1, min(T, _max_draw_int(T, *s.temporal_scale))) < T:
            return False
        n = _max_draw_int(H * W, *s.spatial_scale)  # h and w both grow with n
        lo, hi = s.aspect_ratio
        candidates = [lo + (hi - lo) * i / 4096 for i in range(4097)]
        for crit in ((H - 0.5) ** 2 / max(n, 1), n / (W - 0.5) ** 2):  # rounding thresholds
            for c in (crit * (1 - 1e-9), crit, crit * (1 + 1e-9)):
                if lo <= c <= hi:
                    candidates.append(c)
        return any(_block_hw(n, a, H, W) == (H, W) for a in candidates)

    def sample_block_size(self, generator: torch.Generator) -> tuple[int, int, int]:
        """Draw the batch's block size ``(t, h, w)`` (three uniform draws, as the official code)."""
        T, H, W = self.grid
        s = self.spec
        r = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
        t_scale = s.temporal_scale[0] + r[0] * (s.temporal_scale[1] - s.temporal_scale[0])
        t = max(1, min(T, int(T * t_scale)))
        sp_scale = s.spatial_scale[0] + r[1] * (s.spatial_scale[1] - s.spatial_scale[0])
        n = int(H * W * sp_scale)
        aspect = s.aspect_ratio[0] + r[2] * (s.aspect_ratio[1] - s.aspect_ratio[0])
        h, w = _block_hw(n, aspect, H, W)
        return t, h, w

    # -- masks --------------------------------------------------------------------------------
    def _place_blocks(
        self, num_samples: int, block: tuple[int, int, int], generator: torch.Generator
    ) -> torch.Tensor:
        """Boolean ``(num_samples, T, H, W)``: union of ``num_blocks`` random boxes per sample."""
        T, H, W = self.grid
        t, h, w = block
        nb = self.spec.num_blocks
        shape = (num_samples, nb, 1)
        start = torch.randint(0, T - t + 1, shape, generator=generator)
        top = torch.randint(0, H - h + 1, shape, generator=generator)
        left = torch.randint(0, W - w + 1, shape, generator=generator)
        tt = torch.arange(T)
        hh = torch.arange(H)
        ww = torch.arange(W)
        in_t = (tt >= start) & (tt < start + t)  # (B, nb, T)
        in_h = (hh >= top) & (hh < top + h)  # (B, nb, H)
        in_w = (ww >= left) & (ww < left + w)  # (B, nb, W)
        boxes = in_t[:, :, :, None, None] & in_h[:, :, None, :, None] & in_w[:, :, None, None, :]
        masked = boxes.any(dim=1)
        if self.context_duration < T:
            masked[:, self.context_duration :] = True
        return masked

    def sample_masks(
        self,
        batch_size: int,
        generator: torch.Generator,
        block: tuple[int, int, int] | None = None,
    ) -> torch.Tensor:
        """Untruncated masks ``(B, T, H, W)``, ``True`` = target (removed from the context).

        Draws the batch's block size (unless ``block`` is given), places the blocks, and redraws
        samples with an empty context (up to ``max_redraws`` rounds).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if block is None:
            block = self.sample_block_size(generator)
        masked = self._place_blocks(batch_size, block, generator)
        for _ in range(self.max_redraws):
            empty = masked.flatten(1).all(dim=1)
            if not bool(empty.any()):
                return masked
            rows = empty.nonzero().squeeze(1)
            masked[rows] = self._place_blocks(rows.numel(), block, generator)
        if bool(masked.flatten(1).all(dim=1).any()):
            raise EmptyContextError(
                f"mask spec {self.spec} on grid {self.grid} left an empty context after "
                f"{self.max_redraws} redraws (block size {block})"
            )
        return masked

    @staticmethod
    def _first_k_true(mask: torch.Tensor, k: int) -> torch.Tensor:
        """Flat indices of the first ``k`` True entries of each row of ``mask`` (B, N)."""
        keep = mask & (mask.cumsum(dim=1) <= k)
        return keep.nonzero()[:, 1].reshape(mask.shape[0], k)

    def __call__(
        self, batch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(context_idx (B, n_ctx), target_idx (B, n_tgt))`` as sorted ``int64``."""
        masked = self.sample_masks(batch_size, generator).flatten(1)
        context = ~masked
        n_ctx = int(context.sum(dim=1).min())
        if self.spec.max_keep is not None:
            n_ctx = min(n_ctx, self.spec.max_keep)
        n_tgt = int(masked.sum(dim=1).min())
        return self._first_k_true(context, n_ctx), self._first_k_true(masked, n_tgt)

    def __repr__(self) -> str:
        return f"MultiBlockMaskGenerator(spec={self.spec}, grid={self.grid})"


# ----------------------------------------------------------------------------- collator


class MaskCollator:
    """Holds one :class:`MultiBlockMaskGenerator` per spec and samples all of them per batch.

    ``sample(batch_size, step)`` is a pure function of ``(seed, rank, step)``: generator ``i``
    uses a ``torch.Generator`` seeded with ``mix_seed(seed, rank, step, i)``.

    Used as a ``DataLoader`` ``collate_fn`` it returns
    ``(default_collate(batch), [ctx_idx per spec], [tgt_idx per spec])`` (the official layout).
    The step of the k-th batch it collates is ``start_step + k`` in the main process, and
    ``start_step + k * num_workers + worker_id`` inside dataloader worker ``worker_id``; with the
    DataLoader's in-order round-robin over workers this equals the global batch index, so masks
    do not depend on the number of workers. On resume (or at the start of an epoch without
    persistent workers) call :meth:`set_step` *before* creating the loader iterator.
    """

    def __init__(
        self,
        specs: Sequence[MaskBlockConfig] | Iterable[Any],
        grid: Sequence[int],
        seed: int = 0,
        rank: int = 0,
        max_redraws: int = 100,
    ) -> None:
        self.specs = specs_from_config(list(specs))
        if not self.specs:
            raise ValueError("MaskCollator needs at least one mask spec")
        self.grid: Grid = tuple(int(g) for g in grid)  # type: ignore[assignment]
        self.generators = [
            MultiBlockMaskGenerator(s, self.grid, max_redraws=max_redraws) for s in self.specs
        ]
        self.seed = int(seed)
        self.rank = int(rank)
        self.start_step = 0
        self._calls = 0

    def generator_for(self, step: int, index: int) -> torch.Generator:
        g = torch.Generator(device="cpu")
        g.manual_seed(mix_seed(self.seed, self.rank, int(step), int(index)))
        return g

    def sample(self, batch_size: int, step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One ``(context_idx, target_idx)`` pair per spec; deterministic in (seed, rank, step)."""
        return [
            gen(batch_size, self.generator_for(step, i)) for i, gen in enumerate(self.generators)
        ]

    # -- collate_fn use -------------------------------------------------------------------------
    def set_step(self, step: int) -> None:
        """Make the next collated batch use ``step`` (resets the internal counter)."""
        self.start_step = int(step)
        self._calls = 0

    def next_step(self) -> int:
        """Step the next ``__call__`` will use (and advance the counter)."""
        info = torch.utils.data.get_worker_info()
        if info is None:
            step = self.start_step + self._calls
        else:
            step = self.start_step + self._calls * info.num_workers + info.id
        self._calls += 1
        return step

    def __call__(self, batch: list) -> tuple[Any, list[torch.Tensor], list[torch.Tensor]]:
        from torch.utils.data import default_collate

        collated = default_collate(batch)
        masks = self.sample(len(batch), self.next_step())
        return collated, [m[0] for m in masks], [m[1] for m in masks]

    def state_dict(self) -> dict[str, int]:
        return {"start_step": self.start_step, "calls": self._calls}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.start_step = int(state["start_step"])
        self._calls = int(state.get("calls", 0))

    def __repr__(self) -> str:
        return (
            f"MaskCollator(grid={self.grid}, seed={self.seed}, rank={self.rank}, "
            f"specs={self.specs})"
        )


# ----------------------------------------------------------------------------- statistics


def mask_statistics(ctx: torch.Tensor, tgt: torch.Tensor, num_tokens: int) -> dict[str, float]:
    """Summary of one ``(context_idx, target_idx)`` pair.

    Returns ``batch``, ``n_context``, ``n_target``, ``context_ratio``, ``target_ratio``
    (per-row counts over ``num_tokens``), ``coverage`` (their sum), ``overlap`` (number of
    (row, token) pairs present in both; must be 0) and ``out_of_range`` (must be 0).
    """
    B = ctx.shape[0]
    if tgt.shape[0] != B:
        raise ValueError(f"batch mismatch: ctx {tuple(ctx.shape)} vs tgt {tuple(tgt.shape)}")
    out_of_range = int(((ctx < 0) | (ctx >= num_tokens)).sum() + ((tgt < 0) | (tgt >= num_tokens)).sum())
    overlap = 0
    if out_of_range == 0:
        in_ctx = torch.zeros(B, num_tokens, dtype=torch.bool)
        in_ctx.scatter_(1, ctx.long(), True)
        overlap = int(in_ctx.gather(1, tgt.long()).sum())
    n_ctx, n_tgt = ctx.shape[1], tgt.shape[1]
    return {
        "batch": B,
        "n_context": n_ctx,
        "n_target": n_tgt,
        "context_ratio": n_ctx / num_tokens,
        "target_ratio": n_tgt / num_tokens,
        "coverage": (n_ctx + n_tgt) / num_tokens,
        "overlap": overlap,
        "out_of_range": out_of_range,
    }
