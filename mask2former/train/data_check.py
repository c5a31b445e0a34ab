"""Checking a dataset before training starts, so that a bad file is one line naming it at once
rather than an error inside a DataLoader worker after the first iterations.

Every dataset reader raises :class:`~mask2former.data.DatasetError` (one line, naming the file)
for what it cannot use: missing or unreadable files, a label of another size than its image,
label values outside the class range. Reading a sample spread over the dataset is cheap; the
whole dataset is read with ``check_data`` (``--check-data``)."""
from __future__ import annotations

import sys
from typing import Any, Optional

import numpy as np
import torch

from .. import distributed as dist_utils
from ..data import DatasetError

SAMPLE = 16


def sample_indices(n: int, count: int = SAMPLE) -> list[int]:
    """``count`` indices spread evenly over ``n`` items, first and last included."""
    return sorted(set(np.linspace(0, n - 1, min(count, n)).round().astype(int).tolist())) if n else []


def check_dataset(ds: Any, everything: bool = False, device: Optional[torch.device] = None) -> int:
    """Read a sample of ``ds`` (or all of it); raise DatasetError naming the first bad file
    (with ``everything``: print every bad file, then raise). Returns how many items were read.
    Under torchrun the processes share the reading and fail together (``device``: where this
    process's collectives run, its GPU under NCCL)."""
    if not len(ds):
        raise DatasetError("the training split has no images")
    indices = list(range(len(ds))) if everything else sample_indices(len(ds))
    mine = indices[dist_utils.rank()::dist_utils.world_size()]
    problems: list[str] = []
    for i in mine:
        try:
            ds[i]
        except DatasetError as e:
            problems.append(str(e))
            if not everything:
                break
    bad = int(dist_utils.all_reduce_sum(torch.tensor(float(len(problems)), device=device)).item())
    if not bad:
        if everything and dist_utils.is_main():
            print(f"checked all {len(indices)} training images and labels", file=sys.stderr)
        return len(indices)
    if not everything:
        raise DatasetError(problems[0] if problems else "another process found a bad training file (see its message)")
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    raise DatasetError(f"{bad} of {len(indices)} training images have problems (listed above)")
