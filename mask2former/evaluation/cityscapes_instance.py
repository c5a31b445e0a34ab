"""Cityscapes' official instance AP, computed by cityscapesscripts' ``evalInstanceLevelSemanticLabeling``.

That evaluator reads files: ground truth from ``*_gtFine_instanceIds.png``, predictions from
one text file per image listing ``<mask png> <label id> <confidence>``.  Predictions are kept
as compressed COCO RLEs while images stream in (memory grows with the RLE sizes only, as for
COCO AP, and ranks can merge them); :meth:`compute` writes them as those files into a
temporary folder, runs the official code once, as detectron2's ``CityscapesInstanceEvaluator``
does, and deletes the folder.  AP is the mean over IoU 0.5:0.95 and the 8 evaluated classes,
AP50 the same at IoU 0.5; both in percent.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import shutil
import tempfile
from typing import Any, Dict, List, Mapping, Sequence, Tuple, Union

import numpy as np
from PIL import Image
from pycocotools import mask as mask_util

from .instance import encode_masks

Prediction = Tuple[Dict[str, Any], int, float]  # (compressed RLE, Cityscapes label id, score)


class CityscapesInstanceEvaluator:
    """``label_ids[k]``: the Cityscapes label id (e.g. 26 for car) of prediction class ``k``;
    classes missing from it are not evaluated.  ``names`` (same keys) label the per-class
    results."""

    def __init__(self, label_ids: Mapping[int, int], names: Mapping[int, str]) -> None:
        self.label_ids = {int(k): int(v) for k, v in label_ids.items()}
        self.names = {int(k): str(v) for k, v in names.items()}
        self.images: List[Tuple[str, List[Prediction]]] = []  # (GT file, predictions) per image

    def update(self, gt_file: str, masks: Any, scores: Sequence[float], labels: Sequence[int]) -> None:
        """One image: its ``*_gtFine_instanceIds.png`` and its (N, H, W) binary masks with
        scores and class indices."""
        if not (len(masks) == len(scores) == len(labels)):
            raise ValueError("masks, scores and labels must have the same length")
        self._add(gt_file, zip(encode_masks(masks), labels, scores))

    def add_results(self, gt_file: str, results: Sequence[Mapping[str, Any]]) -> None:
        """One image's COCO-style results (RLE ``segmentation``, ``score``, ``category_id`` =
        class index), as ``mask2former segment`` writes them."""
        self._add(gt_file, ((r["segmentation"], r["category_id"], r["score"]) for r in results))

    def _add(self, gt_file: str, instances: Any) -> None:
        kept = [(dict(rle), self.label_ids[int(k)], float(score)) for rle, k, score in instances
                if int(k) in self.label_ids]
        self.images.append((os.path.abspath(gt_file), kept))

    # -- distributed helpers: ranks send state(), the main rank merges ------------------------
    def state(self) -> Dict[str, Any]:
        return {"images": list(self.images)}

    def merge(self, other: Union["CityscapesInstanceEvaluator", Mapping[str, Any]]) -> None:
        self.images.extend((other.state() if isinstance(other, CityscapesInstanceEvaluator) else other)["images"])

    def _write_files(self, folder: str) -> Tuple[List[str], List[str]]:
        """The official input files: per image a text file naming one 1-bit PNG per mask."""
        gts, txts = [], []
        for k, (gt_file, preds) in enumerate(self.images):
            lines = []
            for i, (rle, label_id, score) in enumerate(preds):
                name = f"{k:06d}_{i:03d}.png"  # read back by the official code as 0/255
                Image.fromarray(mask_util.decode(rle).astype(bool)).save(os.path.join(folder, name))
                lines.append(f"{name} {label_id} {score!r}\n")
            txts.append(os.path.join(folder, f"{k:06d}.txt"))
            with open(txts[-1], "w", encoding="utf-8") as f:
                f.write("".join(lines))
            gts.append(gt_file)
        return txts, gts

    def compute(self) -> Dict[str, float]:
        """``AP``, ``AP50`` and ``AP-<name>``, ``AP50-<name>`` in percent (NaN where undefined)."""
        from cityscapesscripts.helpers.labels import id2label

        if not self.images:
            raise ValueError("no images were added")
        official = official_module()
        workdir = tempfile.mkdtemp(prefix="m2f_cs_instance_")
        try:  # the folder is ours alone and deleted afterwards: no reader sees half-written files
            preds, gts = self._write_files(workdir)
            args = copy.copy(official.args)  # the module's settings object; ours must not leak into it
            args.predictionPath = workdir  # prediction masks must lie below it
            args.predictionWalk = None
            # Its default caches the GT inside the installed package and reuses it on the next run.
            args.gtInstancesFile = os.path.join(workdir, "gtInstances.json")
            args.exportFile = os.path.join(workdir, "result.json")
            args.JSONOutput, args.quiet, args.colorized, args.csv = False, True, False, False
            with _inside(workdir), contextlib.redirect_stdout(io.StringIO()):  # it writes matches.json to cwd
                result = official.evaluateImgLists(preds, gts, args)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        avg = result["averages"]
        out = {"AP": 100 * float(avg["allAp"]), "AP50": 100 * float(avg["allAp50%"])}
        for k in sorted(self.label_ids):
            per = avg["classes"].get(id2label[self.label_ids[k]].name)
            name = self.names.get(k, str(k))
            out[f"AP-{name}"] = 100 * float(per["ap"]) if per else float("nan")
            out[f"AP50-{name}"] = 100 * float(per["ap50%"]) if per else float("nan")
        return out


def official_module() -> Any:
    """cityscapesscripts' evaluation module, made to run on numpy 2 (it predates it): two of the
    names it uses are swapped, in that module only, for numpy-2-safe equivalents."""
    from cityscapesscripts.evaluation import evalInstanceLevelSemanticLabeling as official

    if not hasattr(official.np, "in1d"):
        official.np = _NumpyWithIn1d()
    official.writeDict2JSON = _write_json
    return official


def _write_json(obj: Any, path: str) -> None:
    """Its ``writeDict2JSON``, also accepting the numpy scalars numpy 2 returns from ``count_nonzero``."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, default=lambda o: o.item() if isinstance(o, np.generic) else o.__dict__, sort_keys=True,
                  indent=4)


class _NumpyWithIn1d:
    """numpy, plus the ``in1d`` that numpy 2.4 removed and cityscapesscripts (<= 2.3) still calls;
    ``isin`` on the flattened input is its documented replacement."""

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)

    @staticmethod
    def in1d(a: Any, b: Any, **kwargs: Any) -> np.ndarray:
        return np.isin(np.ravel(a), b, **kwargs)


@contextlib.contextmanager
def _inside(folder: str):
    old = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(old)
