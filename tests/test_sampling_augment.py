"""Clip index sampling (vjepa_pipeline.data.sampling) and uint8 augmentation
(vjepa_pipeline.data.augment)."""

from __future__ import annotations

import math
import random
import statistics
import time

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from vjepa_pipeline.data.augment import (
    eval_views,
    random_resized_crop_params,
    resize_short_side,
    train_augment,
)
from vjepa_pipeline.data.sampling import (
    ClipSpec,
    frame_step_for,
    sample_eval_clips,
    sample_train_clips,
    union_indices,
)

# ----------------------------------------------------------------------------- sampling


def test_train_clips_fit_and_have_the_step():
    spec = ClipSpec(frames_per_clip=16, frame_step=4, num_clips=3)
    rng = random.Random(0)
    for num_frames in (61, 62, 100, 1000):
        for _ in range(50):
            clips = sample_train_clips(num_frames, 30.0, spec, rng)
            assert len(clips) == 3
            for clip in clips:
                assert len(clip) == 16
                assert clip[0] >= 0 and clip[-1] <= num_frames - 1
                assert all(b - a == 4 for a, b in zip(clip, clip[1:]))


def test_train_starts_cover_the_valid_range_uniformly():
    spec = ClipSpec(frames_per_clip=16, frame_step=4)
    num_frames = 100  # span 61 -> valid starts 0..39
    rng = random.Random(1)
    draws = 4000
    starts = [sample_train_clips(num_frames, None, spec, rng)[0][0] for _ in range(draws)]
    assert min(starts) == 0 and max(starts) == 39
    counts = [0] * 40
    for s in starts:
        counts[s] += 1
    expected = draws / 40
    chi2 = sum((c - expected) ** 2 / expected for c in counts)
    # 39 degrees of freedom: mean 39, sd ~8.8; 80 is p ~ 1e-4.
    assert chi2 < 80, chi2


def test_num_clips_are_independent_draws():
    spec = ClipSpec(frames_per_clip=8, frame_step=2, num_clips=6)
    rng = random.Random(2)
    clips = sample_train_clips(10_000, None, spec, rng)
    assert len(clips) == 6
    assert len({c[0] for c in clips}) == 6  # 6 starts out of ~10k values: distinct
    # clip lists are separate objects (a caller may mutate one)
    clips[0][0] = -1
    assert clips[1][0] != -1


def test_target_fps_step():
    spec = ClipSpec(frames_per_clip=16, frame_step=4, target_fps=4)
    assert frame_step_for(spec, 30.0) == 8  # round(7.5) = 8
    assert frame_step_for(spec, 25.0) == 6  # round(6.25) = 6
    assert frame_step_for(spec, 26.0) == 7  # halves round up (6.5 -> 7)
    assert frame_step_for(spec, 29.97) == 7
    assert frame_step_for(spec, 2.0) == 1  # never below 1
    assert frame_step_for(spec, 1.0) == 1
    assert frame_step_for(spec, None) == 4  # unknown fps: fall back to frame_step
    assert frame_step_for(ClipSpec(frame_step=3), 30.0) == 3  # no target_fps: frame_step
    clips = sample_train_clips(1000, 30.0, spec, random.Random(0))
    assert all(b - a == 8 for a, b in zip(clips[0], clips[0][1:]))
    clips = sample_train_clips(1000, 25.0, spec, random.Random(0))
    assert all(b - a == 6 for a, b in zip(clips[0], clips[0][1:]))


def test_short_video_pad_and_skip():
    pad = ClipSpec(frames_per_clip=16, frame_step=4, num_clips=2, short_video="pad")
    clips = sample_train_clips(20, None, pad, random.Random(0))
    expected = [0, 4, 8, 12, 16] + [19] * 11
    assert clips == [expected, expected]
    skip = ClipSpec(frames_per_clip=16, frame_step=4, short_video="skip")
    assert sample_train_clips(20, None, skip, random.Random(0)) is None
    assert sample_train_clips(60, None, skip, random.Random(0)) is None  # span 61
    assert sample_train_clips(61, None, skip, random.Random(0)) == [list(range(0, 61, 4))]


def test_image_is_a_static_clip():
    for mode in ("pad", "skip"):
        spec = ClipSpec(frames_per_clip=16, frame_step=4, num_clips=2, short_video=mode)
        assert sample_train_clips(1, None, spec, random.Random(0)) == [[0] * 16, [0] * 16]
        assert sample_eval_clips(1, None, spec, 3) == [[0] * 16] * 3


