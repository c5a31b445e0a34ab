"""Handing the C heap's free pages back to the system between inference stages (glibc).

torch's CPU tensors come from ``malloc``. glibc keeps blocks below its (self-raising) mmap
threshold of up to 32 MB in the heap, and memory freed between live blocks stays resident:
in a forward, whose temporaries of 2-32 MB come and go in a different order at every stage,
that is 100-200 MB of the process's peak that holds nothing. ``malloc_trim(0)`` gives those
pages back (the addresses stay reserved); a later allocation there faults them in again.
Called where most temporaries have just gone (after the pixel decoder's encoder, before
post-processing): Swin-T 512x1024's whole-process peak 741-767 -> 671-672 MB, time within
noise. Calling it at every encoder and decoder layer too gained ~25 MB more for 4-18 %
of the time, and fixing glibc's threshold instead (every block of 2 MB or more mapped
afresh) costs ~75 % (docs/performance.md).

Only in CPU inference (no autograd, not tracing); ``MASK2FORMER_HEAP_TRIM=0`` turns it off,
and where there is no ``malloc_trim`` (musl, macOS, Windows) it does nothing.
"""
from __future__ import annotations

import ctypes
import functools
import os
from typing import Callable, Optional

import torch
from torch import Tensor


@functools.lru_cache(maxsize=None)
def _malloc_trim() -> Optional[Callable[[int], int]]:
    """glibc's ``malloc_trim``, looked up once; None where the C library has none."""
    try:
        fn = ctypes.CDLL(None).malloc_trim  # the process's own C library
    except (OSError, AttributeError, TypeError):  # TypeError: Windows has no CDLL(None)
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def enabled() -> bool:
    return os.environ.get("MASK2FORMER_HEAP_TRIM", "1") != "0"


def _tracing() -> bool:
    compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return torch.jit.is_tracing() or bool(compiling and compiling())


def release_free_pages(x: Tensor) -> None:
    """Give the heap's free pages back when ``x`` (a tensor of the running stage) is on the
    CPU in inference; otherwise (a GPU, autograd, tracing or export) do nothing."""
    if not isinstance(x, Tensor) or x.device.type != "cpu" or torch.is_grad_enabled() or _tracing() \
            or not enabled():
        return
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
