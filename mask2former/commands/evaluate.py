"""``mask2former evaluate``: score a model, or the files ``mask2former segment`` wrote, against
a dataset's ground truth with the official metrics (see :mod:`mask2former.evaluation`).

Images stream through: each prediction is added to the evaluator and dropped, so memory
does not grow with the dataset (instance AP keeps compressed RLEs, as COCO does). Prints a
table, and with ``--json`` the metrics as JSON on the last line of stdout.
"""
from __future__ import annotations

import argparse
import csv
import glob
import io
import json
import math
import os
from collections import deque
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from .. import tta
from ..devices import resolve_device
from ..evaluation.scorer import Scorer, supported
from ..io import atomic_write_text

DATASETS = ("folder", "cityscapes", "cityscapes_panoptic", "cityscapes_instance", "coco_panoptic",
            "coco_instance", "ade20k")
CONVENTIONS = {
    "detectron2": "detectron2's SemSegEvaluator: classes without ground truth are left out of mIoU",
    "detectron2_v0.6": "detectron2 <= v0.6 (the published Mask2Former numbers): a predicted class without "
                       "ground truth counts as IoU 0 in mIoU",
    "cityscapes": "cityscapesscripts evalPixelLevelSemanticLabeling: IoU = TP / (TP + FP + FN)",
}
RULES = {"pq_compute": "panopticapi's pq_compute; cityscapesscripts' evalPanopticSemanticLabeling computes the same",
         "coco": "COCO mask AP by pycocotools' COCOeval, as detectron2's COCOEvaluator",
         "cityscapes_instance": "Cityscapes instance AP by cityscapesscripts' evalInstanceLevelSemanticLabeling"}


def add_parser(sub: argparse._SubParsersAction, default_model: str) -> None:
    p = sub.add_parser("evaluate", help="score a model (or 'segment' output files) on a dataset: mIoU, PQ or mask AP")
    p.add_argument("--model", default=default_model, help="HF folder, hub id or original .pkl (default: %(default)s)")
    p.add_argument("--dataset", required=True, choices=DATASETS,
                   help="dataset format (required; folder: see docs/training.md)")
    p.add_argument("--data-root", required=True, help="dataset folder (required)")
    p.add_argument("--split", default="val", help="split to score (default: %(default)s)")
    p.add_argument("--task", choices=["semantic", "panoptic", "instance"],
                   help="default: the model's task if the dataset has its ground truth, else the dataset's")
    p.add_argument("--predictions", metavar="DIR",
                   help="score the files 'mask2former segment' wrote to DIR (run on the split's image folder) "
                        "instead of running a model")
    p.add_argument("--convention", choices=sorted(CONVENTIONS),
                   help="semantic metric convention; for instances, 'cityscapes' is Cityscapes' instance AP and any "
                        "other COCO mask AP (default: the dataset's official tool: cityscapes for Cityscapes, "
                        "else detectron2)")
    p.add_argument("--limit", type=int, help="only the first N images (default: all)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON on the last line")
    p.add_argument("--out", help="write metrics.json, per_class.csv and confusion_matrix.png here (default: none)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: cuda when available, else cpu)")
    p.add_argument("--resize", choices=["original", "config"], default="original",
                   help="test-time resize, as in 'segment' (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=None,
                   help="score threshold, as in 'segment' (default: the task's, as there)")
    p.add_argument("--backend", choices=["torch", "onnxruntime", "openvino"], default=None,
                   help="runtime for the network (default: torch, or onnxruntime for a .onnx MODEL)")
    tta.add_arguments(p)
    p.set_defaults(func=run)


def default_convention(dataset: str, task: str) -> str:
    """The dataset's own official tool: cityscapesscripts for Cityscapes semantic and instance
    results, detectron2's evaluators (and pq_compute / COCOeval) otherwise."""
    official = dataset.startswith("cityscapes") and (task == "semantic" or dataset != "cityscapes")
    return "cityscapes" if official else "detectron2"


def image_folder(ds: Any, kind: str, root: str, split: str) -> str:
    """The folder 'segment' is run on for this split: output stems are paths relative to it."""
    if getattr(ds, "image_dir", None):  # COCO formats
        return ds.image_dir
    if kind.startswith("cityscapes"):
        return os.path.join(root, "leftImg8bit", split)
    if kind == "ade20k":
        return os.path.join(ds.root, "images", {"train": "training", "val": "validation"}.get(split, split))
    return os.path.join(root, "images", split)


def stem_of(path: str, folder: str) -> str:
    rel = os.path.relpath(path, folder)
    return os.path.splitext(os.path.basename(path) if rel.startswith("..") else rel)[0]


