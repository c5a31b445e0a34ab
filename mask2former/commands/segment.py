"""``mask2former segment``: files, folders, globs, ``--list`` files and videos in; standard
files out, per image and for the whole run. A bad input costs one error line, never the rest
of the run. Under ``torchrun`` every process segments its share and rank 0 writes the
run-level files; a rerun resumes (see :mod:`mask2former.inference`)."""
from __future__ import annotations

import argparse
import glob
import importlib
import os
import sys
import threading
import time
import uuid
import warnings
from typing import Any, Iterator

from .. import tta
from ..inference.inputs import InputItem, InputStream, is_video
from ..inference.video_chunks import DEFAULT_CHUNK_FRAMES
from ..inference.writer import DEFAULT_SHOW_THRESHOLD

DEFAULT_NUM_WORKERS = 2


def add_parser(sub: argparse._SubParsersAction, default_model: str) -> None:
    p = sub.add_parser("segment", help="segment images, folders, globs, lists or videos into label/overlay/"
                                       "panoptic/instance files (resumable; under torchrun, in parallel)")
    p.add_argument("inputs", nargs="*", help="image or video files, folders (searched recursively) or glob patterns")
    p.add_argument("--list", metavar="FILE", help="file with one input path per line, '-' for stdin; read as it "
                                                  "is consumed (default: none)")
    p.add_argument("--model", default=default_model, help="HF folder, hub id or original .pkl (default: %(default)s)")
    p.add_argument("--task", choices=["semantic", "instance", "panoptic"],
                   help="default: the checkpoint's own task")
    p.add_argument("--out", required=True, help="output folder (required; a rerun into it resumes)")
    p.add_argument("--overwrite", action="store_true", help="redo every image, even those a previous run finished "
                                                            "(default: skip them)")
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default: %(default)s)")
    p.add_argument("--num-workers", type=int, default=DEFAULT_NUM_WORKERS,
                   help="threads decoding the next images and writing finished ones while the network runs; "
                        "0 does everything in turn (default: %(default)s)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available; under "
                                                  "torchrun each process's own GPU)")
    p.add_argument("--resize", choices=["original", "config"], default="original",
                   help="original: the original's test-time resize for the checkpoint's dataset (default); "
                        "config: the checkpoint's preprocessor_config.json")
    p.add_argument("--threshold", type=float, default=None,
                   help="panoptic: object mask threshold (default 0.8); instance: minimum score kept in "
                        "NAME_instances.json (default 0); not for the semantic task")
    p.add_argument("--show-threshold", type=float, default=None,
                   help=f"instance task: minimum score of the instances painted in the labels/overlay and counted "
                        f"in the area tables; NAME_instances.json keeps all (default: {DEFAULT_SHOW_THRESHOLD})")
    p.add_argument("--no-overlay", action="store_true", help="skip the colour overlay PNGs (default: write them)")
    p.add_argument("--max-pixels", type=int, default=None,
                   help="largest image (width x height) to open; larger files are refused as possible "
                        "decompression bombs (default: PIL's limit, 89,478,485)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16", "int8"], default="fp32",
                   help="fp32: exact (default); bf16: CPUs with AMX/AVX512-BF16 or GPUs; fp16: GPUs; int8: CPU "
                        "dynamic quantisation of Linear layers. Faster modes change a few pixels, see "
                        "docs/performance.md; unavailable ones fall back to fp32 with a message")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: one per physical core unless OMP_NUM_THREADS is set)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the backbone (compiles for seconds per new image size; see "
                        "docs/performance.md; default: off)")
    p.add_argument("--backend", choices=["torch", "onnxruntime", "openvino"], default=None,
                   help="runtime (default: onnxruntime for a .onnx --model, else torch); see docs/export.md")
    v = p.add_argument_group("videos (files such as .mp4/.mov/.mkv, read through PyAV)")
    v.add_argument("--save-frames", action="store_true",
                   help="also write each segmented frame's label PNG (default: video, area CSV only)")
    v.add_argument("--frame-stride", type=int, default=1, help="segment every K-th frame (default: %(default)s)")
    v.add_argument("--start", type=float, default=0.0, help="first second to segment (default: %(default)s)")
    v.add_argument("--end", type=float, default=None, help="second to stop at (default: the end)")
    v.add_argument("--video-fps", type=float, default=None, metavar="FPS",
                   help="treat every folder given as the numbered frames of one video at FPS frames/s "
                        "(default: a folder is a set of images)")
    v.add_argument("--video-chunk", type=int, default=DEFAULT_CHUNK_FRAMES, metavar="N",
                   help="frames per resumable chunk: an interrupted video is resumed from its last complete "
                        "chunk (default: %(default)s)")
    tta.add_arguments(p)
    p.set_defaults(func=run)


