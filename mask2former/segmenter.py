"""High-level API: images or paths in, label maps / segments / instances out.

``Segmenter`` is what the command line runs, so what ``mask2former segment`` writes is exactly
what this returns. Images are batched only with images of the same processed size, so no
image is ever padded for the sake of another and results do not depend on batch composition.
"""
from __future__ import annotations

import contextlib
import copy
import os
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from . import heap
from . import outputs as out_files
from . import precision as precision_mod
from . import tta as tta_mod
from .devices import resolve_device
from .image_io import ImageLoadError, to_rgb_array
from .model import Mask2FormerForUniversalSegmentation
from .processor import Mask2FormerImageProcessor, resized_size

TASKS = ("semantic", "instance", "panoptic")
DEFAULT_SHOW_THRESHOLD = 0.5  # instances a picture paints: the original demo's score threshold
ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor]


def original_test_size(h: int, w: int, short: int, long: int) -> tuple[int, int]:
    """detectron2's ResizeShortestEdge at test time (rounded, not truncated like transformers)."""
    scale = short / min(h, w)
    nh, nw = (short, scale * w) if h < w else (scale * h, short)
    if max(nh, nw) > long:
        shrink = long / max(nh, nw)
        nh, nw = nh * shrink, nw * shrink
    return int(nh + 0.5), int(nw + 0.5)


@dataclass
class SegmentationResult:
    """One image's prediction. ``labels`` (H, W) holds class ids for every task (-1 = void:
    panoptic pixels no segment claims, pixels no instance covers)."""

    source: str
    image: np.ndarray
    task: str
    labels: np.ndarray
    id2label: dict[int, str]
    palette: list[tuple[int, int, int]]
    segment_ids: Optional[np.ndarray] = None  # panoptic: segment id per pixel (0 = void)
    segments: list[dict[str, Any]] = field(default_factory=list)
    instance_masks: Optional[np.ndarray] = None  # instance: (N, H, W) bool, best score first

    @property
    def class_names(self) -> list[str]:
        return [self.id2label[i] for i in range(len(self.id2label))]

    def shown(self, min_score: float = DEFAULT_SHOW_THRESHOLD) -> "SegmentationResult":
        """The result as a picture shows it: for the instance task, ``labels`` painted with the
        instances scoring at least ``min_score`` only (the full list stays in ``segments``
        and ``instance_masks``, for the COCO results). Other tasks: ``self``."""
        if self.task != "instance" or self.instance_masks is None:
            return self
        labels = np.full(self.labels.shape, out_files.VOID, dtype=np.int64)
        for m, s in reversed(list(zip(self.instance_masks, self.segments))):  # best last: it wins overlaps
            if float(s["score"]) >= min_score:
                labels[m] = s["label_id"]
        return replace(self, labels=labels)

    def overlay(self, alpha: float = 0.5) -> np.ndarray:
        return out_files.overlay(self.image, self.labels, self.palette, alpha, self.segment_ids)

    def area_table(self) -> list[dict[str, Any]]:
        return out_files.area_rows(self.labels, self.class_names)

    def save_labels(self, path: str) -> None:
        out_files.save_png(out_files.label_png_array(self.labels, len(self.id2label)), path)

    def save_overlay(self, path: str, alpha: float = 0.5) -> None:
        out_files.save_image(self.overlay(alpha), path)

    def save_area_table(self, csv_path: str, json_path: Optional[str] = None) -> None:
        out_files.write_area_table(self.area_table(), csv_path, json_path)

    def panoptic_annotation(self, file_name: str, image_id: Any) -> dict[str, Any]:
        """This image's entry of a COCO panoptic JSON (categories are our class ids)."""
        infos = []
        for s in self.segments:
            ys, xs = np.nonzero(self.segment_ids == s["id"])
            bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
            infos.append({"id": int(s["id"]), "category_id": int(s["category_id"]), "iscrowd": 0,
                          "isthing": bool(s["isthing"]), "area": int(len(xs)), "bbox": bbox,
                          "score": _score(s.get("score", 1.0))})
        return {"image_id": image_id, "file_name": file_name, "segments_info": infos}

    def save_panoptic_png(self, path: str) -> None:
        out_files.save_png(out_files.id2rgb(self.segment_ids), path)

    def coco_instances(self, image_id: Any) -> list[dict[str, Any]]:
        """COCO results entries (RLE masks via pycocotools)."""
        from pycocotools import mask as mask_utils

        entries = []
        for s, m in zip(self.segments, self.instance_masks):
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            entries.append({"image_id": image_id, "category_id": int(s["label_id"]), "score": _score(s["score"]),
                            "segmentation": rle, "area": int(s["area"])})
        return entries


