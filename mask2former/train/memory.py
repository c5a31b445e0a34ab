"""Will a training configuration fit in memory? An estimate made before the first step, so that
an impossible configuration is refused in seconds with what to lower, instead of being killed
for memory minutes later.

The model: training memory = optimiser state (gradients + AdamW's two moments: 3 x the weights,
which are already loaded) + per process micro-batch x (activation bytes per crop pixel x crop
area + a fixed cost per image) + the DataLoader workers' prefetched batches. The per-pixel
costs are measured with ``benchmarks/train_memory.py`` (one fp32 step, peak resident size at
micro-batch 2 minus micro-batch 1; results in benchmarks/results/train_memory.txt). Window
attention, deformable attention and the masked decoder all grow linearly with the crop area,
but small steps measure noisily (per pixel, 256x256 crops came out between half and 1.07x the
512x512 figure), so each cost is taken at the largest crop measured: 512x512, or 384x384 for
Swin-S/B and ResNet-101.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional

import torch

# fp32 activation cost: (bytes per crop pixel, bytes per image). Measured with
# benchmarks/train_memory.py on CPU (tiny, swin-t, r50: 512x512 crops; swin-s, swin-b, r101:
# 384x384; swin-l: 512x512); the fixed 20 MB per image covers the targets and sampled points.
MEASURED = {
    "tiny": (1260, 20e6),
    "swin-t": (6800, 20e6),
    "swin-s": (8290, 20e6),
    "swin-b": (9890, 20e6),
    "swin-l": (13370, 20e6),
    "r50": (5280, 20e6),
    "r101": (5740, 20e6),
}
# float16 autocast (GPU) keeps most saved activations in half precision. Not measured on a GPU
# here: taken as 0.6 of fp32 (norms, softmax and the loss stay fp32).
AMP_FACTOR = 0.6
WORKER_BYTES = 300e6  # one DataLoader worker process: interpreter, dataset, prefetched batches
HEADROOM = 0.85  # use at most this share of what is free: the estimate can be ~15% low (docs/training.md)


@dataclass
class MemoryEstimate:
    total: float  # bytes
    per_image: float
    fixed: float
    available: Optional[float]
    where: str


def architecture_key(model: torch.nn.Module, name: str) -> str:
    """The measured architecture closest to ``model``: its own name when it is one of them,
    else the one with the nearest parameter count (a model from --init)."""
    from .model_init import architecture_config

    own = _signature(model)
    if name in MEASURED and own == _signature_of(architecture_config(name, {0: "x"}, {})):
        return name
    for key in MEASURED:
        if own == _signature_of(architecture_config(key, {0: "x"}, {})):
            return key
    params = sum(p.numel() for p in model.parameters())
    return min(PARAMS, key=lambda k: abs(math.log(PARAMS[k] / max(params, 1))))


# Parameter counts of the named architectures (19 classes), for matching other models.
PARAMS = {"tiny": 2.7e6, "swin-t": 47.4e6, "swin-s": 68.7e6, "swin-b": 106.9e6, "swin-l": 215.5e6, "r50": 44.0e6,
          "r101": 62.9e6}


def _signature(model: torch.nn.Module) -> tuple:
    return _signature_of(model.config)


def _signature_of(cfg) -> tuple:
    bb = cfg.backbone_config
    return (type(bb).__name__, getattr(bb, "embed_dim", None), tuple(bb.depths), cfg.num_queries, cfg.hidden_dim)


def available_bytes(device: torch.device, local_processes: int = 1) -> tuple[Optional[float], str]:
    """Free memory for this process: the GPU's free memory, or this machine's (and cgroup's)
    available RAM shared among the processes of this machine."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return float(free), f"is free on {device}"
    if device.type != "cpu":
        return None, f"is free on {device}"
    free = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        free = float(info["MemAvailable"])
    except (OSError, KeyError, ValueError, IndexError):
        return None, "of RAM is available"
    limit = _cgroup_free()
    if limit is not None:
        free = min(free, limit)
    shared = f" per process ({local_processes} on this machine)" if local_processes > 1 else ""
    return free / max(local_processes, 1), "of RAM is available" + shared


def _cgroup_free() -> Optional[float]:
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as f:
            limit = f.read().strip()
        if limit == "max":
            return None
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as f:
            return float(int(limit) - int(f.read().strip()))
    except (OSError, ValueError):
        return None


def estimate(model: torch.nn.Module, architecture: str, crop_size: tuple[int, int], micro_batch: int,
             num_workers: int, amp: bool, device: torch.device, local_processes: int = 1) -> MemoryEstimate:
    per_pixel, per_image = MEASURED[architecture_key(model, architecture)]
    factor = AMP_FACTOR if amp else 1.0
    image = factor * (per_pixel * crop_size[0] * crop_size[1] + per_image)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    fixed = 3 * weights + (num_workers * WORKER_BYTES if device.type == "cpu" else 0)
    available, where = available_bytes(device, local_processes)
    return MemoryEstimate(fixed + micro_batch * image, image, fixed, available, where)


def activation_bytes(architecture: str, crop_size: tuple[int, int], micro_batch: int) -> float:
    """The model's fp32 activation bytes for a named architecture (what the benchmark checks)."""
    per_pixel, per_image = MEASURED[architecture]
    return micro_batch * (per_pixel * crop_size[0] * crop_size[1] + per_image)


def check_fits(est: MemoryEstimate, architecture: str, crop_size: tuple[int, int], batch_size: int,
               world: int, accumulate: int) -> None:
    """ValueError with one line saying what to lower when the estimate exceeds what is free."""
    if est.available is None or est.total <= HEADROOM * est.available:
        return
    micro = batch_size // (world * accumulate)
    fit = int((HEADROOM * est.available - est.fixed) // est.per_image)
    gb = 2**30
    advice = []
    if fit >= 1:
        for acc in range(accumulate + 1, batch_size // world + 1):
            if batch_size % (world * acc) == 0 and batch_size // (world * acc) <= fit:
                advice.append(f"--accumulate {acc} (same batch, {batch_size // (world * acc)} images at a time)")
                break
        advice.append(f"--batch-size {fit * world * accumulate}")
    advice.append(f"a smaller --crop-size than {crop_size[0]} {crop_size[1]}")
    raise ValueError(
        f"this training needs about {est.total / gb:.1f} GB but only {est.available / gb:.1f} GB {est.where}: "
        f"{architecture}, {micro} crops of {crop_size[0]}x{crop_size[1]} at a time, about {est.per_image / gb:.2f} "
        f"GB each. Lower it: {', or '.join(advice)} (--set memory_check=false skips this check)")


def local_process_count() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
