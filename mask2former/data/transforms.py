"""Training augmentations of the original configs, applied to a sample dict from ``datasets``.

Every augmentation is ``aug(sample, rng) -> sample``: it draws its randomness from the given
``numpy.random.Generator`` (so a seed reproduces a batch) and transforms, consistently, the
image (bilinear) and whichever targets are present (nearest): ``sem_seg`` (padded with the
ignore value), ``pan_seg`` (padded with 0, the void id), ``masks`` ``NxHxW`` (padded with
False) and ``padding_mask`` (True where pixels were padded).
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from .datasets import IGNORE_VALUE

Sample = dict[str, Any]
Augmentation = Callable[[Sample, np.random.Generator], Sample]
_LABEL_KEYS = ("sem_seg", "pan_seg", "masks", "padding_mask")


# ---- geometric primitives: one function per operation, applied to every key -------------------

def _nearest_index(n_out: int, n_in: int) -> np.ndarray:
    # Pixel-centre mapping, the same grid PIL's bilinear resize uses for the image.
    return np.minimum(((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64), n_in - 1)


def resize(sample: Sample, height: int, width: int) -> Sample:
    out = dict(sample)
    h, w = sample["image"].shape[:2]
    if (h, w) == (height, width):
        return out
    out["image"] = np.asarray(Image.fromarray(sample["image"]).resize((width, height), Image.BILINEAR))
    rows, cols = _nearest_index(height, h), _nearest_index(width, w)
    for key in _LABEL_KEYS:
        if key in sample:
            out[key] = sample[key][..., rows[:, None], cols[None, :]]
    return out


def crop(sample: Sample, y0: int, x0: int, height: int, width: int) -> Sample:
    out = dict(sample)
    out["image"] = np.ascontiguousarray(sample["image"][y0 : y0 + height, x0 : x0 + width])
    for key in _LABEL_KEYS:
        if key in sample:
            out[key] = np.ascontiguousarray(sample[key][..., y0 : y0 + height, x0 : x0 + width])
    return out


def flip(sample: Sample, horizontal: bool = True) -> Sample:
    out = dict(sample)
    out["image"] = np.ascontiguousarray(sample["image"][:, ::-1] if horizontal else sample["image"][::-1])
    for key in _LABEL_KEYS:
        if key in sample:
            out[key] = np.ascontiguousarray(sample[key][..., ::-1] if horizontal else sample[key][..., ::-1, :])
    return out


def hflip(sample: Sample) -> Sample:
    return flip(sample, horizontal=True)


def pad(sample: Sample, height: int, width: int, image_value: float = 128.0, ignore_value: int = IGNORE_VALUE) -> Sample:
    """Pad bottom and right up to ``height x width`` (never shrinks)."""
    h, w = sample["image"].shape[:2]
    ph, pw = max(height - h, 0), max(width - w, 0)
    out = dict(sample)
    if ph == 0 and pw == 0:  # still mark "nothing padded", so a pipeline's outputs have fixed keys
        out.setdefault("padding_mask", np.zeros((h, w), dtype=bool))
        return out
    out["image"] = np.pad(sample["image"], ((0, ph), (0, pw), (0, 0)), constant_values=np.uint8(image_value))
    lead = lambda a: [(0, 0)] * (a.ndim - 2) + [(0, ph), (0, pw)]  # noqa: E731
    fills = {"sem_seg": ignore_value, "pan_seg": 0, "masks": False}
    for key, fill in fills.items():
        if key in sample:
            out[key] = np.pad(sample[key], lead(sample[key]), constant_values=fill)
    padded = sample.get("padding_mask", np.zeros((h, w), dtype=bool))
    out["padding_mask"] = np.pad(padded, lead(padded), constant_values=True)
    return out


# ---- augmentations -----------------------------------------------------------------------------

class Compose:
    def __init__(self, augmentations: Sequence[Augmentation]) -> None:
        self.augmentations = list(augmentations)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        for aug in self.augmentations:
            sample = aug(sample, rng)
        return sample

    def __repr__(self) -> str:
        return f"Compose({self.augmentations})"


def scale_choices(base: int, min_ratio: float = 0.5, max_ratio: float = 2.0, step: float = 0.1) -> list[int]:
    """Short-edge sizes ``base * {0.5, 0.6, ..., 2.0}`` as the configs list them
    (``[int(x * 0.1 * base) for x in range(5, 21)]``)."""
    lo, hi = int(round(min_ratio / step)), int(round(max_ratio / step))
    return [int(x * step * base) for x in range(lo, hi + 1)]


class ResizeShortestEdge:
    """Resize so the short edge is a sampled length, capping the long edge at ``max_size``."""

    def __init__(self, short_edge_length: Union[int, Sequence[int]], max_size: int = sys.maxsize, sample_style: str = "choice") -> None:
        if sample_style not in ("choice", "range"):
            raise ValueError(f"sample_style must be 'choice' or 'range', not {sample_style!r}")
        lengths = [short_edge_length] * 2 if isinstance(short_edge_length, int) else list(short_edge_length)
        if sample_style == "range" and len(lengths) != 2:
            raise ValueError("sample_style 'range' needs [min, max] short edge lengths")
        self.lengths, self.max_size, self.is_range = lengths, max_size, sample_style == "range"

    def output_size(self, h: int, w: int, size: int) -> tuple[int, int]:
        scale = size / min(h, w)
        newh, neww = (size, scale * w) if h < w else (scale * h, size)
        if max(newh, neww) > self.max_size:
            shrink = self.max_size / max(newh, neww)
            newh, neww = newh * shrink, neww * shrink
        return int(newh + 0.5), int(neww + 0.5)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if self.is_range:
            size = int(rng.integers(self.lengths[0], self.lengths[1] + 1))
        else:
            size = int(self.lengths[int(rng.integers(len(self.lengths)))])
        if size == 0:
            return sample
        return resize(sample, *self.output_size(*sample["image"].shape[:2], size))


class ResizeScale:
    """Large-scale jitter's resize: fit the image inside ``target * U(min_scale, max_scale)``
    keeping the aspect ratio."""

    def __init__(self, min_scale: float, max_scale: float, target_height: int, target_width: int) -> None:
        self.min_scale, self.max_scale = min_scale, max_scale
        self.target = (target_height, target_width)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        scale = rng.uniform(self.min_scale, self.max_scale)
        h, w = sample["image"].shape[:2]
        factor = min(self.target[0] * scale / h, self.target[1] * scale / w)
        return resize(sample, int(np.round(h * factor)), int(np.round(w * factor)))


class RandomCrop:
    """Random crop; with ``single_category_max_area < 1`` it retries (up to 10 times) for a window
    where no single non-ignored class covers more than that fraction and more than one class
    is present, keeping the last window tried if none qualifies."""

    def __init__(
        self,
        crop_size: Sequence[float],
        crop_type: str = "absolute",
        single_category_max_area: float = 1.0,
        ignore_value: Optional[int] = IGNORE_VALUE,
    ) -> None:
        if crop_type not in ("absolute", "relative", "relative_range", "absolute_range"):
            raise ValueError(f"unknown crop_type {crop_type!r}")
        self.crop_size, self.crop_type = tuple(crop_size), crop_type
        self.single_category_max_area, self.ignore_value = single_category_max_area, ignore_value

    def window(self, h: int, w: int, rng: np.random.Generator) -> tuple[int, int]:
        c = self.crop_size
        if self.crop_type == "absolute":
            return min(int(c[0]), h), min(int(c[1]), w)
        if self.crop_type == "relative":
            return int(h * c[0] + 0.5), int(w * c[1] + 0.5)
        if self.crop_type == "relative_range":
            ch, cw = np.asarray(c, dtype=np.float32) + rng.random(2) * (1 - np.asarray(c, dtype=np.float32))
            return int(h * ch + 0.5), int(w * cw + 0.5)
        return (int(rng.integers(min(h, c[0]), min(h, c[1]) + 1)), int(rng.integers(min(w, c[0]), min(w, c[1]) + 1)))

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        h, w = sample["image"].shape[:2]
        sem = sample.get("sem_seg")
        tries = 1 if self.single_category_max_area >= 1.0 or sem is None else 10
        for _ in range(tries):
            ch, cw = self.window(h, w, rng)
            y0, x0 = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
            if tries == 1:
                break
            labels, counts = np.unique(sem[y0 : y0 + ch, x0 : x0 + cw], return_counts=True)
            if self.ignore_value is not None:
                counts = counts[labels != self.ignore_value]
            if len(counts) > 1 and counts.max() < counts.sum() * self.single_category_max_area:
                break
        return crop(sample, y0, x0, ch, cw)


class FixedSizeCrop:
    """Large-scale jitter's crop: a random ``crop_size`` window where the image is larger, then
    padding at bottom/right up to ``crop_size`` where it is smaller."""

    def __init__(self, crop_size: Sequence[int], pad: bool = True, pad_value: float = 128.0, ignore_value: int = IGNORE_VALUE) -> None:
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.pad, self.pad_value, self.ignore_value = pad, pad_value, ignore_value

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        h, w = sample["image"].shape[:2]
        max_off = np.maximum(np.subtract((h, w), self.crop_size), 0)
        # One uniform draw scales both offsets, as the original does.
        y0, x0 = np.round(max_off * rng.uniform(0.0, 1.0)).astype(int).tolist()
        sample = crop(sample, y0, x0, min(h, self.crop_size[0]), min(w, self.crop_size[1]))
        if self.pad:
            sample = pad(sample, *self.crop_size, image_value=self.pad_value, ignore_value=self.ignore_value)
        return sample


class PadToSize:
    """Pad bottom/right to at least ``size`` (the semantic mapper's ``size_divisibility`` pad)."""

    def __init__(self, size: Sequence[int], image_value: float = 128.0, ignore_value: int = IGNORE_VALUE) -> None:
        self.size, self.image_value, self.ignore_value = (int(size[0]), int(size[1])), image_value, ignore_value

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return pad(sample, *self.size, image_value=self.image_value, ignore_value=self.ignore_value)


class RandomFlip:
    def __init__(self, prob: float = 0.5, horizontal: bool = True) -> None:
        self.prob, self.horizontal = prob, horizontal

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return flip(sample, self.horizontal) if rng.random() < self.prob else sample


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """float RGB in [0, 255] -> H in degrees [0, 360), S and V in [0, 1]."""
    rgb = rgb.astype(np.float32) / 255.0
    v = rgb.max(-1)
    delta = v - rgb.min(-1)
    s = np.where(v > 0, delta / np.maximum(v, 1e-12), 0.0)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    d = np.maximum(delta, 1e-12)
    h = np.where(v == r, (g - b) / d, np.where(v == g, 2.0 + (b - r) / d, 4.0 + (r - g) / d))
    h = np.where(delta > 0, (h * 60.0) % 360.0, 0.0)
    return np.stack([h, s, v], -1).astype(np.float32)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_hsv`, returning uint8 RGB."""
    h, s, v = hsv[..., 0] / 60.0, hsv[..., 1], hsv[..., 2]
    k = lambda n: (n + h) % 6  # noqa: E731
    f = lambda n: v - v * s * np.clip(np.minimum(k(n), 4 - k(n)), 0, 1)  # noqa: E731
    rgb = np.stack([f(5), f(3), f(1)], -1) * 255.0
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


class ColorAugSSD:
    """SSD-style photometric distortion (the original's ColorAugSSDTransform): random
    brightness, then contrast before or after saturation and hue, each step taken with
    probability 1/2 and clipped to uint8. ``hue_delta`` is in OpenCV units (half degrees)."""

    def __init__(self, brightness_delta: float = 32, contrast: tuple[float, float] = (0.5, 1.5),
                 saturation: tuple[float, float] = (0.5, 1.5), hue_delta: int = 18) -> None:
        self.brightness_delta, self.contrast, self.saturation, self.hue_delta = brightness_delta, contrast, saturation, hue_delta

    @staticmethod
    def _convert(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
        # Truncation, not rounding, as the original's astype(uint8).
        return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    def _contrast(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self._convert(img, alpha=rng.uniform(*self.contrast)) if rng.integers(2) else img

    def _saturation(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if not rng.integers(2):
            return img
        hsv = rgb_to_hsv(img)
        hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(*self.saturation), 0, 1)
        return hsv_to_rgb(hsv)

    def _hue(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if not rng.integers(2):
            return img
        hsv = rgb_to_hsv(img)
        hsv[..., 0] = (hsv[..., 0] + 2.0 * rng.integers(-self.hue_delta, self.hue_delta + 1)) % 360.0
        return hsv_to_rgb(hsv)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        img = sample["image"]
        if rng.integers(2):
            img = self._convert(img, beta=rng.uniform(-self.brightness_delta, self.brightness_delta))
        if rng.integers(2):
            img = self._hue(self._saturation(self._contrast(img, rng), rng), rng)
        else:
            img = self._contrast(self._hue(self._saturation(img, rng), rng), rng)
        out = dict(sample)
        out["image"] = img
        return out


# ---- the configs' pipelines --------------------------------------------------------------------

def semantic_augmentation(
    min_size_train: Sequence[int], max_size_train: int, crop_size: Sequence[int],
    single_category_max_area: float = 1.0, color_aug: bool = True, pad_to_crop: bool = False,
    ignore_value: int = IGNORE_VALUE,
) -> Compose:
    """The MaskFormer semantic/panoptic/instance mappers' order: resize, crop, colour, flip
    (and, where the config sets ``SIZE_DIVISIBILITY`` to the crop size, pad)."""
    augs: list[Augmentation] = [
        ResizeShortestEdge(min_size_train, max_size_train, "choice"),
        RandomCrop(crop_size, "absolute", single_category_max_area, ignore_value),
    ]
    if color_aug:
        augs.append(ColorAugSSD())
    augs.append(RandomFlip())
    if pad_to_crop:
        augs.append(PadToSize(crop_size, ignore_value=ignore_value))
    return Compose(augs)


def cityscapes_augmentation() -> Compose:
    return semantic_augmentation(scale_choices(1024), 4096, (512, 1024))


def ade20k_augmentation() -> Compose:
    return semantic_augmentation(scale_choices(512), 2048, (512, 512), pad_to_crop=True)


def lsj_augmentation(image_size: int = 1024, min_scale: float = 0.1, max_scale: float = 2.0) -> Compose:
    """COCO large-scale jitter: flip, resize to ``U(0.1, 2.0) * image_size``, crop/pad to square."""
    return Compose([
        RandomFlip(),
        ResizeScale(min_scale, max_scale, image_size, image_size),
        FixedSizeCrop((image_size, image_size)),
    ])


# ---- targets for the loss ----------------------------------------------------------------------

def build_targets(sample: Sample, task: str = "auto", ignore_value: int = IGNORE_VALUE) -> dict[str, torch.Tensor]:
    """Per-segment class labels and binary masks: ``{"labels": (N,) int64, "masks": (N,H,W) bool}``.

    ``semantic``: one mask per class present in ``sem_seg``, ignore excluded.
    ``panoptic`` / ``instance``: one mask per non-crowd segment (from ``masks`` or ``pan_seg``).
    ``auto`` picks instance when ``masks`` exist, panoptic when ``pan_seg`` does, else semantic.
    Masks left empty by cropping are dropped: they carry no signal for matching."""
    if task == "auto":
        task = "instance" if "masks" in sample else "panoptic" if "pan_seg" in sample else "semantic"
    h, w = sample["image"].shape[:2]
    labels: list[int] = []
    masks: list[np.ndarray] = []
    if task == "semantic":
        sem = sample["sem_seg"]
        for c in np.unique(sem).tolist():
            if c != ignore_value:
                labels.append(int(c))
                masks.append(sem == c)
    elif task in ("panoptic", "instance"):
        if "segments" not in sample:
            raise ValueError(f"{sample.get('file_name', 'sample')}: task {task!r} needs 'segments'")
        for i, seg in enumerate(sample["segments"]):
            if seg.get("iscrowd", 0):
                continue
            m = sample["masks"][i] if "masks" in sample else sample["pan_seg"] == seg["id"]
            if m.any():
                labels.append(int(seg["category_id"]))
                masks.append(m)
    else:
        raise ValueError(f"task must be 'auto', 'semantic', 'panoptic' or 'instance', not {task!r}")
    mask_t = torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, h, w), dtype=torch.bool)
    return {"labels": torch.tensor(labels, dtype=torch.int64), "masks": mask_t.bool()}


class AugmentedDataset(torch.utils.data.Dataset):
    """Wrap a dataset: augment each sample and attach loss targets. Item ``i`` of epoch ``e``
    uses ``default_rng([seed, e, i])``, so results do not depend on worker count or order.
    (Call ``set_epoch`` before each epoch; with persistent workers recreate the loader.)"""

    def __init__(self, dataset: Any, augmentation: Optional[Augmentation] = None, task: str = "auto",
                 seed: int = 0, ignore_value: int = IGNORE_VALUE) -> None:
        self.dataset, self.augmentation, self.task = dataset, augmentation, task
        self.seed, self.epoch, self.ignore_value = seed, 0, ignore_value

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.dataset[index]
        size = sample["image"].shape[:2]
        if self.augmentation is not None:
            sample = self.augmentation(sample, np.random.default_rng([self.seed, self.epoch, index]))
        out: dict[str, Any] = build_targets(sample, self.task, self.ignore_value)
        out["image"] = torch.from_numpy(np.ascontiguousarray(sample["image"].transpose(2, 0, 1)))
        out["file_name"] = sample.get("file_name", "")
        out["orig_size"] = tuple(size)
        for key in ("sem_seg", "padding_mask"):
            if key in sample:
                out[key] = torch.from_numpy(np.ascontiguousarray(sample[key]))
        return out


def collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch ``AugmentedDataset`` items: images padded bottom/right to the largest (0, with
    ``pixel_mask`` False there), masks padded with False, ``sem_seg`` with the ignore value;
    per-image ``labels`` and ``masks`` stay lists since their counts differ."""
    h = max(b["image"].shape[1] for b in batch)
    w = max(b["image"].shape[2] for b in batch)
    images = torch.zeros((len(batch), 3, h, w), dtype=torch.uint8)
    pixel_mask = torch.zeros((len(batch), h, w), dtype=torch.bool)
    out: dict[str, Any] = {"images": images, "pixel_mask": pixel_mask, "labels": [], "masks": [],
                           "file_names": [b.get("file_name", "") for b in batch]}
    for i, b in enumerate(batch):
        bh, bw = b["image"].shape[1:]
        images[i, :, :bh, :bw] = b["image"]
        pixel_mask[i, :bh, :bw] = True if "padding_mask" not in b else ~b["padding_mask"]
        out["labels"].append(b["labels"])
        out["masks"].append(torch.nn.functional.pad(b["masks"], (0, w - bw, 0, h - bh)))
    if all("sem_seg" in b for b in batch):
        out["sem_seg"] = torch.stack([
            torch.nn.functional.pad(b["sem_seg"], (0, w - b["sem_seg"].shape[1], 0, h - b["sem_seg"].shape[0]), value=IGNORE_VALUE)
            for b in batch
        ])
    return out