def check_options(args: argparse.Namespace) -> None:
    """One clear ValueError per option that cannot run."""
    if not args.inputs and args.list is None:
        raise ValueError("nothing to segment: give image/video files, folders, globs or --list FILE")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1; got {args.batch_size}")
    if args.num_workers < 0:
        raise ValueError(f"--num-workers must be 0 or more; got {args.num_workers}")
    for name in ("threshold", "show_threshold"):
        value = getattr(args, name)
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1]; got {value}")
    if args.max_pixels is not None and args.max_pixels < 1:
        raise ValueError(f"--max-pixels must be a positive number of pixels; got {args.max_pixels}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be at least 1; got {args.threads}")
    if args.window_overlap != tta.DEFAULT_WINDOW_OVERLAP and not args.sliding_window:
        raise ValueError("--window-overlap applies to --sliding-window, which is not given")
    if (args.tta_no_flip or list(args.tta_scales) != list(tta.DEFAULT_TTA_SCALES)) and not args.tta:
        raise ValueError("--tta-scales and --tta-no-flip apply to --tta, which is not given")
    if args.frame_stride < 1:
        raise ValueError(f"--frame-stride must be at least 1; got {args.frame_stride}")
    if args.video_chunk < 1:
        raise ValueError(f"--video-chunk must be at least 1 frame; got {args.video_chunk}")
    if args.video_fps is not None and not args.video_fps > 0:
        raise ValueError(f"--video-fps must be a positive frame rate; got {args.video_fps}")
    if args.start < 0 or (args.end is not None and args.end <= args.start):
        raise ValueError(f"--start/--end must satisfy 0 <= start < end; got {args.start}, {args.end}")


def check_task_options(args: argparse.Namespace, task: str) -> None:
    if args.threshold is not None and task == "semantic":
        raise ValueError("--threshold applies to the panoptic and instance tasks, not semantic")
    if args.show_threshold is not None and task != "instance":
        raise ValueError(f"--show-threshold applies to the instance task, not {task}")


def _prepare_output(out: str) -> None:
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, f".write-test-{os.getpid()}")
        open(probe, "w").close()
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"{out}: output folder is not writable ({e.strerror or e})") from None


def _build_segmenter(args: argparse.Namespace) -> Any:
    from ..precision import PrecisionFallbackWarning
    from ..segmenter import Segmenter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionFallbackWarning)  # reported below, on one line
        seg = Segmenter(args.model, task=args.task, device=args.device, resize=args.resize,
                        batch_size=args.batch_size, threshold=args.threshold, **tta.segmenter_kwargs(args),
                        precision=args.precision, num_threads=args.threads, compile=args.compile,
                        backend=args.backend)
    if seg.precision.message:
        print(f"warning: {seg.precision.message}", file=sys.stderr)
    elif args.precision != "fp32":
        print(f"precision: {seg.precision.path}", file=sys.stderr)
    return seg


def _limit_pixels(max_pixels: Any) -> None:
    from PIL import Image

    if max_pixels is not None:
        Image.MAX_IMAGE_PIXELS = int(max_pixels)
    # PIL warns (raw, once per file) between the limit and twice it; the error above it names
    # the file and --max-pixels, so the warning only adds noise.
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)


def _broadcast(value: Any) -> Any:
    import torch.distributed as dist

    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def run(args: argparse.Namespace) -> int:
    from .. import distributed as dist_utils

    check_options(args)
    _limit_pixels(args.max_pixels)
    rank, world, dist_device = dist_utils.init_from_env()
    try:
        if world > 1 and args.device is None:
            args.device = str(dist_device)
        if world > 1 and args.list == "-":
            raise ValueError("--list - (stdin) cannot be shared by torchrun processes; give a file")
        code = _run(args, rank, world)
    except (OSError, ValueError) as e:
        if rank == 0:
            print(f"error: {e}", file=sys.stderr)
        code = 1
    dist_utils.cleanup()
    return code


