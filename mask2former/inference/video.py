"""Videos through PyAV (any container/codec FFmpeg reads): overlay video, per-frame area CSV
and, with ``--save-frames``, per-frame label PNGs. Streamed: frames are decoded in a thread
ahead of the network, segmented by the same :class:`Pipeline` as images, and encoded in
order as they finish, so memory does not grow with the video's length.

Outputs for ``clip.mp4`` (name ``clip``): ``clip_overlay.mp4`` (H.264 via libx264 when PyAV
has it, else MPEG-4 Part 2, said on stderr; no B-frames; the source's size, and its frame
rate divided by ``--frame-stride``), ``clip_frames.csv`` (frame, time_s, pixels per class)
and ``clip/frame_NNNNNN_labels.png``. Frame numbers count decoded frames from 0.

Resumable: the selected frames are encoded in chunks of ``--video-chunk`` frames, each
committed (renamed, journaled) when complete, see :mod:`.video_chunks`; a rerun redoes only
the chunks not committed. Under torchrun every process takes a contiguous run of chunks, and
rank 0 joins them by copying their packets (no re-encoding). Frames, label PNGs and the CSV
are those of a single uninterrupted process; the H.264 stream differs only in having a
keyframe where each chunk starts.
"""
from __future__ import annotations

import argparse
import os
import queue
import re
import shutil
import sys
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Iterator, Optional

import numpy as np

from ..io import atomic_path
from ..segmenter import SegmentationResult, Segmenter
from .inputs import InputItem
from .pipeline import Pipeline
from .resume import Journal
from .video_chunks import DEFAULT_CHUNK_FRAMES, ChunkPlan, ChunkSet, ChunkWriter, done_chunks, plan_chunks
from .writer import WriteOptions, class_pixels, shown


@dataclass(frozen=True)
class VideoOptions:
    save_frames: bool = False
    stride: int = 1
    start: float = 0.0
    end: Optional[float] = None
    num_workers: int = 2
    fps: Optional[float] = None  # frame rate of folders of frames
    chunk: int = DEFAULT_CHUNK_FRAMES  # frames per resumable chunk

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "VideoOptions":
        return cls(args.save_frames, args.frame_stride, args.start, args.end, args.num_workers, args.video_fps,
                   args.video_chunk)

    def selection(self, path: str) -> str:
        """What identifies a video's chunks: the file and which of its frames are segmented."""
        return f"{os.path.abspath(path)}|{self.stride}|{self.start}|{self.end}|{self.fps}|{self.save_frames}"


@dataclass(frozen=True)
class FrameItem(InputItem):
    rgb: Any = field(default=None, compare=False, repr=False)
    frame: int = 0  # number among the decoded frames
    time: float = 0.0


def video_stem(path: str) -> str:
    return os.path.splitext(os.path.basename(os.path.normpath(path)))[0]


def video_outputs(stem: str, vopts: VideoOptions, overlay: bool = True) -> list[str]:
    return ([stem + "_overlay.mp4"] if overlay else []) + [stem + "_frames.csv"]


def _is_selected(n: int, t: float, vopts: VideoOptions) -> Optional[bool]:
    """Whether frame ``n`` at ``t`` seconds is segmented; None once past ``--end``."""
    if vopts.end is not None and t >= vopts.end:
        return None
    return t >= vopts.start and n % vopts.stride == 0