def test_eval_segments_are_evenly_spaced_and_deterministic():
    spec = ClipSpec(frames_per_clip=4, frame_step=2)  # span 7; 100 frames -> starts 0..93
    three = sample_eval_clips(100, None, spec, 3)
    assert three == [[0, 2, 4, 6], [46, 48, 50, 52], [93, 95, 97, 99]]
    assert sample_eval_clips(100, None, spec, 3) == three
    assert sample_eval_clips(100, None, spec, 1) == [[46, 48, 50, 52]]  # centred
    assert [c[0] for c in sample_eval_clips(100, None, spec, 4)] == [0, 31, 62, 93]
    # fps-driven step applies to eval as well
    fps_spec = ClipSpec(frames_per_clip=4, target_fps=4)
    assert sample_eval_clips(100, 30.0, fps_spec, 1) == [[37, 45, 53, 61]]  # step 8, span 25, centre 75 // 2
    # short video: padded, whatever short_video says
    short = ClipSpec(frames_per_clip=4, frame_step=2, short_video="skip")
    assert sample_eval_clips(5, None, short, 2) == [[0, 2, 4, 4], [0, 2, 4, 4]]


def test_union_indices_round_trip():
    clips = [[5, 7, 9, 9], [0, 5, 10, 15], [9, 9, 9, 9]]
    unique, positions = union_indices(clips)
    assert unique == [0, 5, 7, 9, 10, 15]
    assert positions == [[1, 2, 3, 3], [0, 1, 4, 5], [3, 3, 3, 3]]
    rng = random.Random(3)
    spec = ClipSpec(frames_per_clip=16, frame_step=4, num_clips=5)
    for _ in range(20):
        clips = sample_train_clips(rng.randint(1, 200), None, spec, rng)
        unique, positions = union_indices(clips)
        assert unique == sorted(set(unique))
        assert set(unique) == {i for c in clips for i in c}
        assert [[unique[p] for p in pos] for pos in positions] == clips
        # one decode of `unique` serves every clip
        decoded = torch.tensor(unique) * 10
        for clip, pos in zip(clips, positions):
            assert decoded[pos].tolist() == [10 * i for i in clip]