def _run(args: argparse.Namespace, rank: int, world: int) -> int:
    from .. import distributed as dist_utils
    from ..inference import resume
    from ..inference.memory import MemoryCheck
    from ..inference.pipeline import Pipeline
    from ..inference.writer import WriteOptions, output_names, write_image

    videos, images = _split_videos(args)
    if videos and not _have_pyav():  # before any model loads or file is written
        raise ValueError(f"{videos[0]}: reading videos needs PyAV: pip install 'mask2former[video]' (or pip install av)")
    problem = None
    if rank == 0:
        try:
            _prepare_output(args.out)
            if args.overwrite:
                resume.reset(args.out)
            resume.remove_stale_temporaries(args.out)
        except (OSError, ValueError) as e:
            problem = str(e)
    dist_utils.barrier()
    problem = _broadcast(problem)  # every process stops, none waits for the others forever
    if problem:
        raise ValueError(problem)
    run_id = _broadcast(time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6])
    seg = _build_segmenter(args)
    check_task_options(args, seg.task)
    show = args.show_threshold if args.show_threshold is not None else DEFAULT_SHOW_THRESHOLD
    opts = WriteOptions(args.out, seg.task, overlay=not args.no_overlay, show_threshold=show)
    journal = resume.Journal(args.out, run_id, rank)
    finished = set() if args.overwrite else resume.finished_keys(args.out)
    stream = InputStream(images, args.list, args.out) if images or args.list is not None else None

    def todo(report: Any) -> Iterator[InputItem]:
        """Items still to segment: a previous run's are skipped when all their files exist."""
        if stream is None:
            return
        for item in stream.items(report):
            if item.key in finished and all(os.path.exists(os.path.join(args.out, n))
                                            for n in output_names(item.stem, opts)):
                continue
            yield item

    def mine() -> Iterator[InputItem]:
        report = (lambda line: journal.failed(line.split(": ", 1)[0], line)) if rank == 0 else (lambda line: None)
        for k, item in enumerate(todo(report)):
            if k % world == rank:
                yield item

    def write(result: Any, item: InputItem) -> None:
        rec = write_image(result, item.stem, opts)
        journal.done({"key": item.key, "i": item.index, "input": item.path, "stem": item.stem, **rec})

    def fail(item: InputItem, message: str) -> None:
        journal.failed(item.path, message, item.index)

    total = None if args.list == "-" or stream is None else sum(1 for _ in todo(lambda line: None))
    progress = _Progress(args.out, run_id, total, bar=stream is not None) if rank == 0 else None
    memory = MemoryCheck(seg)
    fatal = None  # an error that stops this process; the others still finish and meet below
    try:
        Pipeline(seg, args.num_workers, check=lambda item, h, w: memory(item.path, h, w)).run(
            mine(), write, fail)
        videos = [v for v in videos if not _video_done(v, opts, args, finished)]
        for video in list(videos):
            from ..inference.video import VideoOptions, segment_video_part

            try:
                segment_video_part(seg, video, opts, VideoOptions.from_args(args), journal, rank, world)
            except (OSError, ValueError) as e:  # this video fails (on every rank alike), the rest go on
                journal.failed(video, str(e) if video in str(e) else f"{video}: {e}")
                videos.remove(video)
    except (OSError, ValueError) as e:
        fatal = str(e)
    finally:
        journal.close()
        dist_utils.barrier()  # every process has written its files and journal lines
        if progress is not None:
            progress.close()
    code = 0
    if rank == 0 and fatal is None:
        try:
            code = _finish(args, run_id, world, seg, opts, stream, videos, progress)
        except (OSError, ValueError) as e:
            fatal = str(e)
    if fatal is not None:
        print(f"error: {fatal}", file=sys.stderr)
        code = 1
    return max(code, int(_broadcast(code)))  # every process exits with rank 0's verdict (or its own failure)


