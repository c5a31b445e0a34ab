"""Training targets from segmentation maps, as transformers' Mask2FormerImageProcessor makes
them: one binary mask per distinct value of a (resized) map plus its class id.

A map is a semantic map (value = class id) or, with ``instance_id_to_semantic_id``, an
instance map (value = instance id, the mapping gives its class). ``ignore_index`` values get no
mask; ``do_reduce_labels`` shifts ids down by one with 0 becoming ``ignore_index`` (ADE20K's
"0 = unlabelled"). Maps are resized with nearest neighbour to their image's size and padded
like the images; the padding of ``mask_labels`` holds ``ignore_index`` (transformers' fill
value; 0 when there is no ignore index, where transformers fails).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch import Tensor

InstanceMapping = Union[None, dict[int, int], Sequence[Optional[dict[int, int]]]]


def segmentation_map_array(segmentation_map: Any, name: str = "segmentation map") -> np.ndarray:
    """A map given as a PIL image, array or tensor (H, W), (1, H, W) or (H, W, 1) -> (H, W) integers."""
    if isinstance(segmentation_map, Image.Image):
        array = np.array(segmentation_map)
    elif isinstance(segmentation_map, Tensor):
        array = segmentation_map.detach().cpu().numpy()
    else:
        array = np.asarray(segmentation_map)
    if array.ndim == 3 and 1 in (array.shape[0], array.shape[-1]):
        array = array.reshape(array.shape[1:] if array.shape[0] == 1 else array.shape[:-1])
    if array.ndim != 2:
        raise ValueError(f"{name}: expected a (height, width) map of ids, got shape {tuple(array.shape)}")
    if array.dtype.kind == "f":
        if not np.all(array == np.round(array)):
            raise ValueError(f"{name}: ids must be whole numbers")
        array = array.astype(np.int64)
    elif array.dtype.kind not in "uib":
        raise ValueError(f"{name}: ids must be integers, not {array.dtype}")
    return array


def resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) ids -> ``size`` (height, width) by PIL's nearest neighbour, values unchanged."""
    if tuple(array.shape) == tuple(size):
        return array
    if array.dtype == np.uint8:
        return np.array(Image.fromarray(array).resize((size[1], size[0]), Image.Resampling.NEAREST))
    if array.min() < np.iinfo(np.int32).min or array.max() > np.iinfo(np.int32).max:
        raise ValueError("segmentation map ids must fit in 32 bits")
    resized = Image.fromarray(array.astype(np.int32), mode="I").resize((size[1], size[0]), Image.Resampling.NEAREST)
    return np.array(resized).astype(array.dtype)


def binary_masks_and_labels(
    segmentation_map: np.ndarray,
    instance_id_to_semantic_id: Optional[dict[int, int]] = None,
    ignore_index: Optional[int] = None,
    do_reduce_labels: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) ids -> ((N, H, W) float32 masks, (N,) int64 class ids), ids in ascending order."""
    if do_reduce_labels and ignore_index is None:
        raise ValueError("do_reduce_labels=True needs an ignore_index (the value that 0 becomes)")
    ids = segmentation_map.astype(np.int64)
    if do_reduce_labels:
        ids = np.where(ids == 0, ignore_index, ids - 1)
    values = np.unique(ids)
    if ignore_index is not None:
        values = values[values != ignore_index]
    masks = (ids[None] == values[:, None, None]).astype(np.float32)  # (N, H, W)
    if instance_id_to_semantic_id is None:
        return masks, values.astype(np.int64)
    shift = 1 if do_reduce_labels else 0
    missing = [int(v) + shift for v in values if int(v) + shift not in instance_id_to_semantic_id]
    if missing:
        raise ValueError(f"instance_id_to_semantic_id has no class for instance ids {missing[:10]}")
    labels = np.array([instance_id_to_semantic_id[int(v) + shift] - shift for v in values], dtype=np.int64)
    return masks, labels


def _mapping_for(mapping: InstanceMapping, index: int, count: int) -> Optional[dict[int, int]]:
    if mapping is None or isinstance(mapping, dict):
        return mapping
    if len(mapping) != count:
        raise ValueError(f"instance_id_to_semantic_id has {len(mapping)} mappings for {count} segmentation maps")
    return mapping[index]


def encode_targets(
    segmentation_maps: Sequence[Any],
    resized_sizes: Sequence[tuple[int, int]],
    padded_size: tuple[int, int],
    instance_id_to_semantic_id: InstanceMapping = None,
    ignore_index: Optional[int] = None,
    do_reduce_labels: bool = False,
    return_tensors: Optional[str] = "pt",
) -> tuple[list[Any], list[Any]]:
    """Per image ((N, H, W) mask_labels at the padded size, (N,) class_labels), as tensors
    (``return_tensors="pt"``) or arrays. ``resized_sizes``: each image's size after resizing."""
    if len(segmentation_maps) != len(resized_sizes):
        raise ValueError(f"{len(segmentation_maps)} segmentation maps for {len(resized_sizes)} images")
    mask_labels, class_labels = [], []
    fill = 0 if ignore_index is None else ignore_index
    for i, (seg, size) in enumerate(zip(segmentation_maps, resized_sizes)):
        ids = resize_nearest(segmentation_map_array(seg, f"segmentation map {i}"), size)
        masks, labels = binary_masks_and_labels(
            ids, _mapping_for(instance_id_to_semantic_id, i, len(segmentation_maps)), ignore_index, do_reduce_labels)
        padded = np.full((masks.shape[0], *padded_size), fill, dtype=np.float32)
        padded[:, : masks.shape[1], : masks.shape[2]] = masks
        mask_labels.append(torch.from_numpy(padded) if return_tensors == "pt" else padded)
        class_labels.append(torch.from_numpy(labels) if return_tensors == "pt" else labels)
    return mask_labels, class_labels


def binary_mask_to_rle(mask: Union[Tensor, np.ndarray]) -> list[int]:
    """transformers' run-length encoding of an (H, W) binary mask: for each run of ones (in
    row-major order), its 1-based start position and its length, one after the other."""
    flat = (mask.detach().cpu().numpy() if isinstance(mask, Tensor) else np.asarray(mask)).reshape(-1) != 0
    edges = np.flatnonzero(np.diff(np.concatenate([[False], flat, [False]]).astype(np.int8)))  # run starts/ends
    starts, ends = edges[0::2], edges[1::2]
    out = np.empty(2 * len(starts), dtype=np.int64)
    out[0::2], out[1::2] = starts + 1, ends - starts
    return out.tolist()