def prediction_of(result: Any, task: str, stem: str) -> Any:
    """What the scorer needs from a SegmentationResult, exactly as 'segment' writes it."""
    if task == "semantic":
        return result.labels
    if task == "panoptic":
        return result.segment_ids, [{"id": int(s["id"]), "category_id": int(s["category_id"])} for s in result.segments]
    return result.coco_instances(stem)  # scores rounded as in the files


class FileReader:
    """Predictions from a 'segment' output folder."""

    def __init__(self, folder: str, task: str) -> None:
        self.folder, self.task = folder, task
        if not os.path.isdir(folder):
            raise ValueError(f"{folder}: no such predictions folder")
        self.panoptic: dict[str, dict[str, Any]] = {}
        if task == "panoptic":
            path = os.path.join(folder, "panoptic.json")
            if not os.path.isfile(path):
                raise ValueError(f"{path}: missing (panoptic predictions need 'segment --task panoptic' output)")
            with open(path, encoding="utf-8") as f:
                self.panoptic = {str(a["image_id"]): a for a in json.load(f)["annotations"]}

    def __call__(self, stem: str) -> Any:
        from PIL import Image

        from ..evaluation import read_panoptic_png

        base = os.path.join(self.folder, stem)
        path = base + ("_labels.png" if self.task == "semantic" else "_instances.json")
        if self.task != "panoptic" and not os.path.isfile(path):
            raise ValueError(f"{path}: prediction file is missing")
        if self.task == "semantic":
            with Image.open(path) as im:  # void is 255 in 8-bit files, 65535 in 16-bit ones
                labels, void = np.asarray(im).astype(np.int64), 255 if im.mode in ("L", "P") else 65535
            if labels.ndim != 2:
                raise ValueError(f"{path}: expected a single-channel label PNG")
            return np.where(labels == void, -1, labels)
        if self.task == "panoptic":
            if stem not in self.panoptic:
                raise ValueError(f"{os.path.join(self.folder, 'panoptic.json')}: no prediction for image {stem}")
            entry = self.panoptic[stem]
            return read_panoptic_png(os.path.join(self.folder, entry["file_name"])), entry["segments_info"]
        with open(path, encoding="utf-8") as f:
            return [{**r, "image_id": stem} for r in json.load(f)]


def _guess_task(folder: str) -> str:
    if os.path.isfile(os.path.join(folder, "panoptic.json")):
        return "panoptic"
    found = glob.glob(os.path.join(glob.escape(folder), "**", "*_instances.json"), recursive=True)
    return "instance" if found else "semantic"


# -- running ------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    from ..data import build_dataset
    from .. import distributed as dist_utils
    from .segment import _bar

    # Under torchrun every process scores every world-th image; rank 0 merges and reports.
    rank, world, dist_device = dist_utils.init_from_env()
    if world > 1 and args.device is None:
        args.device = str(dist_device)
    resolve_device(args.device)  # a device this machine lacks is one line, before any loading
    ds = build_dataset(args.dataset, args.data_root, args.split)
    count = len(ds) if args.limit is None else max(0, min(args.limit, len(ds)))
    folder = image_folder(ds, args.dataset, args.data_root, args.split)
    seg, tiled = None, args.tta or args.sliding_window is not None
    if args.predictions:
        if tiled:
            raise ValueError("--tta and --sliding-window apply when running a model, not to --predictions files")
        task = args.task or _guess_task(args.predictions)
    else:
        from ..model import Mask2FormerForUniversalSegmentation
        from ..model_info import ModelInfo
        from ..segmenter import Segmenter

        from ..runtime import choose_backend, load_backend

        if choose_backend(args.model, args.backend) == "torch":
            model = Mask2FormerForUniversalSegmentation.from_pretrained(args.model)
            own = ModelInfo.of(model, args.model).task
        else:  # an exported .onnx under ONNX Runtime / OpenVINO
            model = load_backend(args.model, choose_backend(args.model, args.backend), args.device)
            own = model.info.task
        task = args.task or ("semantic" if tiled else own if supported(ds, own) else ds.task)
        seg = Segmenter(model, task=task, device=args.device, resize=args.resize, batch_size=args.batch_size,
                        threshold=args.threshold, **tta.segmenter_kwargs(args))
    if not supported(ds, task):
        raise ValueError(f"{args.dataset} dataset at {args.data_root} has no {task} ground truth")
    convention = args.convention or default_convention(args.dataset, task)
    names = None
    if seg is not None:
        n = len(getattr(ds, "semantic_classes", ds.classes) if task == "semantic" else ds.classes)
        if len(seg.info.id2label) != n:
            raise ValueError(f"the model has {len(seg.info.id2label)} classes, the {task} ground truth of "
                             f"{args.dataset} has {n}")
        if args.dataset == "ade20k":  # the dataset files carry no class names; checkpoints do
            names = [seg.info.id2label[i] for i in range(n)]
    scorer = Scorer(task, ds, convention, names)
    indices = range(rank, count, world)
    bar = _bar(len(indices)) if rank == 0 else None
    for index, sample, stem, pred in iter_predictions(ds, indices, folder, seg, task, args.predictions):
        scorer.add(index, sample, stem, pred)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    scorer.gather()
    if rank != 0:
        dist_utils.cleanup()
        return 0
    metrics = scorer.metrics()
    rule = {"semantic": convention, "panoptic": "pq_compute",
            "instance": "cityscapes_instance" if convention == "cityscapes" else "coco"}[task]
    info = {"task": task, "dataset": args.dataset, "split": args.split, "num_images": scorer.num_images,
            "convention": rule}
    result = {**info, **metrics}
    rows = scorer.per_class(metrics)
    source = f"predictions {args.predictions}" if args.predictions else f"model {args.model}"
    print(f"{task} evaluation of {source} on {args.dataset} {args.split} ({scorer.num_images} images)")
    print(f"convention: {rule} ({CONVENTIONS[convention] if task == 'semantic' else RULES[rule]})")
    print(format_table(task, metrics, rows))
    if args.out:
        write_outputs(args.out, result, rows, scorer)
        print(f"wrote metrics.json, per_class.csv, confusion_matrix.png to {args.out}")
    if args.json:
        print(json.dumps(_jsonable(result)))
    dist_utils.cleanup()
    return 0