def _finish(args: argparse.Namespace, run_id: str, world: int, seg: Any, opts: Any, stream: Any,
            videos: list[str], progress: Any) -> int:
    """Rank 0, once every process is done: videos joined, run-level files, the summary line."""
    from ..inference.summary import write_run_files

    _join_videos(videos, opts, args, run_id, world, seg)
    count, errors = write_run_files(args.out, run_id, stream or [], seg.info)
    skipped = count - (progress.done if progress else 0)
    if stream is not None or errors:
        log = f"; see {os.path.join(args.out, 'errors.jsonl')}" if errors else ""
        print(f"{count} image(s) with complete outputs ({max(skipped, 0)} from earlier runs), {len(errors)} "
              f"failed{log}; outputs in {args.out}", file=sys.stderr)
    return 1 if errors else 0


def _have_pyav() -> bool:
    try:
        importlib.import_module("av")
    except ImportError:
        return False
    return True


def _split_videos(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """(videos, image inputs): video files named or matched by a glob, and with --video-fps
    the folders; a glob matching both kinds feeds both."""
    videos, images = [], []
    for spec in args.inputs:
        if (os.path.isfile(spec) and is_video(spec)) or (args.video_fps and os.path.isdir(spec)):
            videos.append(spec)
        elif glob.has_magic(spec) and not os.path.exists(spec):
            matches = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
            videos += [p for p in matches if is_video(p)]
            if not matches or not all(is_video(p) for p in matches):
                images.append(spec)
        else:
            images.append(spec)
    return videos, images


def _video_key(path: str, args: argparse.Namespace) -> int:
    """A finished video counts as done for the same frame selection only."""
    from ..inference.video import video_stem

    selection = f"{args.frame_stride}:{args.start}:{args.end}:{args.video_fps}:{args.save_frames}"
    return InputItem(-1, path + "\0" + selection, video_stem(path)).key


def _video_done(path: str, opts: Any, args: argparse.Namespace, finished: set) -> bool:
    from ..inference.video import VideoOptions, video_outputs, video_stem

    names = video_outputs(video_stem(path), VideoOptions.from_args(args), opts.overlay)
    return _video_key(path, args) in finished and all(os.path.exists(os.path.join(args.out, n)) for n in names)


def _join_videos(videos: list[str], opts: Any, args: argparse.Namespace, run_id: str, world: int, seg: Any) -> None:
    from ..inference import resume
    from ..inference.video import VideoOptions, join_parts, say_encoder

    if videos:
        say_encoder()
    journal = resume.Journal(args.out, run_id, 0)
    names = [seg.info.id2label[i] for i in range(len(seg.info.id2label))]
    try:
        for video in videos:
            outputs = join_parts(video, opts, VideoOptions.from_args(args), world, names)
            journal.done({"key": _video_key(video, args), "video": video, "outputs": outputs})
            print(f"{video}: {', '.join(outputs)}", file=sys.stderr)
    finally:
        journal.close()


class _Progress:
    """Rank 0's bar: counts every process's journal lines (global progress), prints their
    error lines above the bar."""

    def __init__(self, out: str, run_id: str, total: Any, bar: bool = True):
        from ..inference.resume import LineCounter

        self.counter = LineCounter(out, run_id)
        self.bar = _bar(total) if bar else _NoBar()
        self.done = 0
        self.start = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self._update()

    def _update(self) -> None:
        counts, lines = self.counter.poll()
        for line in lines:
            self.bar.write(f"error: {line}")
        n = counts["done"] + counts["failed_images"]
        self.done = counts["done"]
        if n > self.bar.n:
            self.bar.update(n - self.bar.n)
            self.bar.set_postfix(img_s=f"{n / max(time.time() - self.start, 1e-9):.2f}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._update()
        self.bar.close()


class _NoBar:
    n = 0

    def write(self, line: str) -> None:
        print(line, file=sys.stderr)

    def update(self, n: int) -> None:
        self.n += n

    def set_postfix(self, **kw: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(total: Any) -> Any:
    try:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="img", dynamic_ncols=True)
        # Error lines go above the bar, each on a line of its own.
        bar.write = lambda line: tqdm.write(line, file=sys.stderr)  # type: ignore[method-assign]
        return bar
    except ImportError:
        return _NoBar()
