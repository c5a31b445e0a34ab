"""Dynamic batching: concurrent requests share forwards, in one model thread.

Requests wait in a bounded queue. The model thread takes the oldest request and every queued
request with the same key (options and processed size) up to ``max_batch_size``, waiting at
most ``max_wait_s`` after the oldest one arrived for more to come. A key groups only images
that ``Segmenter`` itself would batch together, so an answer never depends on which requests
shared its forward. torch releases the GIL, so the event loop keeps serving meanwhile.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Hashable, Optional

import numpy as np

from ..segmenter import SegmentationError, Segmenter


class QueueFull(Exception):
    """The queue holds ``queue_size`` requests; ``retry_after`` is a guess in seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"server busy, retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass
class Job:
    rgb: np.ndarray  # (H, W, 3) uint8
    segmenter: Segmenter  # the request's options, sharing the one model
    key: Hashable
    future: Future = field(default_factory=Future)
    arrived: float = field(default_factory=time.monotonic)


class Batcher:
    """``submit(rgb, segmenter)`` -> a Future of the SegmentationResult.

    on_batch(size, seconds) is told about every forward (metrics). warmup: a segmenter run
    once on a small image before ``ready`` turns true.
    """

    def __init__(self, max_batch_size: int, max_wait_s: float, queue_size: int,
                 on_batch: Optional[Callable[[int, float], None]] = None, warmup: Optional[Segmenter] = None):
        self.max_batch_size, self.max_wait_s, self.queue_size = max_batch_size, max_wait_s, queue_size
        self.on_batch = on_batch
        self._warmup = warmup
        self._pending: deque[Job] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._seconds_per_batch = 0.5  # running estimate, for Retry-After
        self.ready = threading.Event()
        self.warmup_error: Optional[str] = None
        self._thread = threading.Thread(target=self._run, name="mask2former-model", daemon=True)

    # -- the request side ----------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, rgb: np.ndarray, segmenter: Segmenter, options: Hashable) -> Future:
        key = (options, segmenter.processed_size(*rgb.shape[:2]))
        job = Job(rgb, segmenter, key)
        with self._cond:
            if self._stopping:
                raise QueueFull(1)
            if len(self._pending) >= self.queue_size:
                batches = -(-len(self._pending) // self.max_batch_size)
                raise QueueFull(max(1, round(batches * self._seconds_per_batch)))
            self._pending.append(job)
            self._cond.notify()
        return job.future

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    def stop(self, timeout: Optional[float] = None) -> None:
        """Finish what is queued, then end the model thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- the model thread ----------------------------------------------------------------
    def _run(self) -> None:
        try:
            if self._warmup is not None:
                self._warmup([np.full((64, 64, 3), 128, dtype=np.uint8)])
            self.ready.set()
        except Exception as e:  # not ready; requests still get their (failing) answers
            self.warmup_error = f"warm-up failed: {type(e).__name__}: {e}"
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._forward(batch)

    def _next_batch(self) -> Optional[list[Job]]:
        with self._cond:
            while True:
                while self._pending and self._pending[0].future.cancelled():  # timed out while queued
                    self._pending.popleft()
                if self._pending:
                    break
                if self._stopping:
                    return None
                self._cond.wait()
            first = self._pending[0]
            deadline = first.arrived + self.max_wait_s
            while True:
                same = [j for j in self._pending if j.key == first.key and not j.future.cancelled()]
                wait = deadline - time.monotonic()
                if len(same) >= self.max_batch_size or wait <= 0 or self._stopping:
                    break
                self._cond.wait(wait)
            batch = same[: self.max_batch_size]
            taken = set(map(id, batch))
            self._pending = deque(j for j in self._pending if id(j) not in taken and not j.future.cancelled())
        return [j for j in batch if j.future.set_running_or_notify_cancel()]

    def _forward(self, batch: list[Job]) -> None:
        if not batch:
            return
        start = time.perf_counter()
        try:
            results = list(batch[0].segmenter.stream([j.rgb for j in batch], batch_size=len(batch)))
        except Exception as e:  # e.g. out of memory: these requests fail, the server goes on
            for j in batch:
                j.future.set_exception(e)
            return
        seconds = time.perf_counter() - start
        self._seconds_per_batch = 0.8 * self._seconds_per_batch + 0.2 * seconds
        if self.on_batch is not None:
            self.on_batch(len(batch), seconds)
        for j, r in zip(batch, results):
            if isinstance(r, SegmentationError):
                j.future.set_exception(ValueError(r.message))
            else:
                j.future.set_result(r)