def iter_predictions(ds: Any, indices: Sequence[int], folder: str, seg: Any, task: str, pred_dir: Optional[str]
                     ) -> Iterator[tuple[int, dict[str, Any], str, Any]]:
    """(index, sample, stem, prediction) for the images at ``indices``, in that order."""
    if pred_dir:
        read = FileReader(pred_dir, task)
        for i in indices:
            sample = ds[i]
            stem = stem_of(sample["file_name"], folder)
            yield i, sample, stem, read(stem)
        return
    from ..segmenter import SegmentationError

    pending: deque = deque()  # samples handed to the segmenter, waiting for their result

    def images() -> Iterator[np.ndarray]:
        for i in indices:
            sample = ds[i]
            pending.append((i, sample))
            yield sample["image"]

    for result in seg.stream(images()):
        i, sample = pending.popleft()
        if isinstance(result, SegmentationError):
            raise ValueError(f"{sample['file_name']}: {result.message}")
        stem = stem_of(sample["file_name"], folder)
        yield i, sample, stem, prediction_of(result, task, stem)


# -- reporting ----------------------------------------------------------------------------

SUMMARY = {"semantic": ["mIoU", "fwIoU", "mACC", "pACC"],
           "panoptic": ["PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st"],
           "instance": ["AP", "AP50", "AP75", "APs", "APm", "APl"]}


def _fmt(v: Any) -> str:
    return ("-" if math.isnan(v) else f"{v:.2f}") if isinstance(v, float) else str(v)


def format_table(task: str, metrics: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """Overall metrics, then one line per class (percent; '-' where undefined)."""
    keys = [k for k in SUMMARY[task] if k in metrics]
    lines = ["  ".join(f"{k:>7}" for k in keys), "  ".join(f"{_fmt(metrics[k]):>7}" for k in keys), ""]
    cols = [k for k in rows[0] if k not in ("class_id", "class_name")] if rows else []
    width = max([10] + [len(r["class_name"]) for r in rows])
    sizes = [max(7, len(c)) for c in cols]
    lines.append(f"{'class':<{width}}  " + "  ".join(f"{c:>{n}}" for c, n in zip(cols, sizes)))
    for r in rows:
        lines.append(f"{r['class_name']:<{width}}  " + "  ".join(f"{_fmt(r[c]):>{n}}" for c, n in zip(cols, sizes)))
    return "\n".join(lines)


def _jsonable(obj: Any) -> Any:
    """NaN (undefined metrics) becomes null: strict JSON readers reject NaN."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (float, np.floating)):
        return None if math.isnan(obj) else float(obj)
    return int(obj) if isinstance(obj, np.integer) else obj


def write_outputs(out: str, result: dict[str, Any], rows: list[dict[str, Any]], scorer: Scorer) -> None:
    os.makedirs(out, exist_ok=True)
    atomic_write_text(os.path.join(out, "metrics.json"), json.dumps(_jsonable(result), indent=1) + "\n")
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows([_jsonable(r) for r in rows])
    atomic_write_text(os.path.join(out, "per_class.csv"), buf.getvalue())
    scorer.write_confusion(os.path.join(out, "confusion_matrix.png"))

