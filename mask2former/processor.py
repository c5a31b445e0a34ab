"""The image processor: images -> ``pixel_values`` / ``pixel_mask``, and network outputs ->
semantic / instance / panoptic predictions, configured by a Hugging Face
``preprocessor_config.json``.

Pre-processing gives the same pixel values as transformers' PIL-backend
``Mask2FormerImageProcessorPil`` (what ``transformers.Mask2FormerImageProcessor`` is when
torchvision is missing): PIL resize of the 8-bit image, then ``float64 * rescale_factor``
cast to float32, then ``(x - mean) / std`` in float32, zero padding bottom/right. The
torchvision backend resizes with torch's antialiased kernel instead, which differs from PIL
by rounding (about one 8-bit level on some pixels). As in transformers, ``size_divisor``
rounds the *resized* size up to a multiple (stretching the image slightly), it does not pad;
``pad_to_multiple_of`` (ours, detectron2's ``size_divisibility``) pads the batch instead.

Deliberate differences: images are converted by :mod:`mask2former.image_io` (EXIF rotation,
16-bit scaling, transparency onto white for every input, no RGB flag needed); a size of
``{"shortest_edge": s}`` alone is accepted (no cap on the long side); pixel values are
always float32; post-processing follows the original Mask2Former (see
:mod:`mask2former.postprocess`), not transformers' 384x384 shortcut.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from typing import Any, Collection, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .image_io import ImageLike, to_rgb_array
from .io import atomic_write_text
from .postprocess import (
    DEFAULT_MAX_BYTES,
    image_resizers,
    instance_inference,
    panoptic_inference,
    semantic_segmentation,
)
from .processor_targets import binary_mask_to_rle, encode_targets  # noqa: F401 (binary_mask_to_rle: transformers' import path)

CONFIG_NAME = "preprocessor_config.json"
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
_HUB_KWARGS = ("revision", "cache_dir", "local_files_only", "token", "force_download")
_IGNORED_KWARGS = ("use_fast", "trust_remote_code", "backend")
_SIZE_KEYS = ({"height", "width"}, {"shortest_edge"}, {"shortest_edge", "longest_edge"}, {"max_height", "max_width"})
SizeLike = Union[int, Sequence[int], dict]


class BatchFeature(dict):
    """The processor's output: a dict (so ``model(**inputs)`` works) with attribute access.

    ``original_sizes`` / ``resized_sizes`` (lists of (height, width)) are attributes, not
    keys, so they do not reach the model as arguments.
    """

    original_sizes: list[tuple[int, int]]
    resized_sizes: list[tuple[int, int]]

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to(self, *args: Any, **kwargs: Any) -> "BatchFeature":
        """Move tensors like ``Tensor.to(device, dtype)``; a dtype applies to float tensors only."""
        device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
        for arg in args:
            if isinstance(arg, torch.dtype):
                dtype = arg
            else:
                device = arg
        def move(value: Any) -> Any:
            if isinstance(value, Tensor):
                return value.to(device=device, dtype=dtype if value.is_floating_point() else None, **kwargs)
            if isinstance(value, (list, tuple)):  # mask_labels / class_labels: one tensor per image
                return type(value)(move(v) for v in value)
            return value

        out = BatchFeature({key: move(value) for key, value in self.items()})
        out.__dict__.update(self.__dict__)
        return out


def normalize_size(size: Optional[SizeLike], max_size: Optional[int] = None) -> dict:
    """A size in any of transformers' spellings as a size dict (int = shortest edge)."""
    if size is None:
        size = {"shortest_edge": 800, "longest_edge": max_size or 1333}
    elif isinstance(size, int):
        size = {"shortest_edge": size} if max_size is None else {"shortest_edge": size, "longest_edge": max_size}
    elif isinstance(size, (list, tuple)):
        size = {"height": int(size[0]), "width": int(size[1])}
    size = {k: int(v) for k, v in dict(size).items() if v is not None}
    if set(size) not in _SIZE_KEYS:
        raise ValueError(f"size must have one of the key sets {[sorted(s) for s in _SIZE_KEYS]}; got {size}")
    return size


