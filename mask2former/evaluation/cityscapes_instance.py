"""Cityscapes' official instance AP, computed by cityscapesscripts' ``evalInstanceLevelSemanticLabeling``.

That evaluator reads files: ground truth from ``*_gtFine_instanceIds.png``, predictions from
one text file per image listing ``<mask png> <label id> <confidence>``.  We stream: each
image's predicted masks are written to a private work folder as they arrive (only file names
are kept in memory) and the official code runs once in :meth:`compute`, as detectron2's
``CityscapesInstanceEvaluator`` does.  AP is the mean over IoU 0.5:0.95 and the 8 evaluated
classes, AP50 the same at IoU 0.5; both in percent.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import shutil
import tempfile
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
from PIL import Image
from pycocotools import mask as mask_util

METRICS = ("AP", "AP50")


class CityscapesInstanceEvaluator:
    """``label_ids[k]``: the Cityscapes label id (e.g. 26 for car) of prediction class ``k``;
    classes missing from it are not evaluated.  ``names`` (same keys) label the per-class
    results.  Call :meth:`close` (or use ``with``) to delete the work folder."""

    def __init__(self, label_ids: Mapping[int, int], names: Mapping[int, str], workdir: Optional[str] = None) -> None:
        self.label_ids = {int(k): int(v) for k, v in label_ids.items()}
        self.names = {int(k): str(v) for k, v in names.items()}
        self._own = workdir is None
        self.workdir = os.path.abspath(workdir or tempfile.mkdtemp(prefix="m2f_cs_instance_"))
        self.pred_dir = os.path.join(self.workdir, "pred")
        os.makedirs(self.pred_dir, exist_ok=True)
        self.gt_files: List[str] = []
        self.pred_files: List[str] = []

    def __enter__(self) -> "CityscapesInstanceEvaluator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._own:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def update(self, gt_file: str, masks: Any, scores: Sequence[float], labels: Sequence[int]) -> None:
        """One image: its ``*_gtFine_instanceIds.png`` and its (N, H, W) binary masks with
        scores and class indices."""
        m = np.asarray(masks)
        if not (len(m) == len(scores) == len(labels)):
            raise ValueError("masks, scores and labels must have the same length")
        self._write(gt_file, ((m[i], float(scores[i]), int(labels[i])) for i in range(len(m))))

    def add_results(self, gt_file: str, results: Sequence[Mapping[str, Any]]) -> None:
        """One image's COCO-style results (RLE ``segmentation``, ``score``, ``category_id`` =
        class index), as ``mask2former segment`` writes them."""
        self._write(gt_file, ((mask_util.decode(r["segmentation"]), float(r["score"]), int(r["category_id"]))
                              for r in results))

    def _write(self, gt_file: str, instances: Any) -> None:
        k = len(self.gt_files)
        lines = []
        for i, (mask, score, label) in enumerate(instances):
            if label not in self.label_ids:
                continue
            name = f"{k:06d}_{i:03d}.png"
            # 1-bit PNG: the official reader converts it to 0/255.  Plain writes: the folder is ours
            # alone and is deleted afterwards, so no reader can see a half-written file.
            Image.fromarray(mask.astype(bool)).save(os.path.join(self.pred_dir, name), format="PNG")
            lines.append(f"{name} {self.label_ids[label]} {score!r}\n")
        txt = os.path.join(self.pred_dir, f"{k:06d}.txt")
        with open(txt, "w", encoding="utf-8") as f:
            f.write("".join(lines))
        self.gt_files.append(os.path.abspath(gt_file))
        self.pred_files.append(txt)

    def compute(self) -> Dict[str, float]:
        """``AP``, ``AP50`` and ``AP-<name>``, ``AP50-<name>`` in percent (NaN where undefined)."""
        from cityscapesscripts.helpers.labels import id2label

        if not self.gt_files:
            raise ValueError("no images were added")
        official = official_module()
        args = copy.copy(official.args)  # the module's settings object; ours must not leak into it
        args.predictionPath = self.pred_dir  # prediction masks must lie below it
        args.predictionWalk = None
        # Its default caches the GT inside the installed package and reuses it on the next run.
        gt_cache = os.path.join(self.workdir, "gtInstances.json")
        if os.path.exists(gt_cache):
            os.remove(gt_cache)
        args.gtInstancesFile = gt_cache
        args.exportFile = os.path.join(self.workdir, "result.json")
        args.JSONOutput, args.quiet, args.colorized, args.csv = False, True, False, False
        with _inside(self.workdir), contextlib.redirect_stdout(io.StringIO()):  # it writes matches.json to cwd
            result = official.evaluateImgLists(list(self.pred_files), list(self.gt_files), args)
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
