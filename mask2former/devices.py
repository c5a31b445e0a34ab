"""Checking a requested torch device up front: one line saying what is wrong and what to use,
instead of a traceback from deep inside torch at the first tensor moved there."""
from __future__ import annotations

from typing import Optional, Union

import torch

KNOWN = ("cpu", "cuda", "mps", "xpu")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _count(kind: str) -> int:
    if kind == "cuda":
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    if kind == "mps":
        return 1 if torch.backends.mps.is_available() else 0
    backend = getattr(torch, kind, None)
    available = getattr(backend, "is_available", None)
    if available is None or not available():
        return 0
    return int(getattr(backend, "device_count", lambda: 1)())


def _why_missing(kind: str) -> str:
    if kind == "cuda":
        if torch.version.cuda is None:
            return f"this PyTorch ({torch.__version__}) is a build without CUDA"
        return "no CUDA GPU is visible (driver, CUDA_VISIBLE_DEVICES?)"
    if kind == "mps":
        return "MPS (Apple-silicon GPU) is not available on this machine"
    return f"no {kind} device is available on this machine"


def resolve_device(name: Optional[Union[str, torch.device]]) -> torch.device:
    """The torch.device for ``name`` (None: CUDA when available, else CPU); ValueError with one
    line when the name is not a device or the device is not on this machine."""
    if name is None or name == "":
        return default_device()
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {str(name)!r}: not a device name (use cpu, cuda, cuda:N or mps)") from None
    if device.type == "cpu":
        return device
    if device.type not in KNOWN:
        raise ValueError(f"device {str(name)!r}: not supported here (use cpu, cuda, cuda:N or mps)")
    count = _count(device.type)
    if count == 0:
        return _unavailable(name, _why_missing(device.type))
    if device.index is not None and device.index >= count:
        return _unavailable(name, f"there {'is' if count == 1 else 'are'} only {count} {device.type} device(s)")
    return device


def _unavailable(name: Union[str, torch.device], why: str) -> torch.device:
    available = [d for d in ("cuda", "mps") if _count(d)]
    hint = " or ".join(["cpu"] + available)
    raise ValueError(f"device {str(name)!r}: {why}; use {hint}")
