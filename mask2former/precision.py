"""Inference numerics and threads: the exact fp32 default and optional faster modes.

``fp32`` (default) is the exact network. The faster modes trade a little agreement for speed
(measured in ``docs/performance.md``) and are never chosen implicitly:

* ``bf16``: autocast to bfloat16 for matrix products and convolutions (norms, softmax,
  sampling positions and post-processing stay float32; the sampling takes the pixel
  decoder's faster ``embedding_bag`` form and the decoder's masked attention one mask for
  all heads, both also in ``int8``; Swin attends larger steps of windows). On CPU it needs native bf16 dot
  products (AMX or AVX512-BF16, read from ``/proc/cpuinfo``); elsewhere it falls back to
  fp32 with a message, because emulated bf16 is slower than fp32. On CUDA it needs a GPU
  that supports bf16.
* ``fp16``: CUDA autocast to float16 (CPU: fp32 with a message).
* ``int8``: dynamic int8 quantisation of the Linear layers (weights int8, activations
  quantised per call), CPU only (CUDA: fp32 with a message).

``prepare`` returns the model to run and a :class:`PrecisionPlan` saying what runs. The
caller's model is never changed: autocast modes wrap it (:class:`AutocastModel`, whose
outputs are float32 again, so post-processing is the same code on the same dtype), int8
quantises a copy. A model the caller does not hold (``owned``: ``Segmenter`` loaded it from
a path) is changed in place instead: int8 quantises it, and the autocast modes store the
weights autocast would cast at every call in its dtype (:func:`store_autocast_weights`).
"""
from __future__ import annotations

import copy
import sys
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from .layers import allow_inexact

PRECISIONS = ("fp32", "bf16", "fp16", "int8")


class PrecisionFallbackWarning(UserWarning):
    """A requested precision is not available here; fp32 runs instead."""


@dataclass
class PrecisionPlan:
    requested: str
    used: str  # what runs: one of PRECISIONS
    path: str  # how, in words (e.g. "CPU autocast bfloat16 (AVX512-BF16)")
    message: Optional[str] = None  # why the request fell back, if it did


class AutocastModel(nn.Module):
    """Runs ``model`` under autocast and hands back float32 logits; any other attribute
    (config, backbone, ...) is the wrapped model's."""

    def __init__(self, model: nn.Module, device_type: str, dtype: torch.dtype):
        super().__init__()
        self.inner = model
        self.device_type, self.autocast_dtype = device_type, dtype

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with torch.autocast(self.device_type, dtype=self.autocast_dtype):
            out = self.inner(*args, **kwargs)
        for name in ("class_queries_logits", "masks_queries_logits"):
            value = getattr(out, name, None)
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                setattr(out, name, value.float())
        return out

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_bf16_path() -> Optional[str]:
    """'AMX' or 'AVX512-BF16' when this CPU multiplies bf16 natively, else None."""
    flags = cpu_flags()
    if "amx_bf16" in flags:
        return "AMX"
    if "avx512_bf16" in flags:
        return "AVX512-BF16"
    if not flags:  # no /proc/cpuinfo (not Linux): trust oneDNN's own check
        try:
            if torch.ops.mkldnn._is_mkldnn_bf16_supported() and torch.backends.cpu.get_cpu_capability() != "DEFAULT":
                return "oneDNN bf16"
        except (AttributeError, RuntimeError):
            pass
    return None


