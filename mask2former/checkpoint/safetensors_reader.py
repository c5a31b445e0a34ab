"""Reading ``.safetensors`` weights straight into a model's parameters, one tensor at a time.

``safetensors.torch.load_file`` memory-maps the file: its tensors are views of the mapping,
whose pages join the process's resident set as they are read and stay there until the last
tensor is dropped, so copying them into a model holds the weights twice at the peak. Here
the header is read first; each tensor is a :class:`FileTensor` (name, dtype, shape, where
its bytes are) that the loader reads with ``readinto`` into the parameter itself, so the
weights are resident once and the parameters stay PyTorch's own allocations.

The format: 8 bytes little-endian header length N, N bytes of JSON ``{name: {"dtype",
"shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``, then the data, offsets
counted from its start.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass

import torch
from torch import Tensor

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
for _name, _attr in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2"), ("U16", "uint16"),
                     ("U32", "uint32"), ("U64", "uint64")):
    if hasattr(torch, _attr):
        DTYPES[_name] = getattr(torch, _attr)
MAX_HEADER = 100 * 2**20  # as the format's reference implementation: larger is a damaged file


@dataclass(frozen=True)
class FileTensor:
    """One tensor of a ``.safetensors`` file, not read yet."""

    path: str
    offset: int  # of its first byte in the file
    dtype: torch.dtype
    shape: torch.Size

    def read_into(self, out: Tensor) -> None:
        """Fill ``out`` (same shape; any dtype, converted as ``copy_`` converts)."""
        if out.dtype != self.dtype or not out.is_contiguous() or out.device.type != "cpu":
            out.copy_(self.load())
            return
        nbytes = out.numel() * out.element_size()
        if not nbytes:
            return
        view = memoryview(out.detach().view(-1).view(torch.uint8).numpy())
        with open(self.path, "rb", buffering=0) as f:
            f.seek(self.offset)
            got = 0
            while got < nbytes:  # readinto may return fewer bytes than asked
                n = f.readinto(view[got:])
                if not n:
                    raise ValueError(f"{self.path}: file ends inside a tensor's data")
                got += n

    def load(self) -> Tensor:
        out = torch.empty(self.shape, dtype=self.dtype)
        self.read_into(out)
        return out


@dataclass(frozen=True)
class FusedFileTensor:
    """File tensors joined along dim 0 (q, k, v into one projection), not read yet."""

    parts: tuple[FileTensor, ...]

    @property
    def shape(self) -> torch.Size:
        first = self.parts[0].shape
        return torch.Size([sum(p.shape[0] for p in self.parts), *first[1:]])

    @property
    def dtype(self) -> torch.dtype:
        return self.parts[0].dtype

    def read_into(self, out: Tensor) -> None:
        start = 0
        for part in self.parts:  # row blocks of a contiguous tensor are contiguous
            part.read_into(out[start:start + part.shape[0]])
            start += part.shape[0]

    def load(self) -> Tensor:
        return torch.cat([p.load() for p in self.parts], 0)


LazyTensor = (FileTensor, FusedFileTensor)


def concat_rows(parts: list) -> object:
    """``torch.cat(parts, 0)``, kept lazy when the parts are file tensors of one shape."""
    if all(isinstance(p, FileTensor) for p in parts) and len({(p.dtype, tuple(p.shape[1:])) for p in parts}) == 1:
        return FusedFileTensor(tuple(parts))
    return torch.cat([p.load() if isinstance(p, LazyTensor) else p for p in parts], 0)


def read_header(path: str | os.PathLike) -> dict[str, FileTensor]:
    """Every tensor of the file as a :class:`FileTensor`. Raises ValueError on a damaged,
    truncated or unknown-dtype file (every tensor's bytes must lie inside the file)."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ValueError("shorter than the 8-byte header length")
        (n,) = struct.unpack("<Q", raw)
        if n > min(MAX_HEADER, size - 8):
            raise ValueError(f"header length {n} exceeds the file ({size:,} bytes)")
        header = json.loads(f.read(n))
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    header.pop("__metadata__", None)
    out: dict[str, FileTensor] = {}
    for name, info in header.items():
        dtype = DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{name}: unknown dtype {info['dtype']!r}")
        shape = torch.Size(int(s) for s in info["shape"])
        begin, end = (int(v) for v in info["data_offsets"])
        nbytes = shape.numel() * torch.empty((), dtype=dtype).element_size()
        if end - begin != nbytes or begin < 0 or 8 + n + end > size:
            raise ValueError(f"{name}: data offsets {begin}..{end} do not fit its shape {list(shape)} "
                             f"{info['dtype']} or the file ({size:,} bytes: truncated?)")
        out[name] = FileTensor(path, 8 + n + begin, dtype, shape)
    return out


def read_safetensors(path: str | os.PathLike) -> dict[str, Tensor]:
    """All tensors of the file, each a fresh CPU tensor (nothing memory-mapped)."""
    return {name: t.load() for name, t in read_header(path).items()}
