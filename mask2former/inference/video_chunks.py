"""Resumable videos: a video's selected frames are encoded in fixed-length chunks. Each chunk
is a complete pair of files (overlay ``.mp4``, CSV rows) written under temporary names,
renamed once its last frame is in, then journaled; rank 0 joins the chunks by copying packets
(no re-encoding). A rerun of the same command keeps every journaled chunk whose files exist
and redoes only the others: an interrupted video loses at most the chunk each process had in
flight.

Files, in ``OUT/.mask2former/video-HASH/`` (HASH: the video's path and frame selection):
``chunk-L{length}-{c:06d}.mp4/.csv`` and each process's journal ``chunks-rank{R}.jsonl``
(one line per committed chunk: its number, length, frames and failed frames). The folder is
removed once the video's final files are written.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Optional

import numpy as np

from .resume import journal_dir

DEFAULT_CHUNK_FRAMES = 300


@dataclass(frozen=True)
class ChunkPlan:
    """How one video's ``total`` selected frames are cut: ``count`` chunks of ``length``; the
    last one is open-ended (it takes whatever the decoder still yields)."""
    folder: str
    length: int
    count: int

    def bounds(self, c: int) -> tuple[int, Optional[int]]:
        lo = c * self.length
        return lo, (None if c == self.count - 1 else lo + self.length)

    def chunk_of(self, k: int) -> int:
        return min(k // self.length, self.count - 1)

    def base(self, c: int) -> str:
        return os.path.join(self.folder, f"chunk-L{self.length}-{c:06d}")

    def rank_chunks(self, rank: int, world: int) -> range:
        """A contiguous run of chunks per process (each decodes only up to its own end)."""
        return range(rank * self.count // world, (rank + 1) * self.count // world)


def plan_chunks(out: str, selection: str, total: int, chunk_frames: int, world: int) -> ChunkPlan:
    """Chunks of ``chunk_frames`` frames, shorter when that leaves a process without one."""
    length = max(1, min(chunk_frames, -(-total // world)))
    digest = hashlib.sha1(selection.encode("utf-8")).hexdigest()[:16]
    return ChunkPlan(os.path.join(journal_dir(out), f"video-{digest}"), length, max(1, -(-total // length)))


def done_chunks(plan: ChunkPlan, overlay: bool) -> set[int]:
    """Chunks a previous run committed without failed frames whose files all exist."""
    done = set()
    try:
        names = [f for f in os.listdir(plan.folder) if f.startswith("chunks-rank") and f.endswith(".jsonl")]
    except OSError:
        return done
    for name in names:
        with open(os.path.join(plan.folder, name), encoding="utf-8") as f:
            for line in f:
                try:
                    r = json.loads(line)
                except ValueError:  # a torn last line of a killed run
                    continue
                if r.get("length") == plan.length and r.get("failed") == 0:
                    done.add(int(r["chunk"]))
    exts = (".csv", ".mp4") if overlay else (".csv",)
    return {c for c in done if all(os.path.exists(plan.base(c) + e) for e in exts)}


class ChunkWriter:
    """One chunk: overlay frames and CSV rows arrive as they finish (any order) and are written
    in frame order (a reorder buffer of at most the pipeline's in-flight frames)."""

    def __init__(self, base: str, width: int, height: int, rate: Fraction, overlay: bool, codec: str):
        import av

        self.base = base
        folder, name = os.path.split(base)
        self.tmp = os.path.join(folder, f".tmp-{os.getpid()}-{name}")  # removed by the next run if left
        self.csv = open(self.tmp + ".csv", "w", encoding="utf-8")
        self.container = av.open(self.tmp + ".mp4", "w", format="mp4") if overlay else None
        if self.container is not None:
            self.stream = self.container.add_stream(codec, rate=rate)
            self.stream.width, self.stream.height = width, height
            odd = width % 2 or height % 2  # 4:2:0 needs even sizes; keep the size, not the subsampling
            self.stream.pix_fmt = "yuv444p" if odd and codec == "libx264" else "yuv420p"
            # No B-frames: timestamps then only grow, so chunks can be joined by copying packets.
            self.stream.options = {"bf": "0", "crf": "18"} if codec == "libx264" else {"bf": "0", "qscale": "3"}
            self.stream.codec_context.time_base = Fraction(1) / rate
        self.received = self.failed = 0
        self._next, self._waiting, self._count = 0, {}, 0

    def put(self, k: int, row: Optional[str], rgb: Optional[np.ndarray]) -> None:
        """Frame ``k`` of this chunk (``row`` None: it failed, its place is skipped)."""
        import av

        self.received += 1
        self.failed += row is None
        self._waiting[k] = (row, rgb)
        while self._next in self._waiting:
            row, img = self._waiting.pop(self._next)
            if row is not None:
                self.csv.write(row + "\n")
            if img is not None and self.container is not None:
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts = self._count
                self._count += 1
                for packet in self.stream.encode(frame):
                    self.container.mux(packet)
            self._next += 1

    def _close(self) -> None:
        if self.container is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
            self.container.close()
        self.csv.close()

    def commit(self) -> None:
        """Finish the files and rename them (the CSV last: it marks the pair complete)."""
        self._close()
        if self.container is not None:
            os.replace(self.tmp + ".mp4", self.base + ".mp4")
        os.replace(self.tmp + ".csv", self.base + ".csv")

    def discard(self) -> None:
        try:
            self._close()
        except Exception:  # an encoder in a bad state: the files go anyway
            pass
        for ext in (".mp4", ".csv"):
            if os.path.exists(self.tmp + ext):
                os.unlink(self.tmp + ext)


class ChunkSet:
    """This process's chunks of one video: frames are routed to their chunk's writer, opened
    on the first frame; a chunk is committed and journaled once all its frames are in (the
    open-ended last one, and any the decoder ended early, at :meth:`finish`)."""

    def __init__(self, plan: ChunkPlan, todo: list[int], rank: int, make: Any):
        self.plan, self.todo, self.make = plan, todo, make
        self.writers: dict[int, ChunkWriter] = {}
        self.committed: list[int] = []
        self._lock = threading.Lock()
        os.makedirs(plan.folder, exist_ok=True)
        self._journal = open(os.path.join(plan.folder, f"chunks-rank{rank}.jsonl"), "a", encoding="utf-8")

    def put(self, k: int, row: Optional[str], rgb: Optional[np.ndarray]) -> None:
        """Selected frame ``k`` of the video (numbered from 0 over the whole video)."""
        c = self.plan.chunk_of(k)
        with self._lock:
            writer = self.writers.get(c)
            if writer is None:
                writer = self.writers[c] = self.make(self.plan.base(c))
            writer.put(k - self.plan.bounds(c)[0], row, rgb)
            if self.plan.bounds(c)[1] is not None and writer.received == self.plan.length:
                self._commit(c)

    def _commit(self, c: int) -> None:
        writer = self.writers.pop(c)
        writer.commit()
        record = {"chunk": c, "length": self.plan.length, "frames": writer.received, "failed": writer.failed}
        self._journal.write(json.dumps(record) + "\n")
        self._journal.flush()
        self.committed.append(c)

    def finish(self) -> None:
        """The decoder is done: commit every chunk still open or never started."""
        with self._lock:
            for c in self.todo:
                if c not in self.committed:
                    if c not in self.writers:
                        self.writers[c] = self.make(self.plan.base(c))
                    self._commit(c)
            self._journal.close()

    def abandon(self) -> None:
        """The run stops (an error): chunks in flight are dropped, never committed."""
        with self._lock:
            for writer in self.writers.values():
                writer.discard()
            self.writers.clear()
            if not self._journal.closed:
                self._journal.close()