def resized_size(height: int, width: int, size: dict, size_divisor: int = 0) -> tuple[int, int]:
    """Output (height, width) of the resize step for an image of (height, width).

    shortest_edge[/longest_edge]: the short side becomes shortest_edge unless that makes the
    long side exceed longest_edge, in which case the long side is capped (the exact
    arithmetic of transformers, truncating the computed side). size_divisor > 0 rounds
    both sides up to a multiple.
    """
    if "shortest_edge" in size:
        target, cap = size["shortest_edge"], size.get("longest_edge")
        short, long = float(min(height, width)), float(max(height, width))
        exact = None
        if cap is not None and long / short * target > cap:
            exact = cap * short / long
            target = int(round(exact))
        scale_by = exact if exact is not None else target
        if min(height, width) == target:
            new = (height, width)
        elif width < height:
            new = (int(scale_by * height / width), target)
        else:
            new = (target, int(scale_by * width / height))
    elif "max_height" in size:
        scale = min(size["max_height"] / height, size["max_width"] / width)
        new = (int(height * scale), int(width * scale))
    else:
        new = (size["height"], size["width"])
    if size_divisor > 0:
        new = (math.ceil(new[0] / size_divisor) * size_divisor, math.ceil(new[1] / size_divisor) * size_divisor)
    return new


def rgb_statistics(values: Union[float, Sequence[float]], name: str) -> list[float]:
    """A mean or std for the RGB channels every image is converted to: one value (or one per
    gray / gray+alpha channel: the gray one) for all three, or RGB(A)'s first three."""
    vals = [float(values)] if isinstance(values, (int, float)) else [float(v) for v in values]
    if len(vals) in (1, 2):
        return [vals[0]] * 3
    if len(vals) in (3, 4):
        return vals[:3]
    raise ValueError(f"{name} needs 1 or 3 values (images are converted to RGB); got {len(vals)}")


def _channels_last(image: Any, input_data_format: Optional[str]) -> Any:
    """An array or tensor image in the layout ``to_rgb_array`` expects (arrays HxWxC, tensors
    CxHxW), given transformers' ``input_data_format``."""
    fmt = getattr(input_data_format, "value", input_data_format)
    if fmt is None or not isinstance(image, (np.ndarray, Tensor)) or image.ndim != 3:
        return image
    if fmt not in ("channels_first", "channels_last"):
        raise ValueError(f"input_data_format must be 'channels_first' or 'channels_last'; got {fmt!r}")
    if isinstance(image, np.ndarray) and fmt == "channels_first":
        return np.moveaxis(image, 0, -1)
    if isinstance(image, Tensor) and fmt == "channels_last":
        return image.permute(2, 0, 1)
    return image


def _image_list(images: Any) -> list:
    if isinstance(images, (list, tuple)):
        batch = list(images)
    elif isinstance(images, (np.ndarray, Tensor)) and images.ndim == 4:
        batch = list(images)
    else:
        batch = [images]
    if not batch:
        raise ValueError("no images given")
    return batch