def plan_precision(precision: str, device: torch.device) -> PrecisionPlan:
    """What ``precision`` becomes on ``device`` (falls back to fp32 rather than run slowly)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    cuda = device.type == "cuda"
    if precision == "fp32":
        return PrecisionPlan("fp32", "fp32", "float32 (exact)")
    if precision == "bf16":
        if cuda:
            if torch.cuda.is_bf16_supported():
                return PrecisionPlan("bf16", "bf16", "CUDA autocast bfloat16")
            return _fallback("bf16", "this GPU has no bfloat16 support")
        isa = cpu_bf16_path() if device.type == "cpu" else None
        if isa is None:
            return _fallback("bf16", "this CPU has neither AMX nor AVX512-BF16, so bfloat16 would be emulated "
                                     "(slower than float32)")
        return PrecisionPlan("bf16", "bf16", f"CPU autocast bfloat16 ({isa})")
    if precision == "fp16":
        if cuda:
            return PrecisionPlan("fp16", "fp16", "CUDA autocast float16")
        return _fallback("fp16", "float16 is only offered on CUDA; use bf16 on CPUs with AMX or AVX512-BF16")
    # int8
    if device.type != "cpu":
        return _fallback("int8", "dynamic int8 quantisation runs on CPU only")
    engine = torch.backends.quantized.engine
    if engine not in ("fbgemm", "x86", "onednn", "qnnpack"):
        return _fallback("int8", f"no quantized engine available (engine {engine!r})")
    convs = " and convolutions (oneDNN)" if int8_conv_available() else ""
    return PrecisionPlan("int8", "int8", f"dynamic int8 Linear layers ({engine}){convs}")


def _fallback(requested: str, why: str) -> PrecisionPlan:
    return PrecisionPlan(requested, "fp32", "float32 (exact)", f"precision {requested!r} not used: {why}; running fp32")


def prepare(model: nn.Module, precision: str, device: torch.device, quiet: bool = False, compile: bool = False,
            owned: bool = False) -> tuple[nn.Module, PrecisionPlan]:
    """(model to run, plan). Warns once when the requested precision falls back. ``owned``:
    the caller loaded ``model`` itself, so int8 may quantise it in place and bf16 / fp16 store
    its weights in their dtype.

    compile: run the backbone through ``torch.compile`` (measured ~10% faster backbone on a
    CPU, after a compilation of seconds per new input size; compiling the whole network was
    slower, see docs/performance.md)."""
    plan = plan_precision(precision, device)
    if plan.message and not quiet:
        warnings.warn(plan.message, PrecisionFallbackWarning, stacklevel=3)
    if compile:
        if not quiet:  # otherwise the first image looks like a hang
            print(COMPILE_NOTICE, file=sys.stderr, flush=True)
        model = compiled_backbone(model)
    if plan.used == "int8":
        model = quantize_int8(model, in_place=owned)
    elif plan.used in ("bf16", "fp16"):
        dtype = torch.bfloat16 if plan.used == "bf16" else torch.float16
        if owned:
            store_autocast_weights(model, dtype)
        model = AutocastModel(model, device.type, dtype)
    return model, plan


def store_autocast_weights(model: nn.Module, dtype: torch.dtype) -> None:
    """Cast in place to ``dtype`` the parameters that autocast casts at every call anyway:
    those of Linear, Conv2d and MultiheadAttention layers. The same values then reach the same
    kernels (outputs bit-identical to casting per call; tests check), with no cast per layer per
    call, and those weights take half the memory (Swin-L: 860 -> 430 MB). Norms, embeddings and
    Swin's position-bias tables stay float32, as do the ops that read them."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.MultiheadAttention)):
            for p in module.parameters(recurse=False):  # a MultiheadAttention's out_proj is its own Linear
                if p.is_floating_point() and p.dtype != dtype:
                    p.data = p.data.to(dtype)  # the float32 copy goes now: no second copy at the peak


# Measured with the demo model on 2 shared CPU cores: 7.5 min the first time (empty inductor
# cache), 40 s with the cache warm, on top of the 20 s run.
COMPILE_NOTICE = ("torch.compile: the backbone is compiled on the first image of each new input size; on a CPU "
                  "that takes about a minute with a warm compile cache and several minutes the first time, "
                  "then those sizes run faster")


def compiled_backbone(model: nn.Module) -> nn.Module:
    """A shallow copy of ``model`` (same parameters) whose backbone is ``torch.compile``d."""
    shallow = copy.copy(model)
    shallow._modules = dict(model._modules)  # type: ignore[assignment]  # the caller's module keeps its own
    shallow.backbone = torch.compile(model.backbone)
    return shallow


