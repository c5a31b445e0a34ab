"""Videos through PyAV (any container/codec FFmpeg reads): overlay video, per-frame area CSV
and, with ``--save-frames``, per-frame label PNGs. Streamed: frames are decoded in a thread
ahead of the network, segmented by the same :class:`Pipeline` as images, and encoded in
order as they finish, so memory does not grow with the video's length.

Outputs for ``clip.mp4`` (name ``clip``): ``clip_overlay.mp4`` (H.264 via libx264 when PyAV
has it, else MPEG-4 Part 2, said on stderr; no B-frames; the source's size, and its frame
rate divided by ``--frame-stride``), ``clip_frames.csv`` (frame, time_s, pixels per class)
and ``clip/frame_NNNNNN_labels.png``. Frame numbers count decoded frames from 0.

Under torchrun the selected frames are split into one contiguous range per process; each
encodes its range to ``OUT/.mask2former/clip.partR.mp4`` (+ CSV rows), and rank 0 joins the
parts by copying their packets (no re-encoding). Frames, label PNGs and the CSV are those of
a single process; the H.264 stream differs only in having a keyframe where each part starts.
A video is redone whole when a run is interrupted (finished videos are skipped).
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
from .resume import Journal, journal_dir
from .writer import WriteOptions, class_pixels, shown


@dataclass(frozen=True)
class VideoOptions:
    save_frames: bool = False
    stride: int = 1
    start: float = 0.0
    end: Optional[float] = None
    num_workers: int = 2
    fps: Optional[float] = None  # frame rate of folders of frames

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "VideoOptions":
        return cls(args.save_frames, args.frame_stride, args.start, args.end, args.num_workers, args.video_fps)


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


class _PartWriter:
    """One process's part of a video: overlay frames and CSV rows arrive as they finish and
    are written in frame order (a reorder buffer of at most the pipeline's in-flight frames)."""

    def __init__(self, path: str, width: int, height: int, rate: Fraction, overlay: bool):
        import av

        self.path = path
        self.csv = open(path + ".csv", "w", encoding="utf-8")
        self.container = av.open(path + ".mp4", "w", format="mp4") if overlay else None
        if self.container is not None:
            codec = encoder_name()
            self.stream = self.container.add_stream(codec, rate=rate)
            self.stream.width, self.stream.height = width, height
            odd = width % 2 or height % 2  # 4:2:0 needs even sizes; keep the size, not the subsampling
            self.stream.pix_fmt = "yuv444p" if odd and codec == "libx264" else "yuv420p"
            # No B-frames: timestamps then only grow, so parts can be joined by copying packets.
            self.stream.options = {"bf": "0", "crf": "18"} if codec == "libx264" else {"bf": "0", "qscale": "3"}
            self.stream.codec_context.time_base = Fraction(1) / rate
        self._next, self._waiting, self._count = 0, {}, 0
        self._lock = threading.Lock()

    def put(self, k: int, row: Optional[str], rgb: Optional[np.ndarray]) -> None:
        """Frame ``k`` of this part (``row`` None: it failed, its place is skipped)."""
        import av

        with self._lock:
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

    def close(self) -> None:
        if self.container is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
            self.container.close()
        self.csv.close()


def segment_video_part(seg: Segmenter, path: str, opts: WriteOptions, vopts: VideoOptions, journal: Journal,
                       rank: int, world: int) -> None:
    """This process's share of one video: its frame range, encoded to its part file."""
    import av

    stem = video_stem(path)
    source_rate, width, height = source_format(path, vopts.fps)
    total = count_selected(path, vopts, source_rate) if world > 1 else None
    lo, hi = (0, None) if total is None else (rank * total // world, (rank + 1) * total // world)
    rate = source_rate / vopts.stride
    part = _PartWriter(os.path.join(journal_dir(opts.out), f"{stem}.part{rank}"), width, height, rate, opts.overlay)
    if vopts.save_frames:
        os.makedirs(os.path.join(opts.out, stem), exist_ok=True)

    def frames() -> Iterator[FrameItem]:
        for k, (n, t, rgb) in enumerate(_selected(path, vopts, source_rate, lo, hi)):
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
        part.put(item.index, row, picture.overlay() if opts.overlay else None)

    def fail(item: InputItem, message: str) -> None:
        journal.failed(item.path, message)
        part.put(item.index, None, None)

    pipeline = Pipeline(seg, vopts.num_workers)
    try:
        pipeline.run(_prefetch(frames(), pipeline.ahead), write, fail, load=load)
    finally:
        part.close()


def join_parts(path: str, opts: WriteOptions, vopts: VideoOptions, world: int, names: list[str]) -> list[str]:
    """Rank 0, after every process is done: the parts into the video's final files."""
    stem = video_stem(path)
    parts = [os.path.join(journal_dir(opts.out), f"{stem}.part{r}") for r in range(world)]
    header = "frame,time_s," + ",".join(_csv_name(n) for n in names + ["(void)"]) + "\n"
    with atomic_path(os.path.join(opts.out, stem + "_frames.csv")) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(header)
            for p in parts:
                with open(p + ".csv", encoding="utf-8") as part:
                    shutil.copyfileobj(part, f)
    outputs = [stem + "_frames.csv"]
    if opts.overlay:
        with atomic_path(os.path.join(opts.out, stem + "_overlay.mp4")) as tmp:
            _concat([p + ".mp4" for p in parts], tmp)
        outputs.insert(0, stem + "_overlay.mp4")
    for p in parts:
        for ext in (".csv", ".mp4"):
            if os.path.exists(p + ext):
                os.unlink(p + ext)
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
