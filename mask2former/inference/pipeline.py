"""Overlapped inference: decode/resize the next images and encode/write finished ones in
worker threads while the network runs on the current batch.

    inputs -> [decode pool, ordered, <= ahead images] -> batches of one processed size
           -> forward + post-processing (this thread) -> [write pool, <= ahead results]

Memory is bounded: at most ``ahead`` images decoding ahead, ``ahead`` waiting for a full
batch, and ``ahead`` results waiting to be written.
Batches only ever group images of one processed size (as :class:`Segmenter` does), so
results do not depend on the batch size, the worker count or the order images arrive in.
PIL decoding/encoding, zlib and numpy release the GIL, so threads are enough.
``num_workers=0`` runs everything in turn in this thread (the old sequential loop).
"""
from __future__ import annotations

import collections
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np
import torch

from ..image_io import ImageLoadError, to_rgb_array
from ..segmenter import SegmentationResult, Segmenter
from .inputs import InputItem

Write = Callable[[SegmentationResult, InputItem], None]
Fail = Callable[[InputItem, str], None]
Check = Callable[[InputItem, int, int], None]


@dataclass
class Decoded:
    item: InputItem
    rgb: Optional[np.ndarray] = None
    tensor: Optional[torch.Tensor] = None
    error: Optional[str] = None


class _Inline:
    """Executor stand-in that runs each task at once (num_workers=0)."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        f: Future = Future()
        try:
            f.set_result(fn(*args))
        except BaseException as e:  # delivered through the future, like a pool would
            f.set_exception(e)
        return f

    def shutdown(self, wait: bool = True) -> None:
        pass


class Pipeline:
    """Run ``seg`` over a stream of items; every item ends in exactly one ``write`` or ``fail``
    call. ``check(item, height, width)`` may raise ValueError to refuse an image: for files
    it runs on the header's size, before the pixels are decoded."""

    def __init__(self, seg: Segmenter, num_workers: int = 2, check: Optional[Check] = None):
        self.seg = seg
        self.num_workers = max(0, int(num_workers))
        self.check = check
        self.ahead = max(2 * self.num_workers, 4 * seg.batch_size, 1)

    def _executor(self, name: str) -> Any:
        if self.num_workers == 0:
            return _Inline()
        return ThreadPoolExecutor(self.num_workers, thread_name_prefix=f"segment-{name}")

    def _decode(self, item: InputItem, load: Optional[Callable[[InputItem], np.ndarray]] = None) -> Decoded:
        try:
            if self.check is not None and load is None:
                size = _header_size(item.path)
                if size is not None:
                    self.check(item, *size)
            rgb = to_rgb_array(item.path) if load is None else load(item)
            if self.check is not None:
                self.check(item, *rgb.shape[:2])
            return Decoded(item, rgb, self.seg.preprocess(rgb))
        except (ImageLoadError, ValueError) as e:
            return Decoded(item, error=str(e))
        except Exception as e:  # anything else unreadable: one line, the run goes on
            return Decoded(item, error=f"{item.path}: cannot read image ({e})")

    def _decoded(self, items: Iterable[InputItem], pool: Any, load: Any) -> Iterator[Decoded]:
        """Decoded items in input order, at most ``ahead`` in flight."""
        pending: collections.deque[Future] = collections.deque()
        for item in items:
            pending.append(pool.submit(self._decode, item, load))
            if len(pending) >= self.ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def run(self, items: Iterable[InputItem], write: Write, fail: Fail,
            load: Optional[Callable[[InputItem], np.ndarray]] = None) -> None:
        """``load(item)`` gives an item's pixels (default: read the file ``item.path``)."""
        decode_pool, write_pool = self._executor("decode"), self._executor("write")
        writing: collections.deque[tuple[Future, InputItem]] = collections.deque()

        def drain(limit: int) -> None:
            while len(writing) > limit:
                future, item = writing.popleft()
                try:
                    future.result()
                except OSError as e:
                    fail(item, f"{item.path}: could not write outputs ({e})")
                except Exception as e:
                    fail(item, f"{item.path}: could not write outputs ({type(e).__name__}: {e})")

        def forward(batch: list[Decoded]) -> None:
            try:
                results = self.seg.predict_arrays([d.rgb for d in batch], [d.item.path for d in batch],
                                                  [d.tensor for d in batch] if batch[0].tensor is not None else None)
            except (RuntimeError, MemoryError) as e:  # e.g. out of GPU memory: these images fail, others go on
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                for d in batch:
                    fail(d.item, f"{d.item.path}: inference failed ({reason})")
                return
            for d, res in zip(batch, results):
                d.rgb = d.tensor = None  # the result holds the image; drop the input copy early
                writing.append((write_pool.submit(write, res, d.item), d.item))
            drain(self.ahead)

        buckets: dict[tuple[int, int], list[Decoded]] = {}
        waiting = 0
        bs = self.seg.batch_size
        try:
            for d in self._decoded(items, decode_pool, load):
                if d.error is not None:
                    fail(d.item, d.error)
                    continue
                assert d.rgb is not None
                key = tuple(d.tensor.shape[-2:]) if d.tensor is not None else self.seg.processed_size(*d.rgb.shape[:2])
                bucket = buckets.setdefault(key, [])
                bucket.append(d)
                waiting += 1
                if len(bucket) >= bs:
                    forward(buckets.pop(key))
                    waiting -= bs
                elif waiting >= self.ahead:  # bounded memory: run the fullest partial batch now
                    fullest = max(buckets, key=lambda k: len(buckets[k]))
                    waiting -= len(buckets[fullest])
                    forward(buckets.pop(fullest))
            for key in list(buckets):
                forward(buckets.pop(key))
            drain(0)
        finally:
            decode_pool.shutdown(wait=True)
            write_pool.shutdown(wait=True)


def _header_size(path: str) -> Optional[tuple[int, int]]:
    """(height, width) from the file's header, without decoding (an EXIF rotation swaps them,
    which changes the estimate little); None when unreadable: the decoder then says why."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception:
        return None
    return h, w
