"""``mask2former segment``: files, folders and globs in; standard files out, per image and
for the whole run. A bad input costs one error line, never the rest of the batch."""
from __future__ import annotations

import argparse
import glob
import os
import sys
import time
import warnings
from typing import Any, Optional

from .. import tta
from ..outputs import AreaTotals, write_area_table, write_json

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def expand_inputs(inputs: list[str], errors: list[str]) -> list[tuple[str, str]]:
    """(path, output stem) for every image named by files, folders (recursive) and globs."""
    found: list[tuple[str, str]] = []
    for item in inputs:
        if os.path.isdir(item):
            for root, _, files in sorted(os.walk(item)):
                for f in sorted(files):
                    if f.lower().endswith(IMAGE_EXTENSIONS):
                        path = os.path.join(root, f)
                        found.append((path, os.path.splitext(os.path.relpath(path, item))[0]))
        elif os.path.exists(item):
            found.append((item, os.path.splitext(os.path.basename(item))[0]))
        elif glob.has_magic(item):
            matches = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if not matches:
                errors.append(f"{item}: no file matches this pattern")
            found += [(p, os.path.splitext(os.path.basename(p))[0]) for p in matches]
        else:
            errors.append(f"{item}: no such file or folder")
    seen: dict[str, int] = {}
    unique = []
    for path, stem in found:  # two inputs with one name must not overwrite each other
        n = seen.get(stem, 0)
        seen[stem] = n + 1
        unique.append((path, stem if n == 0 else f"{stem}-{n}"))
    return unique


def add_parser(sub: argparse._SubParsersAction, default_model: str) -> None:
    p = sub.add_parser("segment", help="segment images, folders or globs into label/overlay/panoptic/instance files")
    p.add_argument("inputs", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    p.add_argument("--model", default=default_model, help="HF folder, hub id or original .pkl (default: %(default)s)")
    p.add_argument("--task", choices=["semantic", "instance", "panoptic"], help="default: the checkpoint's own task")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--resize", choices=["original", "config"], default="original",
                   help="original: the original's test-time resize for the checkpoint's dataset (default); "
                        "config: the checkpoint's preprocessor_config.json")
    p.add_argument("--threshold", type=float, default=None,
                   help="panoptic: object mask threshold (default 0.8); instance: minimum score (default 0)")
    p.add_argument("--no-overlay", action="store_true", help="skip the colour overlay PNGs")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16", "int8"], default="fp32",
                   help="fp32: exact (default); bf16: CPUs with AMX/AVX512-BF16 or GPUs; fp16: GPUs; int8: CPU "
                        "dynamic quantisation of Linear layers. Faster modes change a few pixels, see "
                        "docs/performance.md; unavailable ones fall back to fp32 with a message")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: one per physical core unless OMP_NUM_THREADS is set)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the backbone (compiles for seconds per new image size; see docs/performance.md)")
    p.add_argument("--backend", choices=["torch", "onnxruntime", "openvino"], default=None,
                   help="runtime (default: onnxruntime for a .onnx --model, else torch); see docs/export.md")
    tta.add_arguments(p)
    p.set_defaults(func=run)


def _write_one(result: Any, out: str, stem: str, overlay: bool) -> Optional[dict[str, Any]]:
    """Every file of one image; returns its entry of the run's panoptic JSON (or None)."""
    base = os.path.join(out, stem)
    image_id = stem
    os.makedirs(os.path.dirname(base), exist_ok=True)
    result.save_labels(base + "_labels.png")
    if overlay:
        result.save_overlay(base + "_overlay.png")
    if result.task == "panoptic":
        result.save_panoptic_png(base + "_panoptic.png")
    if result.task == "instance":
        write_json(result.coco_instances(image_id), base + "_instances.json")
    result.save_area_table(base + "_areas.csv", base + "_areas.json")
    if result.task == "panoptic":
        return result.panoptic_annotation(stem + "_panoptic.png", image_id)
    return None


def run(args: argparse.Namespace) -> int:
    from ..precision import PrecisionFallbackWarning
    from ..segmenter import SegmentationError, Segmenter

    errors: list[str] = []
    items = expand_inputs(args.inputs, errors)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    try:
        os.makedirs(args.out, exist_ok=True)
        probe = os.path.join(args.out, ".write-test")
        open(probe, "w").close()
        os.unlink(probe)
    except OSError as e:
        print(f"error: {args.out}: output folder is not writable ({e.strerror or e})", file=sys.stderr)
        return 1
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
    names = seg.info.id2label
    totals = AreaTotals([names[i] for i in range(len(names))])
    panoptic_entries, failed, done = [], len(errors), 0
    start = time.time()
    bar = _bar(len(items))
    for (path, stem), result in zip(items, seg.stream([p for p, _ in items])):
        if isinstance(result, SegmentationError):
            bar.write(f"error: {result.message}")
            failed += 1
        else:
            try:
                entry = _write_one(result, args.out, stem, overlay=not args.no_overlay)
                totals.add(result.area_table())
                if entry is not None:
                    panoptic_entries.append(entry)
                done += 1
            except OSError as e:
                bar.write(f"error: {path}: could not write outputs ({e})")
                failed += 1
        bar.update(1)
        bar.set_postfix(img_s=f"{(done + failed) / max(time.time() - start, 1e-9):.2f}")
    bar.close()
    if done:
        write_area_table(totals.rows(), os.path.join(args.out, "areas.csv"), os.path.join(args.out, "areas.json"))
    if panoptic_entries:
        cats = [{"id": i, "name": names[i], "isthing": int(i not in seg.info.stuff_ids),
                 "color": list(seg.info.palette[i])} for i in range(len(names))]
        write_json({"annotations": panoptic_entries, "categories": cats}, os.path.join(args.out, "panoptic.json"))
    print(f"{done} image(s) segmented, {failed} failed; outputs in {args.out}", file=sys.stderr)
    return 1 if failed else 0


class _NoBar:
    def write(self, line: str) -> None:
        print(line, file=sys.stderr)

    def update(self, n: int) -> None:
        pass

    def set_postfix(self, **kw: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(total: int) -> Any:
    try:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="img", dynamic_ncols=True)
        # Error lines go above the bar, each on a line of its own.
        bar.write = lambda line: tqdm.write(line, file=sys.stderr)  # type: ignore[method-assign]
        return bar
    except ImportError:
        return _NoBar()