class SegmentationError(ImageLoadError):
    """An input that could not be segmented; ``message`` (also ``str()``) is one line naming it.

    ``Segmenter.stream`` yields one in place of each bad input; ``Segmenter.__call__`` raises
    it. An ``OSError`` (through ``ImageLoadError``), so ``except OSError`` keeps working."""

    def __init__(self, source: str, message: str) -> None:
        OSError.__init__(self, message)  # the message already names the input: not "source: message"
        self.source = self.path = source
        self.message = self.reason = message

    def __repr__(self) -> str:
        return f"SegmentationError(source={self.source!r}, message={self.message!r})"

    def __eq__(self, other: object) -> bool:  # compared like the dataclass it used to be
        if not isinstance(other, SegmentationError):
            return NotImplemented
        return (self.source, self.message) == (other.source, other.message)

    __hash__ = Exception.__hash__


class Segmenter:
    """``Segmenter(model, task=...)(images)`` -> one :class:`SegmentationResult` per image.

    model: a loaded model, a folder, hub id or ``.pkl``. task: defaults to the one the
    checkpoint was trained for. resize: "original" (the original's test-time resize for the
    checkpoint's dataset, padding to a multiple of 32) or "config" (the checkpoint's
    ``preprocessor_config.json`` as is). tta / tta_scales / tta_flip, sliding_window (h, w)
    / window_overlap: semantic task only, see :mod:`mask2former.tta`. precision: "fp32"
    (exact, default), "bf16", "fp16" (CUDA) or "int8" (CPU), see :mod:`mask2former.precision`;
    ``self.precision`` says what runs. num_threads: CPU threads (default: one per physical
    core, unless OMP_NUM_THREADS/MKL_NUM_THREADS chose). compile: ``torch.compile`` the
    backbone (off by default; compiles for seconds per new input size). backend: "torch",
    "onnxruntime" or "openvino" (default: onnxruntime for a ``.onnx`` path, else torch), see
    :mod:`mask2former.runtime`.
    """

    def __init__(self, model: Union[str, os.PathLike, Mask2FormerForUniversalSegmentation], task: Optional[str] = None,
                 device: Optional[str] = None, resize: str = "original", batch_size: int = 1,
                 processor: Optional[Mask2FormerImageProcessor] = None, threshold: Optional[float] = None,
                 overlap_threshold: float = 0.8, mask_threshold: float = 0.5, tta: bool = False,
                 tta_scales: Sequence[float] = tta_mod.DEFAULT_TTA_SCALES, tta_flip: bool = True,
                 sliding_window: Optional[Sequence[int]] = None,
                 window_overlap: float = tta_mod.DEFAULT_WINDOW_OVERLAP, precision: str = "fp32",
                 num_threads: Optional[int] = None, compile: bool = False, backend: Optional[str] = None):
        from . import runtime
        from .model_info import ModelInfo

        self.device = resolve_device(device)  # before loading: a bad device is one line, at once
        name = os.fspath(model) if isinstance(model, (str, os.PathLike)) else getattr(model, "source", "")
        self.backend = runtime.choose_backend(model, backend)
        if self.backend != "torch":  # an exported .onnx (see mask2former.runtime)
            self.model = runtime.load_backend(model, self.backend, device, precision, num_threads)
            self.device = torch.device("cpu")
            self.precision, self.info = self.model.precision, self.model.info
        else:
            owned = isinstance(model, (str, os.PathLike))
            if owned:
                model = Mask2FormerForUniversalSegmentation.from_pretrained(model)
            self.model = model.to(self.device).eval()
            if self.device.type == "cpu":
                precision_mod.configure_threads(num_threads)
            # Optional faster numerics; int8 runs on a quantised copy (the caller's model is
            # untouched), or quantises in place a model loaded here (no second float copy);
            # bf16 / fp16 store such a model's matmul and conv weights in their dtype.
            self.model, self.precision = precision_mod.prepare(self.model, precision, self.device, compile=compile,
                                                               owned=owned)
            self.info = ModelInfo.of(self.model, name)
        self.task = task or self.info.task
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, not {self.task!r}")
        if resize not in ("original", "config"):
            raise ValueError("resize must be 'original' or 'config'")
        self.resize = resize
        self.processor = processor or self.info.processor()
        # The original's order of semantic post-processing for this checkpoint's task (the
        # processor's own when it knows its checkpoint), as the card's snippet uses it.
        own = self.processor.semantic_resize_first
        self.semantic_resize_first = own if own is not None else self.info.task != "semantic"
        self.batch_size = max(1, int(batch_size))
        # The original's defaults: object mask threshold 0.8 (panoptic); instances kept by top-k.
        self.threshold = threshold if threshold is not None else (0.8 if self.task == "panoptic" else 0.0)
        self.overlap_threshold = overlap_threshold
        self.mask_threshold = mask_threshold
        # Semantic only (see mask2former.tta): multi-scale + flip averaging, tiled inference.
        tta_mod.check_options(self.task, tta, tta_scales, sliding_window, window_overlap)
        self.tta, self.tta_scales, self.tta_flip = bool(tta), tuple(float(s) for s in tta_scales), bool(tta_flip)
        self.sliding_window = None if sliding_window is None else (int(sliding_window[0]), int(sliding_window[1]))
        self.window_overlap = float(window_overlap)

    def with_options(self, task: Optional[str] = None, threshold: Optional[float] = None,
                     overlap_threshold: Optional[float] = None, mask_threshold: Optional[float] = None) -> "Segmenter":
        """This segmenter with another task or thresholds, sharing the same model in memory
        (unset options: the task's defaults as in the constructor, else this one's)."""
        task = task or self.task
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, not {task!r}")
        tta_mod.check_options(task, self.tta, self.tta_scales, self.sliding_window, self.window_overlap)
        other = copy.copy(self)
        other.task = task
        if threshold is not None:
            other.threshold = float(threshold)
        elif task != self.task:
            other.threshold = 0.8 if task == "panoptic" else 0.0
        if overlap_threshold is not None:
            other.overlap_threshold = float(overlap_threshold)
        if mask_threshold is not None:
            other.mask_threshold = float(mask_threshold)
        return other

    # -- preprocessing -------------------------------------------------------------------
    def processed_size(self, h: int, w: int) -> tuple[int, int]:
        if self.resize == "original":
            short, long = self.info.test_size
            return original_test_size(h, w, short, long)
        p = self.processor
        return resized_size(h, w, p.size, int(p.size_divisor or 0)) if p.do_resize else (h, w)

    def _tensor(self, rgb: np.ndarray) -> torch.Tensor:
        """(3, h, w) normalised pixels at the processed size."""
        if self.resize == "config":
            return self.processor([rgb])["pixel_values"][0]
        nh, nw = self.processed_size(*rgb.shape[:2])
        if (nh, nw) != rgb.shape[:2]:
            rgb = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.Resampling.BILINEAR))
        return self.processor([rgb], do_resize=False)["pixel_values"][0]

    # -- running -------------------------------------------------------------------------
    def __call__(self, images: Union[ImageInput, Sequence[ImageInput]], batch_size: Optional[int] = None
                 ) -> list[SegmentationResult]:
        """Segment one image or a list. Raises :class:`SegmentationError` on the first input of
        the list that cannot be read (none of the list's results are returned then); use
        :meth:`stream` to get a result or an error per input."""
        single = not isinstance(images, (list, tuple))
        results = []
        for r in self.stream([images] if single else images, batch_size):
            if isinstance(r, SegmentationError):
                raise r
            results.append(r)
        return results[0] if single else results

    def stream(self, images: Iterable[ImageInput], batch_size: Optional[int] = None
               ) -> Iterator[Union[SegmentationResult, SegmentationError]]:
        """Results in input order; unreadable inputs come back as :class:`SegmentationError`."""
        bs = batch_size or self.batch_size
        chunk: list[tuple[str, Any]] = []
        for i, item in enumerate(images):
            chunk.append((_name(item, i), item))
            if len(chunk) >= 4 * bs:
                yield from self._run_chunk(chunk, bs)
                chunk = []
        if chunk:
            yield from self._run_chunk(chunk, bs)

    def _run_chunk(self, chunk: list[tuple[str, Any]], bs: int) -> Iterator[Union[SegmentationResult, SegmentationError]]:
        done: dict[int, Union[SegmentationResult, SegmentationError]] = {}
        groups: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = {}
        for k, (name, item) in enumerate(chunk):
            try:
                rgb = to_rgb_array(item)
            except ImageLoadError as e:
                done[k] = SegmentationError(name, str(e))
                continue
            except Exception as e:  # anything else unreadable: report it, keep going
                done[k] = SegmentationError(name, f"{name}: cannot read image ({e})")
                continue
            groups.setdefault(self.processed_size(*rgb.shape[:2]), []).append((k, rgb))
        for members in groups.values():
            for start in range(0, len(members), bs):
                part = members[start:start + bs]
                results = self.predict_arrays([rgb for _, rgb in part], [chunk[k][0] for k, _ in part])
                for (k, _), res in zip(part, results):
                    done[k] = res
        for k in range(len(chunk)):
            yield done[k]

    def preprocess(self, rgb: np.ndarray) -> Optional[torch.Tensor]:
        """(3, h, w) network input of one image, or None where TTA / sliding windows make
        their own; thread-safe, so input pipelines can run it ahead of the forward pass."""
        if self.tta or self.sliding_window is not None:
            return None
        return self._tensor(rgb)

    def predict_arrays(self, images: list[np.ndarray], sources: Sequence[str],
                       tensors: Optional[list[torch.Tensor]] = None) -> list[SegmentationResult]:
        """Decoded HxWx3 uint8 images of one processed size (optionally with their
        :meth:`preprocess` tensors) -> their results, in one batch."""
        with self._inference():
            fields = self._predict(images, tensors)
        return [SegmentationResult(src, rgb, self.task, id2label=self.info.id2label, palette=self.info.palette, **f)
                for src, rgb, f in zip(sources, images, fields)]

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        """Around every forward, mask logits for the final prediction only (the decoder's
        earlier ones serve training losses; dropping them changes no bit of the final ones).
        The pixel decoder's sampling follows the precision: fp32 keeps the original's
        arithmetic, bf16 / int8 take the faster form (see :class:`~mask2former.pixel_decoder.MSDeformAttn`).
        Restored afterwards: the model may be shared."""
        switches = [(getattr(self.model, "transformer_decoder", None), "auxiliary_masks", False)]
        saved = [(module, name, getattr(module, name)) for module, name, _ in switches if hasattr(module, name)]
        for module, name, value in switches:
            if hasattr(module, name):
                setattr(module, name, value)
        try:
            yield
        finally:
            for module, name, value in saved:
                setattr(module, name, value)

    @torch.inference_mode()
    def _predict(self, images: list[np.ndarray], tensors: Optional[list[torch.Tensor]] = None
                 ) -> list[dict[str, Any]]:
        """Same-size images -> per image the fields of a SegmentationResult."""
        if self.tta or self.sliding_window is not None:  # several forwards per image
            return [{"labels": tta_mod.predict_labels(self, rgb)} for rgb in images]
        x = torch.stack(tensors if tensors is not None else [self._tensor(rgb) for rgb in images])
        h, w = x.shape[-2:]
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
        pixel_mask = torch.zeros((len(images), ph, pw), dtype=torch.long)
        pixel_mask[:, :h, :w] = 1
        x = torch.nn.functional.pad(x, (0, pw - w, 0, ph - h)).to(self.device)
        outputs = _prediction_only(self.model(pixel_values=x, pixel_mask=pixel_mask.to(self.device)))
        del x, pixel_mask  # post-processing's full-size maps come next: nothing else stays alive
        heap.release_free_pages(outputs["masks_queries_logits"])
        sizes = [rgb.shape[:2] for rgb in images]
        p = self.processor
        if self.task == "semantic":
            maps = p.post_process_semantic_segmentation(outputs, target_sizes=sizes,
                                                        resize_before_inference=self.semantic_resize_first,
                                                        max_bytes=_semantic_budget(len(self.info.id2label), (ph, pw), sizes))
            return [{"labels": m.cpu().numpy().astype(np.int64)} for m in maps]
        if self.task == "panoptic":
            res = p.post_process_panoptic_segmentation(outputs, threshold=self.threshold,
                                                       mask_threshold=self.mask_threshold,
                                                       overlap_mask_area_threshold=self.overlap_threshold,
                                                       label_ids_to_fuse=self.info.stuff_ids, target_sizes=sizes)
            return [_panoptic_fields(r) for r in res]
        res = p.post_process_instance_segmentation(outputs, threshold=self.threshold,
                                                   mask_threshold=self.mask_threshold, target_sizes=sizes,
                                                   return_binary_maps=True, thing_label_ids=self.info.thing_ids)
        return [_instance_fields(r) for r in res]


