"""``Scorer``: one task's evaluators fed a dataset's samples and predictions image by image,
shared by ``mask2former evaluate`` and validation during training."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np


def supported(ds: Any, task: str) -> bool:
    if task == "semantic":
        return True
    return ds.task == task or (task == "instance" and ds.task == "panoptic")


class Scorer:
    """One task's evaluator(s), fed one image at a time; GT comes from dataset samples."""

    def __init__(self, task: str, ds: Any, convention: str, names: Optional[list[str]] = None) -> None:
        from . import InstanceEvaluator, PanopticEvaluator, SemanticEvaluator
        from .confusion import InstanceConfusion

        self.task, self.ds, self.convention = task, ds, convention
        classes = getattr(ds, "semantic_classes", ds.classes) if task == "semantic" else ds.classes
        self.classes, self.names = classes, names or [c.name for c in classes]
        # Semantic confusion: the semantic metrics, or for panoptic the picture of its label maps.
        self.semantic = SemanticEvaluator(len(classes), ds.ignore_value, self.names, convention) \
            if task != "instance" else None
        if task == "panoptic":
            self.panoptic = PanopticEvaluator([{"id": i, "name": self.names[i], "isthing": int(c.isthing)}
                                               for i, c in enumerate(classes)])
        if task == "instance":
            self.thing_ids = [i for i, c in enumerate(classes) if c.isthing]
            if convention == "cityscapes":
                self.instance = _cityscapes_instance(ds, classes, self.names, self.thing_ids)
            else:
                self.instance = InstanceEvaluator([{"id": i, "name": self.names[i]} for i in self.thing_ids])
            self.counts = {i: [0, 0] for i in self.thing_ids}  # class -> [GT instances, predictions]
            self.thing_pos = {c: k for k, c in enumerate(self.thing_ids)}  # class -> confusion row/column
            self.confusion = InstanceConfusion(len(self.thing_ids))
        self.num_images = 0

    def add(self, index: int, sample: dict[str, Any], stem: str, pred: Any) -> None:
        if self.task == "semantic":
            self.semantic.update(_check_shape(pred, sample["sem_seg"], stem), sample["sem_seg"])
        elif self.task == "panoptic":
            ids, segments = pred
            _check_shape(ids, sample["pan_seg"], stem)
            self.panoptic.update(ids, segments, sample["pan_seg"], sample["segments"])
            lut = np.full(int(ids.max(initial=0)) + 1, -1, dtype=np.int64)
            for s in segments:
                lut[s["id"]] = s["category_id"]
            self.semantic.update(lut[ids], sample["sem_seg"])
        else:
            h, w = sample["image"].shape[:2]
            gt = self._instance_gt(index, sample)
            kept = [r for r in pred if int(r["category_id"]) in self.counts]
            for r in kept:
                size = r["segmentation"].get("size") if isinstance(r["segmentation"], dict) else None
                if size is not None and tuple(size) != (h, w):
                    raise ValueError(f"{stem}: predicted mask is {size[1]}x{size[0]}, ground truth {w}x{h}")
            if self.convention != "cityscapes":
                self.instance.add_ground_truth(stem, h, w, annotations=gt)
                self.instance.add_results(kept)
            else:  # cityscapesscripts reads the dataset's own instance id PNG
                self.instance.add_results(self.ds.items[index][1], kept)
            pos = self.thing_pos
            self.confusion.update([{**a, "category_id": pos[int(a["category_id"])]} for a in gt],
                                  [{**r, "category_id": pos[int(r["category_id"])]} for r in kept], h, w)
            for a in gt:
                self.counts[int(a["category_id"])][0] += not a.get("iscrowd", 0)
            for r in kept:
                self.counts[int(r["category_id"])][1] += 1
        self.num_images += 1

    # -- distributed: every rank scores its share of the images, the main rank merges -------
    def state(self) -> dict[str, Any]:
        st: dict[str, Any] = {"num_images": self.num_images}
        for name in ("semantic", "panoptic", "instance"):
            if getattr(self, name, None) is not None:
                st[name] = getattr(self, name).state()
        if self.task == "instance":
            st["counts"], st["confusion"] = self.counts, self.confusion.matrix
        return st

    def merge(self, st: dict[str, Any]) -> None:
        self.num_images += int(st["num_images"])
        for name in ("semantic", "panoptic", "instance"):
            if name in st:
                getattr(self, name).merge(st[name])
        if self.task == "instance":
            for c, (n_gt, n_pred) in st["counts"].items():
                self.counts[c][0] += n_gt
                self.counts[c][1] += n_pred
            self.confusion.matrix += st["confusion"]

    def gather(self) -> None:
        """Under torch.distributed: merge every other rank's state into rank 0's scorer (a
        collective call: every rank must make it). A single process is left as it is."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        states: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(states, self.state())
        if dist.get_rank() == 0:
            for st in states[1:]:
                self.merge(st)

    def _instance_gt(self, index: int, sample: dict[str, Any]) -> list[dict[str, Any]]:
        from pycocotools import mask as mask_utils

        from . import encode_masks

        if hasattr(self.ds, "coco"):  # the JSON's own annotations: COCO sizes objects by their JSON area
            anns = self.ds.coco.loadAnns(self.ds.coco.getAnnIds(imgIds=[self.ds.image_ids[index]]))
            return [{**a, "category_id": self.ds.to_contiguous[a["category_id"]]} for a in anns]
        segs = [s for s in sample["segments"] if s.get("isthing")]
        if "masks" in sample:
            masks = sample["masks"][[s.get("isthing", True) for s in sample["segments"]]]
        else:
            masks = np.stack([sample["pan_seg"] == s["id"] for s in segs]) if segs else np.zeros((0, 1, 1), bool)
        rles = encode_masks(masks)
        return [{"category_id": s["category_id"], "segmentation": r, "iscrowd": int(s.get("iscrowd", 0)),
                 "area": float(mask_utils.area(r))} for s, r in zip(segs, rles)]

    def metrics(self) -> dict[str, Any]:
        """The evaluator's detectron2-style dict, in percent."""
        return getattr(self, self.task).compute()  # the evaluator attributes are named after the tasks

    def per_class(self, metrics: dict[str, Any]) -> list[dict[str, Any]]:
        rows = []
        if self.task == "semantic":
            m = self.semantic.conf_matrix
            for i, n in enumerate(self.names):
                rows.append({"class_id": i, "class_name": n, "IoU": metrics[f"IoU-{n}"], "ACC": metrics[f"ACC-{n}"],
                             "gt_pixels": int(m[:, i].sum()), "pred_pixels": int(m[i, :].sum())})
        elif self.task == "panoptic":
            stat = self.panoptic.pq_stat()
            for i, (c, n) in enumerate(zip(self.classes, self.names)):
                rows.append({"class_id": i, "class_name": n, "isthing": int(c.isthing),
                             **{k: metrics[f"{k}-{n}"] for k in ("PQ", "SQ", "RQ")},
                             **{k.upper(): stat[i][k] for k in ("tp", "fp", "fn")}})
        else:
            ap = ["AP", "AP50"] if self.convention == "cityscapes" else ["AP"]  # per-class metrics of each evaluator
            rows = [{"class_id": i, "class_name": self.names[i], **{k: metrics[f"{k}-{self.names[i]}"] for k in ap},
                     "gt_instances": self.counts[i][0], "predictions": self.counts[i][1]} for i in self.thing_ids]
        return rows

    def write_confusion(self, path: str) -> None:
        from .confusion import save_confusion_png

        if self.task == "instance":
            names = [self.names[i] for i in self.thing_ids]
            save_confusion_png(self.confusion.matrix, names + ["(no object)"], names + ["(missed)"], path)
        else:  # the semantic layout is (pred, gt) with a void row: transpose to (gt, pred + void)
            save_confusion_png(self.semantic.conf_matrix[:, :-1].T, self.names, self.names + ["(void)"], path)


def _cityscapes_instance(ds: Any, classes: list, names: list[str], thing_ids: list[int]) -> Any:
    """The official Cityscapes instance evaluator, for datasets read from ``*_gtFine_instanceIds.png``."""
    from ..data.cityscapes import CityscapesPanoptic, cityscapes_labels
    from .cityscapes_instance import CityscapesInstanceEvaluator

    if not isinstance(ds, CityscapesPanoptic):
        raise ValueError("Cityscapes instance AP needs a Cityscapes dataset with *_gtFine_instanceIds.png "
                         "(--dataset cityscapes_instance or cityscapes_panoptic)")
    label_id = {l.name: l.id for l in cityscapes_labels()}
    return CityscapesInstanceEvaluator({i: label_id[classes[i].name] for i in thing_ids},
                                       {i: names[i] for i in thing_ids})


def _check_shape(pred: np.ndarray, gt: np.ndarray, stem: str) -> np.ndarray:
    if pred.shape != gt.shape[:2]:
        raise ValueError(f"{stem}: prediction is {pred.shape[1]}x{pred.shape[0]}, "
                         f"ground truth {gt.shape[1]}x{gt.shape[0]}")
    return pred