def quantize_int8(model: nn.Module, in_place: bool = False) -> nn.Module:
    """A copy of ``model`` (``model`` itself with ``in_place``, for a caller that owns it: no
    second float copy at the peak) with its Linear layers dynamically quantised to int8, and
    its convolutions run by :class:`Int8Conv` where oneDNN is available.

    The prediction heads (class and mask embeddings) stay float: they are tiny, and their
    outputs are the logits that labels are read from.
    """
    keep = {id(m) for name, m in model.named_modules() if name.split(".")[-1] in ("class_embed", "mask_embed")
            or ".mask_embed." in f".{name}."}
    names = {name for name, m in model.named_modules() if type(m) is nn.Linear and id(m) not in keep}
    quantized = model if in_place else copy.deepcopy(model)
    allow_inexact(quantized)  # not exact anyway: the fast forms too
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        from torch.ao.quantization import quantize_dynamic

        quantized = quantize_dynamic(quantized, names, dtype=torch.qint8, inplace=True)  # already our copy
    if int8_conv_available():
        for m in quantized.modules():
            if isinstance(m, nn.Conv2d) and Int8Conv.supports(m):
                m._conv_forward = Int8Conv(m)  # NormConv2d's norm and ReLU still follow
    return quantized


def int8_conv_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qconv2d_pointwise")


class Int8Conv:
    """A Conv2d's convolution by oneDNN's int8 kernel, the dynamic-quantisation recipe of the
    Linear layers applied to convolutions: int8 weights (symmetric, per output channel), the
    input quantised per call (uint8, per tensor, from its min/max), float32 output. (torch's own
    dynamic Conv2d requantises its output to 8 bits, which it documents as inaccurate.)"""

    def __init__(self, conv: nn.Conv2d) -> None:
        w = conv.weight.detach().float()
        self.w_scales = w.abs().amax(dim=(1, 2, 3)).clamp_min(1e-12) / 127
        qw = torch.round(w / self.w_scales[:, None, None, None]).clamp(-127, 127).to(torch.int8)
        self.w_zero_points = torch.zeros(len(w), dtype=torch.int64)
        self.geometry = (list(conv.stride), list(conv.padding), list(conv.dilation), conv.groups)
        # The input scale given here only seeds oneDNN's weight layout; each call passes its own.
        self.packed = torch.ops.onednn.qconv_prepack(qw.contiguous(memory_format=torch.channels_last),
                                                     self.w_scales, 1.0, 0, *self.geometry, None)

    @staticmethod
    def supports(conv: nn.Conv2d) -> bool:
        return conv.padding_mode == "zeros" and not isinstance(conv.padding, str) and conv.weight.device.type == "cpu"

    def __call__(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        """x: (B, C_in, H, W) float32 -> (B, C_out, H', W') float32, channels-last (``weight``
        is unused: the packed copy is)."""
        lo, hi = (v.item() for v in torch.aminmax(x.detach()))
        lo, hi = min(lo, 0.0), max(hi, 0.0)  # zero must be exact: it is the padding value
        scale = (hi - lo) / 255 or 1.0
        zero_point = min(255, max(0, round(-lo / scale)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # quantized tensor creation is marked deprecated
            q = torch.quantize_per_tensor(x.float(), scale, zero_point, torch.quint8).int_repr()
        out = torch.ops.onednn.qconv2d_pointwise(q, scale, zero_point, self.packed, self.w_scales,
                                                 self.w_zero_points, bias, *self.geometry, 1.0, 0, torch.float32,
                                                 "none", [], "")
        return out  # channels-last: the next int8 convolution reads it without a reorder


# -- threads ------------------------------------------------------------------------------


def physical_cores() -> int:
    """Physical cores this process may run on (affinity, cgroup CPU quota and SMT considered)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        cpus = list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        base = f"/sys/devices/system/cpu/cpu{cpu}/topology/"
        try:
            with open(base + "physical_package_id") as f:
                package = f.read().strip()
            with open(base + "core_id") as f:
                cores.add((package, f.read().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))  # no topology: count logical CPUs
    n = len(cores) or 1
    try:  # a container's CPU quota (cgroup v2), e.g. "200000 100000" = 2 CPUs
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return n


def configure_threads(num_threads: Optional[int] = None) -> int:
    """Set torch's intra-op threads: ``num_threads`` if given; else, unless the environment
    already chose (OMP_NUM_THREADS / MKL_NUM_THREADS), one per physical core (hyper-threads
    only contend for the same vector units). Returns the count in use."""
    if num_threads is None:
        if os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS"):
            return torch.get_num_threads()
        num_threads = physical_cores()
    if num_threads > 0 and num_threads != torch.get_num_threads():
        torch.set_num_threads(num_threads)
    return torch.get_num_threads()