def frame_files(folder: str) -> list[str]:
    """A folder of numbered frames in number order (``frame_9`` before ``frame_10``)."""
    from .inputs import IMAGE_EXTENSIONS

    def number_key(name: str) -> list[Any]:
        return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]

    names = [f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")]
    return [os.path.join(folder, f) for f in sorted(names, key=number_key)]


def _decoded_frames(path: str, fps: Fraction) -> Iterator[tuple[int, float, Any]]:
    """(frame number, time, HxWx3 uint8 or a loader) of a video file or a folder of frames."""
    if os.path.isdir(path):
        from ..image_io import to_rgb_array

        for n, f in enumerate(frame_files(path)):
            yield n, n / float(fps), lambda f=f: to_rgb_array(f)
        return
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # FFmpeg's own decoding threads
        for n, frame in enumerate(container.decode(stream)):
            t = float(frame.time) if frame.time is not None else n / float(fps)
            yield n, t, frame.to_ndarray(format="rgb24")


def _selected(path: str, vopts: VideoOptions, fps: Fraction, lo: int = 0, hi: Optional[int] = None
              ) -> Iterator[tuple[int, float, Any]]:
    """The k-th selected frames, lo <= k < hi."""
    k = 0
    for n, t, rgb in _decoded_frames(path, fps):
        keep = _is_selected(n, t, vopts)
        if keep is None or (hi is not None and k >= hi):
            break
        if keep:
            if k >= lo:
                yield n, t, rgb
            k += 1


def count_selected(path: str, vopts: VideoOptions, fps: Fraction) -> int:
    """Selected frames, from the packets' timestamps (no decoding)."""
    if os.path.isdir(path):
        times = [n / float(fps) for n in range(len(frame_files(path)))]
    else:
        import av

        with av.open(path) as c:
            s = c.streams.video[0]
            times = sorted(float(p.pts * p.time_base) for p in c.demux(s) if p.pts is not None)
    count = 0
    for n, t in enumerate(times):
        keep = _is_selected(n, t, vopts)
        if keep is None:
            break
        count += bool(keep)
    return count


def source_format(path: str, fps: Optional[float]) -> tuple[Fraction, int, int]:
    """(frame rate, width, height) of a video file, or of a folder of frames at ``fps``."""
    if os.path.isdir(path):
        from ..image_io import to_rgb_array

        files = frame_files(path)
        if not files:
            raise ValueError(f"{path}: no frames in this folder")
        h, w = to_rgb_array(files[0]).shape[:2]
        return Fraction(fps or 25).limit_denominator(1001), w, h
    import av

    try:
        with av.open(path) as c:
            s = c.streams.video[0]
            return Fraction(s.average_rate or 25), s.codec_context.width, s.codec_context.height
    except (av.error.FFmpegError, IndexError) as e:
        raise ValueError(f"{path}: cannot read this video ({e})") from None


def _prefetch(items: Iterator[Any], size: int) -> Iterator[Any]:
    """Run ``items`` in a thread, at most ``size`` ahead (decoding overlaps the network)."""
    q: queue.Queue = queue.Queue(maxsize=max(1, size))
    end = object()
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            for x in items:
                q.put(x)
        except BaseException as e:  # re-raised in the consumer
            failure.append(e)
        finally:
            q.put(end)

    threading.Thread(target=produce, daemon=True).start()
    while True:
        x = q.get()
        if x is end:
            break
        yield x
    if failure:
        raise failure[0]


def encoder_name() -> str:
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def _plan(path: str, out: str, vopts: VideoOptions, world: int) -> tuple[ChunkPlan, Fraction, int, int]:
    """(chunk plan, source frame rate, width, height) of one video; the same on every process."""
    source_rate, width, height = source_format(path, vopts.fps)
    total = count_selected(path, vopts, source_rate)  # from the packets' timestamps: no decoding
    return plan_chunks(out, vopts.selection(path), total, vopts.chunk, world), source_rate, width, height


def segment_video_part(seg: Segmenter, path: str, opts: WriteOptions, vopts: VideoOptions, journal: Journal,
                       rank: int, world: int) -> list[int]:
    """This process's share of one video: its chunks that no earlier run committed, each
    encoded to its chunk files. Returns the chunks it committed."""
    stem = video_stem(path)
    plan, source_rate, width, height = _plan(path, opts.out, vopts, world)
    done = done_chunks(plan, opts.overlay)  # --overwrite removed them with the journals
    todo = [c for c in plan.rank_chunks(rank, world) if c not in done]
    if not todo:
        return []
    rate, codec = source_rate / vopts.stride, encoder_name() if opts.overlay else ""
    chunks = ChunkSet(plan, todo, rank, lambda base: ChunkWriter(base, width, height, rate, opts.overlay, codec))
    if vopts.save_frames:
        os.makedirs(os.path.join(opts.out, stem), exist_ok=True)
    lo, hi = plan.bounds(todo[0])[0], plan.bounds(todo[-1])[1]
    wanted = set(todo)

    def frames() -> Iterator[FrameItem]:
        for k, (n, t, rgb) in enumerate(_selected(path, vopts, source_rate, lo, hi), start=lo):
            if plan.chunk_of(k) in wanted:  # committed chunks between ours are decoded, not redone
                yield FrameItem(k, f"{path} frame {n}", f"{stem}/frame_{n:06d}", rgb, n, t)

    def load(item: InputItem) -> np.ndarray:
        assert isinstance(item, FrameItem)
        rgb = item.rgb() if callable(item.rgb) else item.rgb
        if rgb.shape[:2] != (height, width):
            raise ValueError(f"{item.path}: frame of {rgb.shape[1]}x{rgb.shape[0]}, the video is {width}x{height}")
        return rgb

    def write(result: SegmentationResult, item: InputItem) -> None:
        assert isinstance(item, FrameItem)
        picture = shown(result, opts.show_threshold)
        if vopts.save_frames:
            picture.save_labels(os.path.join(opts.out, item.stem + "_labels.png"))
        row = f"{item.frame},{item.time:.6f}," + ",".join(map(str, class_pixels(picture)))
        chunks.put(item.index, row, picture.overlay() if opts.overlay else None)

    def fail(item: InputItem, message: str) -> None:
        journal.failed(item.path, message)
        chunks.put(item.index, None, None)

    pipeline = Pipeline(seg, vopts.num_workers)
    try:
        pipeline.run(_prefetch(frames(), pipeline.ahead), write, fail, load=load)
    except BaseException:
        chunks.abandon()
        raise
    chunks.finish()
    return chunks.committed


def join_parts(path: str, opts: WriteOptions, vopts: VideoOptions, world: int, names: list[str]) -> list[str]:
    """Rank 0, after every process is done: the chunks into the video's final files."""
    stem = video_stem(path)
    plan = _plan(path, opts.out, vopts, world)[0]
    bases = [plan.base(c) for c in range(plan.count)]
    missing = [c for c, b in enumerate(bases) if not os.path.exists(b + ".csv")]
    if missing:
        raise ValueError(f"{path}: {len(missing)} chunk(s) of the video were not written (run the command again)")
    header = "frame,time_s," + ",".join(_csv_name(n) for n in names + ["(void)"]) + "\n"
    with atomic_path(os.path.join(opts.out, stem + "_frames.csv")) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(header)
            for b in bases:
                with open(b + ".csv", encoding="utf-8") as part:
                    shutil.copyfileobj(part, f)
    outputs = [stem + "_frames.csv"]
    if opts.overlay:
        with atomic_path(os.path.join(opts.out, stem + "_overlay.mp4")) as tmp:
            _concat([b + ".mp4" for b in bases], tmp)
        outputs.insert(0, stem + "_overlay.mp4")
    shutil.rmtree(plan.folder, ignore_errors=True)  # the final files are in place: chunks no longer needed
    return outputs


def _csv_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"' if any(c in name for c in ',"\n') else name


def _concat(parts: list[str], target: str) -> None:
    """Copy the packets of same-settings H.264 parts into one file, shifting timestamps."""
    import av

    with av.open(target, "w", format="mp4") as out:
        ostream = None
        offset = 0
        for p in parts:
            if not os.path.exists(p) or os.path.getsize(p) == 0:  # a process with no frames to encode
                continue
            with av.open(p) as c:
                s = c.streams.video[0]
                end = offset
                for packet in c.demux(s):
                    if packet.dts is None:  # the demuxer's end-of-stream marker
                        continue
                    if ostream is None:  # from the first part with frames (a part may have none)
                        ostream = out.add_stream_from_template(s)
                    packet.pts += offset
                    packet.dts += offset
                    end = max(end, packet.pts + (packet.duration or 0))
                    packet.stream = ostream
                    out.mux(packet)
                offset = end


def say_encoder() -> None:
    name = encoder_name()
    if name != "libx264":
        print(f"note: PyAV has no libx264 here; overlay videos are MPEG-4 Part 2 ({name})", file=sys.stderr)