def test_sampling_validation_and_global_rng_untouched():
    with pytest.raises(ValueError):
        ClipSpec(frames_per_clip=0)
    with pytest.raises(ValueError):
        ClipSpec(frame_step=0)
    with pytest.raises(ValueError):
        ClipSpec(short_video="drop")
    with pytest.raises(ValueError):
        ClipSpec(target_fps=0)
    with pytest.raises(ValueError):
        sample_train_clips(0, None, ClipSpec(), random.Random(0))
    state, tstate = random.getstate(), torch.get_rng_state()
    a = [sample_train_clips(500, 30.0, ClipSpec(num_clips=4), random.Random(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    assert random.getstate() == state and torch.equal(torch.get_rng_state(), tstate)


# ----------------------------------------------------------------------------- augment


def _noise_frames(t=4, h=120, w=160, c=3, seed=0, high=256):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, (t, h, w, c), generator=g, dtype=torch.uint8)


def test_crop_params_in_bounds_and_distribution():
    rng = random.Random(0)
    for height, width in ((256, 454), (454, 256), (400, 400), (17, 23)):
        areas, ratios, tops, lefts = [], [], [], []
        for _ in range(2000):
            top, left, h, w = random_resized_crop_params(height, width, (0.3, 1.0), (0.75, 1.35), rng)
            assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
            assert h >= 1 and w >= 1
            areas.append(h * w / (height * width))
            ratios.append(w / h)
            tops.append(top)
            lefts.append(left)
        if height < 100:
            continue  # rounding dominates on tiny frames; bounds above still hold
        # integer rounding of h and w moves area and ratio by ~1/size
        assert min(areas) >= 0.3 - 0.01 and max(areas) <= 1.0
        assert min(ratios) >= 0.75 - 0.01 and max(ratios) <= 1.35 + 0.01
        # the ranges are covered
        assert min(areas) < 0.32 and max(areas) > (0.9 if height == width else 0.7)
        assert min(ratios) < 0.77 and max(ratios) > 1.32
        assert min(tops) == 0 and min(lefts) == 0
        assert max(tops) > 0.3 * height and max(lefts) > 0.3 * width  # placement spreads out
    # log-uniform aspect: on a square frame, the median log ratio is near the centre of the range
    rng = random.Random(1)
    logs = []
    for _ in range(4000):
        _, _, h, w = random_resized_crop_params(1000, 1000, (0.1, 0.2), (0.5, 2.0), rng)
        logs.append(math.log(w / h))
    assert abs(statistics.median(logs)) < 0.05
    lo = sum(1 for x in logs if x < math.log(0.5) / 2) / len(logs)
    assert 0.2 < lo < 0.3  # a quarter of the log range


def test_crop_params_fallback_matches_torchvision():
    import torchvision.transforms as T

    for height, width in ((100, 300), (300, 100), (200, 200), (100, 120)):
        ours = random_resized_crop_params(height, width, (2.0, 3.0), (0.75, 1.35), random.Random(0))
        with torch.random.fork_rng():
            ref = T.RandomResizedCrop.get_params(torch.empty(3, height, width), [2.0, 3.0], [0.75, 1.35])
        assert ours == tuple(ref), (height, width, ours, ref)
    fallback = random_resized_crop_params(100, 300, (2.0, 3.0), (0.75, 1.35), random.Random(0))
    assert fallback == (0, 82, 100, 135)
    with pytest.raises(TypeError):
        random_resized_crop_params(100, 100)  # an explicit rng is required


def test_same_crop_and_flip_for_every_frame():
    base = _noise_frames(t=1, h=90, w=150, seed=3, high=200)[0]
    offsets = torch.arange(8, dtype=torch.int16) * 7  # per-frame constant, max 49 -> <= 249
    frames = (base.to(torch.int16)[None] + offsets[:, None, None, None]).to(torch.uint8)
    flips = set()
    for seed in range(12):
        out = train_augment(frames, 48, random.Random(seed)).to(torch.int16)
        diff = out - out[:1] - offsets[:, None, None, None]
        assert diff.abs().max().item() <= 1, seed  # fixed-point rounding at most
        r = random.Random(seed)
        random_resized_crop_params(90, 150, (0.3, 1.0), (0.75, 1.35), r)
        flips.add(r.random() < 0.5)
    assert flips == {True, False}


def test_flip_really_flips_and_matches_a_manual_crop():
    frames = _noise_frames(t=3, h=120, w=200, seed=4)
    for seed in range(4):
        no_flip = train_augment(frames, 64, random.Random(seed), hflip_p=0.0)
        flipped = train_augment(frames, 64, random.Random(seed), hflip_p=1.0)
        assert torch.equal(flipped, no_flip.flip(2))
        assert not torch.equal(flipped, no_flip)
        # the crop is the one random_resized_crop_params draws from the same stream
        top, left, h, w = random_resized_crop_params(120, 200, (0.3, 1.0), (0.75, 1.35), random.Random(seed))
        crop = frames[:, top : top + h, left : left + w].permute(0, 3, 1, 2).float()
        manual = TF.resize(crop, [64, 64], antialias=True).round().clamp(0, 255).permute(0, 2, 3, 1)
        assert (manual - no_flip.float()).abs().max().item() <= 1
        # default p=0.5 follows the flip draw
        r = random.Random(seed)
        random_resized_crop_params(120, 200, (0.3, 1.0), (0.75, 1.35), r)
        expected = flipped if r.random() < 0.5 else no_flip
        assert torch.equal(train_augment(frames, 64, random.Random(seed)), expected)


def test_train_output_format():
    for channels in (3, 1, 4):
        frames = _noise_frames(t=5, h=70, w=90, c=channels, seed=5)
        out = train_augment(frames, 32, random.Random(0))
        assert out.dtype == torch.uint8 and out.shape == (5, 32, 32, channels) and out.is_contiguous()
    # non-contiguous input (e.g. a decoded batch sliced along time) works too
    frames = _noise_frames(t=8, h=70, w=90, seed=6)[::2]
    out = train_augment(frames, 32, random.Random(0))
    assert out.shape == (4, 32, 32, 3) and out.is_contiguous()
    # a crop that is already crop_size: fresh memory, the caller's frames are not aliased
    frames = _noise_frames(t=2, h=32, w=32, seed=7)
    keep = frames.clone()
    out = train_augment(
        frames, 32, random.Random(0), scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip_p=0.0
    )
    assert torch.equal(out, frames)
    out[:] = 0
    assert torch.equal(frames, keep)
    with pytest.raises(ValueError):
        train_augment(frames[0], 16, random.Random(0))
    with pytest.raises(TypeError):
        train_augment(frames.float(), 16, random.Random(0))


def test_constant_image_stays_constant():
    frames = torch.full((4, 97, 131, 3), 137, dtype=torch.uint8)
    for seed in range(5):
        out = train_augment(frames, 57, random.Random(seed))
        assert (out == 137).all()
    views = eval_views(frames, 57, 3)
    assert (views == 137).all()
    assert (resize_short_side(frames, 40) == 137).all()


def _ramp_frames(t, h, w, along_width=True):
    """Column (or row) index encoded in the pixel value: views can be told apart."""
    n = w if along_width else h
    ramp = torch.linspace(0, 255, n).round().to(torch.uint8)
    img = ramp[None, :, None].expand(h, w, 3) if along_width else ramp[:, None, None].expand(h, w, 3)
    return img[None].expand(t, h, w, 3).contiguous()


def test_resize_short_side():
    frames = _noise_frames(t=2, h=90, w=300, seed=8)
    out = resize_short_side(frames, 64)
    assert out.shape == (2, 64, 213, 3) and out.dtype == torch.uint8 and out.is_contiguous()
    ref = TF.resize(frames.permute(0, 3, 1, 2), [64], antialias=True).permute(0, 2, 3, 1)
    assert torch.equal(out, ref)  # torchvision's short-side semantics
    assert resize_short_side(frames.transpose(1, 2), 64).shape == (2, 213, 64, 3)


def test_eval_views_wide_tall_and_single():
    frames = _ramp_frames(2, 90, 300)
    views = eval_views(frames, 64, 3)
    assert views.shape == (3, 2, 64, 64, 3) and views.dtype == torch.uint8 and views.is_contiguous()
    resized = resize_short_side(frames, 64)  # (2, 64, 213, 3)
    assert torch.equal(views[0], resized[:, :, 0:64])
    assert torch.equal(views[1], resized[:, :, 74:138])  # (213 - 64) // 2 = 74
    assert torch.equal(views[2], resized[:, :, 149:213])
    means = [v.float().mean().item() for v in views]
    assert means[0] < means[1] < means[2]  # left, centre, right of the ramp
    single = eval_views(frames, 64, 1)
    assert single.shape == (1, 2, 64, 64, 3) and torch.equal(single[0], views[1])

    tall = _ramp_frames(2, 300, 90, along_width=False)
    tviews = eval_views(tall, 64, 3)
    tres = resize_short_side(tall, 64)  # (2, 213, 64, 3)
    assert tres.shape == (2, 213, 64, 3)
    assert torch.equal(tviews[0], tres[:, 0:64])
    assert torch.equal(tviews[1], tres[:, 74:138])
    assert torch.equal(tviews[2], tres[:, 149:213])
    tmeans = [v.float().mean().item() for v in tviews]
    assert tmeans[0] < tmeans[1] < tmeans[2]  # top, centre, bottom
    # a square frame gives identical views; deterministic
    square = _noise_frames(t=2, h=80, w=80, seed=9)
    sq = eval_views(square, 64, 3)
    assert torch.equal(sq[0], sq[1]) and torch.equal(sq[1], sq[2])
    assert torch.equal(eval_views(square, 64, 3), sq)
    with pytest.raises(ValueError):
        eval_views(square, 64, 0)


def test_reproducible_and_global_rng_untouched():
    frames = _noise_frames(t=4, h=100, w=140, seed=10)
    random.seed(123)
    torch.manual_seed(123)
    state, tstate = random.getstate(), torch.get_rng_state()
    a = train_augment(frames, 48, random.Random(42))
    b = train_augment(frames, 48, random.Random(42))
    c = train_augment(frames, 48, random.Random(43))
    eval_views(frames, 48, 3)
    random_resized_crop_params(100, 140, rng=random.Random(0))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert random.getstate() == state
    assert torch.equal(torch.get_rng_state(), tstate)


def test_train_augment_timing(capsys):
    """Timing print only (no assert): 16 frames 256x454 -> 224 on one thread."""
    frames = _noise_frames(t=16, h=256, w=454, seed=11)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rng = random.Random(0)
        train_augment(frames, 224, rng)  # warm-up
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            train_augment(frames, 224, rng)
            times.append(time.perf_counter() - t0)
        eval_views(frames, 224, 3)  # warm-up
        t0 = time.perf_counter()
        eval_views(frames, 224, 3)
        t_eval = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    with capsys.disabled():
        print(
            f"\ntrain_augment 16x256x454 -> 224, 1 thread: median {1e3 * statistics.median(times):.2f} ms, "
            f"min {1e3 * min(times):.2f} ms; eval_views x3: {1e3 * t_eval:.2f} ms"
        )