def _prediction_only(outputs: Any) -> dict[str, Any]:
    """What post-processing reads of the network's outputs; the rest (the (B, 256, H/4, W/4)
    mask features, the encoder's last map) is let go before the full-size maps are made."""
    from .postprocess import _field

    return {k: _field(outputs, k) for k in ("class_queries_logits", "masks_queries_logits", "pixel_mask")}


def _semantic_budget(num_classes: int, padded_size: tuple[int, int], sizes: list) -> int:
    """Post-processing memory budget that holds every class map at once (up to 4x the default),
    so that the per-query upsampling runs once rather than once per block of classes."""
    from .postprocess import DEFAULT_MAX_BYTES

    padded = padded_size[0] * padded_size[1]
    need = max(4 * num_classes * (padded + h * w) for h, w in sizes)
    return int(min(max(need, DEFAULT_MAX_BYTES), 4 * DEFAULT_MAX_BYTES))


def _score(value: float) -> float:
    # Files keep 4 decimals: batched and single-image runs differ in the 7th (BLAS blocking),
    # and a written result must not depend on how images were batched.
    return round(float(value), 4)


def _name(item: Any, index: int) -> str:
    return os.fspath(item) if isinstance(item, (str, os.PathLike)) else f"<image {index}>"


def _panoptic_fields(r: dict[str, Any]) -> dict[str, Any]:
    ids = r["segmentation"].cpu().numpy().astype(np.int32)
    lut = np.full(ids.max() + 1 if ids.size else 1, -1, dtype=np.int64)
    for s in r["segments_info"]:
        lut[s["id"]] = s["category_id"]
    return {"labels": lut[ids], "segment_ids": ids, "segments": r["segments_info"]}


def _instance_fields(r: dict[str, Any]) -> dict[str, Any]:
    masks = r["segmentation"].cpu().numpy().astype(bool)  # (N, H, W), best first
    labels = np.full(masks.shape[1:], -1, dtype=np.int64)
    for m, s in reversed(list(zip(masks, r["segments_info"]))):  # best last, so it wins overlaps
        labels[m] = s["label_id"]
    return {"labels": labels, "segments": r["segments_info"], "instance_masks": masks}
