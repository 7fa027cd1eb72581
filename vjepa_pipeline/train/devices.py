"""Accelerator facts for throughput metrics: peak dense FLOP/s per device and GPU memory use.

MFU = achieved training FLOP/s / peak FLOP/s of the precision in use. Peaks are the dense
(non-sparse) tensor-core figures; fp32 is the plain (non-tensor) figure, tf32 the dense
tensor-core one. Values in TFLOP/s, from vendor datasheets, dense.
"""

from __future__ import annotations

import re

# (name pattern, {precision key: peak TFLOP/s}). Patterns are matched case-insensitively against
# torch.cuda.get_device_name() as whole words, first match wins: specific variants come before
# the generic name (e.g. "H100 PCIe" before "H100", "GB200" before "B200", "A10G" before "A10").
# Keys: bf16, fp16, tf32, fp32. A missing key means "not supported / not known" (e.g. no bf16
# tensor cores on V100 and T4).
_PEAK_TFLOPS: list[tuple[str, dict[str, float]]] = [
    # Blackwell
    (r"gb200", {"bf16": 2500, "fp16": 2500, "tf32": 1250, "fp32": 80}),
    (r"b200", {"bf16": 2250, "fp16": 2250, "tf32": 1125, "fp32": 75}),
    (r"b100", {"bf16": 1750, "fp16": 1750, "tf32": 875, "fp32": 60}),
    # Hopper
    (r"gh200", {"bf16": 989, "fp16": 989, "tf32": 494, "fp32": 67}),
    (r"h200 nvl", {"bf16": 835, "fp16": 835, "tf32": 418, "fp32": 60}),
    (r"h200", {"bf16": 989, "fp16": 989, "tf32": 494, "fp32": 67}),
    (r"h100 nvl", {"bf16": 835, "fp16": 835, "tf32": 418, "fp32": 60}),
    (r"h100 pcie", {"bf16": 756, "fp16": 756, "tf32": 378, "fp32": 51}),
    (r"h100", {"bf16": 989, "fp16": 989, "tf32": 494, "fp32": 67}),  # SXM ("H100 80GB HBM3")
    (r"h800", {"bf16": 989, "fp16": 989, "tf32": 494, "fp32": 67}),
    # Ada
    (r"l40s", {"bf16": 362, "fp16": 362, "tf32": 183, "fp32": 91.6}),
    (r"l40", {"bf16": 181, "fp16": 181, "tf32": 90.5, "fp32": 90.5}),
    (r"l4", {"bf16": 121, "fp16": 121, "tf32": 60, "fp32": 30.3}),
    (r"rtx 6000 ada", {"bf16": 364, "fp16": 364, "tf32": 182, "fp32": 91.1}),
    (r"rtx 4090", {"bf16": 165, "fp16": 165, "tf32": 82.6, "fp32": 82.6}),  # fp32 accumulate
    # Ampere
    (r"a100", {"bf16": 312, "fp16": 312, "tf32": 156, "fp32": 19.5}),
    (r"a10g", {"bf16": 70, "fp16": 70, "tf32": 35, "fp32": 35}),  # AWS variant, not the A10
    (r"a10", {"bf16": 125, "fp16": 125, "tf32": 62.5, "fp32": 31.2}),
    (r"a30", {"bf16": 165, "fp16": 165, "tf32": 82, "fp32": 10.3}),
    (r"a40", {"bf16": 149.7, "fp16": 149.7, "tf32": 74.8, "fp32": 37.4}),
    (r"rtx a6000", {"bf16": 154.8, "fp16": 154.8, "tf32": 77.4, "fp32": 38.7}),
    (r"rtx 3090", {"bf16": 71, "fp16": 71, "tf32": 35.6, "fp32": 35.6}),  # fp32 accumulate
    # Volta / Turing (no bf16 tensor cores)
    (r"v100", {"fp16": 125, "fp32": 15.7}),
    (r"t4", {"fp16": 65, "fp32": 8.1}),
    # AMD Instinct (matrix-core dense)
    (r"mi300x|mi325x", {"bf16": 1307, "fp16": 1307, "tf32": 654, "fp32": 163}),
    (r"mi250x?", {"bf16": 383, "fp16": 383, "fp32": 47.9}),
]
_COMPILED = [(re.compile(rf"(?<![a-z0-9])(?:{p})(?![a-z0-9])"), peaks) for p, peaks in _PEAK_TFLOPS]


def precision_key(precision: str) -> str | None:
    """Map a Lightning precision string to a table key: "bf16-mixed" -> "bf16", "16-mixed" ->
    "fp16", "32"/"32-true" -> "fp32"; "tf32"/"fp32"/... pass through. None if unknown."""
    p = str(precision).lower()
    if p in ("bf16", "fp16", "tf32", "fp32"):
        return p
    if p.startswith("bf16"):
        return "bf16"
    if p.startswith("16") or p == "half":
        return "fp16"
    if p.startswith("32"):
        return "fp32"
    return None


def peak_flops(device_name: str, precision: str) -> float | None:
    """Peak dense FLOP/s (not TFLOP/s) of one device at ``precision`` (a Lightning precision
    string or a table key), or None when the device or the precision is not in the table."""
    key = precision_key(precision)
    if key is None or not device_name:
        return None
    name = device_name.lower()
    for pattern, peaks in _COMPILED:
        if pattern.search(name):
            tflops = peaks.get(key)
            return None if tflops is None else float(tflops) * 1e12
    return None


def fp32_matmul_uses_tf32() -> bool:
    """Whether fp32 matmuls run on tensor cores (TF32), so a "32" run should be measured
    against the tf32 peak rather than the plain fp32 one."""
    import torch

    return torch.get_float32_matmul_precision() != "highest"  # also set by allow_tf32 = True


def current_peak_flops(precision: str) -> float | None:
    """Peak FLOP/s of the current CUDA device for ``precision``; None on CPU or unknown GPUs."""
    import torch

    if not torch.cuda.is_available():
        return None
    key = precision_key(precision)
    if key == "fp32" and fp32_matmul_uses_tf32():
        key = "tf32"
    return peak_flops(torch.cuda.get_device_name(), key or precision)


def gpu_memory() -> dict[str, float]:
    """CUDA memory of the current device in MiB: allocated, reserved and peak allocated (since
    start or the last reset). {} on CPU, or while CUDA has not been initialised."""
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return {}
    mib = 1024.0**2
    return {
        "alloc_mib": torch.cuda.memory_allocated() / mib,
        "reserved_mib": torch.cuda.memory_reserved() / mib,
        "peak_mib": torch.cuda.max_memory_allocated() / mib,
    }