class Mask2FormerImageProcessor:
    """Pre- and post-processing for Mask2Former; see the module notes for the exact rules."""

    model_input_names = ["pixel_values", "pixel_mask"]
    # The original's SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE for the checkpoint this processor
    # came with: off for semantic-only checkpoints (class x mask combined at the padded input
    # size, then cropped and resized), on for panoptic/instance ones. None: not known (on).
    # Set by from_pretrained from the checkpoint; not part of preprocessor_config.json.
    semantic_resize_first: Optional[bool] = None

    def __init__(
        self,
        do_resize: bool = True,
        size: Optional[SizeLike] = None,
        resample: int = Image.Resampling.BILINEAR,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: Union[float, Sequence[float]] = IMAGENET_MEAN,
        image_std: Union[float, Sequence[float]] = IMAGENET_STD,
        size_divisor: int = 32,
        ignore_index: Optional[int] = None,
        do_reduce_labels: Optional[bool] = None,
        num_labels: Optional[int] = None,
        pad_size: Optional[SizeLike] = None,
        pad_to_multiple_of: int = 0,
        **extra: Any,
    ) -> None:
        self.do_resize = bool(do_resize)
        if "size_divisibility" in extra:  # transformers' older name
            size_divisor = extra.pop("size_divisibility")
        self.size = normalize_size(size, extra.pop("max_size", None))
        self.resample = int(resample)
        self.do_rescale = bool(do_rescale)
        self.rescale_factor = float(rescale_factor)
        self.do_normalize = bool(do_normalize)
        self.image_mean = rgb_statistics(image_mean, "image_mean")
        self.image_std = rgb_statistics(image_std, "image_std")
        self.size_divisor = int(size_divisor or 0)
        self.ignore_index = ignore_index
        # Older configs spell it "reduce_labels"; that key stays in ``extra`` and is written back.
        if do_reduce_labels is None:
            do_reduce_labels = extra.get("reduce_labels", False)
        self.do_reduce_labels = bool(do_reduce_labels)
        self.num_labels = num_labels
        self.pad_size = None if pad_size is None else normalize_size(pad_size)
        if self.pad_size is not None and set(self.pad_size) != {"height", "width"}:
            raise ValueError(f"pad_size must be {{height, width}}; got {self.pad_size}")
        self.pad_to_multiple_of = int(pad_to_multiple_of or 0)
        extra.pop("image_processor_type", None)
        self.extra = extra  # unknown keys, written back as read

    # -- configuration -------------------------------------------------------------------
    _KNOWN = ("do_resize", "size", "resample", "do_rescale", "rescale_factor", "do_normalize", "image_mean",
              "image_std", "size_divisor", "ignore_index", "do_reduce_labels", "num_labels", "pad_size",
              "pad_to_multiple_of")

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.extra)
        for key in self._KNOWN:
            value = getattr(self, key)
            if value is None or (key == "pad_to_multiple_of" and value == 0):
                continue  # not part of transformers' format unless set
            # Tuples for the mean and std, as transformers' to_dict gives them.
            out[key] = dict(value) if isinstance(value, dict) else tuple(value) if isinstance(value, list) else value
        out["image_processor_type"] = "Mask2FormerImageProcessor"
        return out

    @classmethod
    def from_dict(cls, config: dict[str, Any], **overrides: Any) -> "Mask2FormerImageProcessor":
        return cls(**{**config, **overrides})

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: Union[str, os.PathLike]) -> None:
        atomic_write_text(os.fspath(json_file_path), self.to_json_string())

    @classmethod
    def from_json_file(cls, json_file_path: Union[str, os.PathLike]) -> "Mask2FormerImageProcessor":
        with open(json_file_path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def save_pretrained(self, save_directory: Union[str, os.PathLike]) -> list[str]:
        """Write ``preprocessor_config.json`` into ``save_directory`` (created if needed)."""
        os.makedirs(save_directory, exist_ok=True)
        path = os.path.join(os.fspath(save_directory), CONFIG_NAME)
        atomic_write_text(path, self.to_json_string())
        return [path]

    @classmethod
    def from_pretrained(cls, name_or_path: Union[str, os.PathLike], **kwargs: Any) -> "Mask2FormerImageProcessor":
        """From a folder, a ``preprocessor_config.json`` path, or a hub id.

        Hub options (revision, cache_dir, local_files_only, token, force_download) go to the
        download; transformers-only flags (use_fast, trust_remote_code) are ignored; other
        keyword arguments override config values.
        """
        hub_kwargs = {k: kwargs.pop(k) for k in _HUB_KWARGS if k in kwargs}
        for key in _IGNORED_KWARGS:
            kwargs.pop(key, None)
        path = os.fspath(name_or_path)
        if not (os.path.isfile(path) and path.endswith(".json")):
            from .checkpoint.hub import resolve_file

            path = resolve_file(name_or_path, CONFIG_NAME, **hub_kwargs)  # type: ignore[assignment]
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
        if not isinstance(config, dict):
            raise ValueError(f"{path}: expected a JSON object")
        kind = config.get("image_processor_type")
        if kind and "MaskFormer" not in kind and "Mask2Former" not in kind:
            warnings.warn(f"{path}: image_processor_type is {kind!r}; reading it as Mask2Former's", stacklevel=2)
        processor = cls.from_dict(config, **kwargs)
        from .model_info import checkpoint_task

        task = checkpoint_task(name_or_path, os.path.dirname(path), hub_kwargs)
        processor.semantic_resize_first = None if task is None else task != "semantic"
        return processor

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mask2FormerImageProcessor) and self.to_dict() == other.to_dict()

    # -- pre-processing ------------------------------------------------------------------
    def _pixels(self, image: ImageLike, settings: dict[str, Any]) -> tuple[Tensor, tuple[int, int]]:
        """One image -> ((3, h, w) float32 tensor, original (height, width))."""
        rgb = to_rgb_array(image)  # (H, W, 3) uint8
        original = (rgb.shape[0], rgb.shape[1])
        if settings["do_resize"]:
            h, w = resized_size(*original, normalize_size(settings["size"]), int(settings["size_divisor"] or 0))
            if (h, w) != original:
                rgb = np.array(Image.fromarray(rgb).resize((w, h), resample=Image.Resampling(settings["resample"])))
        pixels = (torch.from_numpy(rgb) if rgb.flags.writeable else torch.tensor(rgb)).permute(2, 0, 1)
        # Rescale in float64 and cast, then normalize in float32: transformers' rounding.
        if settings["do_rescale"]:
            pixels = (pixels.to(torch.float64) * float(settings["rescale_factor"])).to(torch.float32)
        else:
            pixels = pixels.to(torch.float32)
        if settings["do_normalize"]:
            mean = torch.tensor(rgb_statistics(settings["image_mean"], "image_mean"), dtype=torch.float32).view(3, 1, 1)
            std = torch.tensor(rgb_statistics(settings["image_std"], "image_std"), dtype=torch.float32).view(3, 1, 1)
            pixels = (pixels - mean) / std
        return pixels, original

    # Accepted for transformers compatibility; nothing to choose here (conversion to RGB
    # always happens, outputs are always channels-first, pixel masks always returned).
    _ACCEPTED = ("do_convert_rgb", "data_format", "pad_and_return_pixel_mask", "return_pixel_mask", "device")

    def __call__(
        self,
        images: Any,
        segmentation_maps: Any = None,
        instance_id_to_semantic_id: Any = None,
        return_tensors: Optional[str] = "pt",
        input_data_format: Optional[str] = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Images (one, a list, or a 4-D array/tensor batch) -> BatchFeature with
        ``pixel_values`` (B, 3, H, W) float32 and ``pixel_mask`` (B, H, W) int64 (1 = image).

        With ``segmentation_maps`` (one per image: semantic ids, or instance ids with
        ``instance_id_to_semantic_id``, one dict or one per image) also the training targets
        ``mask_labels`` (per image (N, H, W) float32) and ``class_labels`` (per image (N,)
        int64), as transformers makes them (see :mod:`mask2former.processor_targets`).
        ``input_data_format``: "channels_first" / "channels_last" for array and tensor images
        whose layout is ambiguous. Other keyword arguments override this processor's settings
        for this call.
        """
        kwargs = {("size_divisor" if k == "size_divisibility" else k): v for k, v in kwargs.items()
                  if k not in self._ACCEPTED}
        unknown = set(kwargs) - set(self._KNOWN)
        if unknown:
            raise TypeError(f"unexpected arguments: {sorted(unknown)}")
        if return_tensors not in ("pt", "np", None):
            raise ValueError(f"return_tensors must be 'pt' or 'np'; got {return_tensors!r}")
        settings = {key: kwargs.get(key, getattr(self, key)) for key in self._KNOWN}
        batch = [_channels_last(image, input_data_format) for image in _image_list(images)]
        processed = [self._pixels(image, settings) for image in batch]
        heights = [p.shape[1] for p, _ in processed]
        widths = [p.shape[2] for p, _ in processed]
        height, width = max(heights), max(widths)
        if settings["pad_size"] is not None:
            pad = normalize_size(settings["pad_size"])
            if pad["height"] < height or pad["width"] < width:
                raise ValueError(f"pad_size {pad} is smaller than the largest resized image ({height}, {width})")
            height, width = pad["height"], pad["width"]
        multiple = int(settings["pad_to_multiple_of"] or 0)
        if multiple > 0:
            height, width = math.ceil(height / multiple) * multiple, math.ceil(width / multiple) * multiple
        pixel_values = torch.zeros((len(processed), 3, height, width), dtype=torch.float32)
        pixel_mask = torch.zeros((len(processed), height, width), dtype=torch.int64)
        for i, (pixels, _) in enumerate(processed):
            pixel_values[i, :, : pixels.shape[1], : pixels.shape[2]] = pixels
            pixel_mask[i, : pixels.shape[1], : pixels.shape[2]] = 1
        out = BatchFeature(pixel_values=pixel_values, pixel_mask=pixel_mask)
        if return_tensors != "pt":
            out = BatchFeature(pixel_values=pixel_values.numpy(), pixel_mask=pixel_mask.numpy())
        if segmentation_maps is not None:
            maps = segmentation_maps if isinstance(segmentation_maps, (list, tuple)) else [segmentation_maps]
            out["mask_labels"], out["class_labels"] = encode_targets(
                maps, list(zip(heights, widths)), (height, width), instance_id_to_semantic_id,
                settings["ignore_index"], settings["do_reduce_labels"], return_tensors)
        out.original_sizes = [original for _, original in processed]
        out.resized_sizes = list(zip(heights, widths))
        return out

    def encode_inputs(self, pixel_values_list: Any, segmentation_maps: Any = None,
                      instance_id_to_semantic_id: Any = None, ignore_index: Optional[int] = None,
                      return_tensors: Optional[str] = "pt", **kwargs: Any) -> BatchFeature:
        """transformers' ``encode_inputs``: the images as they are (no resize, rescale or
        normalisation), padded, with targets from ``segmentation_maps``."""
        if ignore_index is not None:
            kwargs["ignore_index"] = ignore_index
        return self(pixel_values_list, segmentation_maps, instance_id_to_semantic_id, return_tensors=return_tensors,
                    **{**kwargs, "do_resize": False, "do_rescale": False, "do_normalize": False})

    preprocess = __call__

    # -- post-processing -----------------------------------------------------------------
    def post_process_semantic_segmentation(
        self,
        outputs: Any,
        target_sizes: Optional[Sequence[Sequence[int]]] = None,
        *,
        resize_before_inference: Optional[bool] = None,
        pixel_mask: Optional[Tensor] = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> list[Tensor]:
        """One (H, W) int64 class map per image. Each image's valid region (from
        ``outputs.pixel_mask`` or ``pixel_mask``) is cropped, then resized to its target size
        (default: the valid region's size). See :func:`postprocess.semantic_segmentation`.

        ``resize_before_inference`` defaults to the order the original uses for this
        processor's checkpoint (:attr:`semantic_resize_first`), so that this and
        ``Segmenter`` / ``mask2former segment`` give the same map."""
        if resize_before_inference is None:
            resize_before_inference = self.semantic_resize_first is not False
        return [
            semantic_segmentation(cls, resizer, resize_before_inference, max_bytes)
            for cls, resizer in image_resizers(outputs, target_sizes, pixel_mask, max_bytes)
        ]

    def post_process_instance_segmentation(
        self,
        outputs: Any,
        threshold: float = 0.5,
        mask_threshold: float = 0.5,
        overlap_mask_area_threshold: float = 0.8,
        target_sizes: Optional[Sequence[Sequence[int]]] = None,
        return_coco_annotation: bool = False,
        return_binary_maps: bool = False,
        *,
        top_k: int = 100,
        thing_label_ids: Optional[Collection[int]] = None,
        drop_empty: bool = False,
        pixel_mask: Optional[Tensor] = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> list[dict[str, Any]]:
        """Per image ``{"segmentation", "segments_info"}``, instances best score first.

        The original's top-k instance inference (``top_k`` = its DETECTIONS_PER_IMAGE),
        keeping instances with score >= ``threshold``. With ``threshold=0`` this is the
        original's list: exactly ``top_k`` instances (fewer only if queries x classes is
        smaller), empty masks (score 0) included; ``drop_empty`` drops those, as
        transformers always does.
        ``segmentation``: (H, W) int32 of segment ids, -1 where none, a pixel going to its
        highest-scoring instance; or with ``return_binary_maps`` the (N, H, W) bool masks
        (overlaps kept); or with ``return_coco_annotation`` transformers' run-length lists
        (:func:`binary_mask_to_rle`) of each id of that map in increasing order, -1 (pixels of
        no instance) first when there are any, exactly as transformers returns them (COCO
        RLE dicts per instance: ``SegmentationResult.coco_instances``). segments_info: id, label_id, was_fused (False), score, area.
        ``overlap_mask_area_threshold`` is accepted for compatibility and unused, as in
        transformers.
        """
        if return_coco_annotation and return_binary_maps:
            raise ValueError("return_coco_annotation and return_binary_maps cannot both be True")
        results = []
        for cls, resizer in image_resizers(outputs, target_sizes, pixel_mask, max_bytes):
            pred = instance_inference(
                cls, resizer, top_k, thing_label_ids, mask_threshold, score_threshold=threshold,
                drop_empty=drop_empty, max_bytes=max_bytes,
            )
            masks = pred.masks
            assert masks is not None
            segments = [
                {"id": i, "label_id": int(label), "was_fused": False, "score": float(score), "area": int(area)}
                for i, (label, score, area) in enumerate(zip(pred.labels, pred.scores, pred.areas))
            ]
            if return_binary_maps:
                segmentation: Any = masks
            else:
                segmentation = torch.full(resizer.output_size, -1, dtype=torch.int32, device=masks.device)
                for i in reversed(range(masks.shape[0])):  # best last, so it wins overlaps
                    segmentation[masks[i]] = i
                if return_coco_annotation:  # transformers' format: one run-length list per id in the map
                    segmentation = [binary_mask_to_rle(segmentation == i) for i in torch.unique(segmentation)]
            results.append({"segmentation": segmentation, "segments_info": segments})
        return results

    def post_process_panoptic_segmentation(
        self,
        outputs: Any,
        threshold: float = 0.8,
        mask_threshold: float = 0.5,
        overlap_mask_area_threshold: float = 0.8,
        label_ids_to_fuse: Optional[Collection[int]] = None,
        target_sizes: Optional[Sequence[Sequence[int]]] = None,
        *,
        pixel_mask: Optional[Tensor] = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> list[dict[str, Any]]:
        """Per image ``{"segmentation": (H, W) int32 segment ids (0 = none), "segments_info"}``.

        The original panoptic inference with object_mask_threshold = ``threshold`` (0.8 as in
        the original; transformers defaults to 0.5) and overlap_threshold =
        ``overlap_mask_area_threshold``; ``label_ids_to_fuse`` are the
        stuff classes (one segment per class); without it every class is a thing, as in
        transformers. See :func:`postprocess.panoptic_inference` for segments_info.
        """
        results = []
        for cls, resizer in image_resizers(outputs, target_sizes, pixel_mask, max_bytes):
            segmentation, segments = panoptic_inference(
                cls, resizer, threshold, overlap_mask_area_threshold, mask_threshold,
                stuff_ids=label_ids_to_fuse or (), max_bytes=max_bytes,
            )
            results.append({"segmentation": segmentation, "segments_info": segments})
        return results


class AutoImageProcessor:
    """``AutoImageProcessor.from_pretrained(...)`` as in model cards; always Mask2Former's."""

    def __init__(self) -> None:
        raise TypeError("use AutoImageProcessor.from_pretrained(name_or_path)")

    @classmethod
    def from_pretrained(cls, name_or_path: Union[str, os.PathLike], **kwargs: Any) -> Mask2FormerImageProcessor:
        return Mask2FormerImageProcessor.from_pretrained(name_or_path, **kwargs)
