"""A plain folder layout for custom data (and what ``synthetic.generate`` writes)::

    ROOT/classes.json             (or classes.yaml) class names, colours, which are things
    ROOT/images/{split}/NAME.jpg|png
    ROOT/labels/{split}/NAME.png  class id per pixel (255 = ignore), or colour-coded RGB
    ROOT/instances/{split}/NAME.png   optional: instance id per pixel, 0 = none
"""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence, Union


from .datasets import (
    SegmentationDataset,
    IGNORE_VALUE,
    ClassInfo,
    DatasetError,
    check_label_range,
    check_same_size,
    colors_to_ids,
    default_color,
    find_class_file,
    list_images,
    load_class_file,
    panoptic_from_semantic,
    read_image,
    read_label,
)


class FolderDataset(SegmentationDataset):
    """Images and same-stem label PNGs. With an ``instances`` folder the samples are panoptic
    (``pan_seg`` + ``segments``), otherwise semantic only."""

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        classes: Optional[Sequence[Union[str, ClassInfo]]] = None,
        ignore_value: int = IGNORE_VALUE,
        use_instances: bool = True,
    ) -> None:
        self.root = os.fspath(root)
        self.split = split
        self.ignore_value = ignore_value
        if classes is None:
            class_file = find_class_file(self.root)
            if class_file is None:
                raise DatasetError(f"{self.root}: no classes.json or classes.yaml (or pass classes=)")
            self.classes = load_class_file(class_file)
        else:
            self.classes = [c if isinstance(c, ClassInfo) else ClassInfo(str(c), default_color(i)) for i, c in enumerate(classes)]
        self.thing_ids = [i for i, c in enumerate(self.classes) if c.isthing]

        images = list_images(os.path.join(self.root, "images", split))
        label_dir = os.path.join(self.root, "labels", split)
        inst_dir = os.path.join(self.root, "instances", split)
        self.has_instances = use_instances and os.path.isdir(inst_dir)
        self.task = "panoptic" if self.has_instances else "semantic"
        self.items: list[tuple[str, str, Optional[str]]] = []
        for image in images:
            stem = os.path.splitext(os.path.basename(image))[0]
            label = os.path.join(label_dir, stem + ".png")
            if not os.path.isfile(label):
                raise DatasetError(f"{image}: no label file {label}")
            inst = os.path.join(inst_dir, stem + ".png") if self.has_instances else None
            if inst is not None and not os.path.isfile(inst):
                raise DatasetError(f"{image}: no instance file {inst}")
            self.items.append((image, label, inst))

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_path, label_path, inst_path = self.items[index]
        image = read_image(image_path)
        sem = read_label(label_path)
        if sem.ndim == 3:
            sem = colors_to_ids(sem, self.classes, label_path, self.ignore_value)
        check_same_size(image, sem, label_path, image_path)
        check_label_range(sem, self.num_classes, label_path, self.ignore_value)
        sample: dict[str, Any] = {"file_name": image_path, "image": image, "sem_seg": sem}
        if inst_path is not None:
            inst = read_label(inst_path, "instance map")
            if inst.ndim != 2:
                raise DatasetError(f"{inst_path}: instance map must be single-channel")
            check_same_size(image, inst, inst_path, image_path)
            pan, segments = panoptic_from_semantic(sem, inst, self.thing_ids, self.ignore_value)
            sample["pan_seg"] = pan
            sample["segments"] = segments
        return sample
