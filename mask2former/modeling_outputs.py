"""What the models return, with transformers' field names, order and access styles.

An output reads as attributes (``out.loss``), as a mapping of its set fields (``out["loss"]``,
``out.keys()``), by position (``out[0]``, ``out.to_tuple()``, the tuple ``return_dict=False``
gives): fields that are None are skipped, as in transformers. Fields marked ``extra`` (ours:
``pixel_mask``, ``loss_dict``) are attributes only, so positions match transformers'.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Iterator, Optional

from torch import Tensor


def _extra() -> Any:
    return field(default=None, metadata={"extra": True})


class ModelOutput:
    """Mapping and tuple access over a dataclass's set (non-None) fields."""

    def _public(self) -> list[str]:
        return [f.name for f in fields(self) if not f.metadata.get("extra") and getattr(self, f.name) is not None]

    def keys(self) -> list[str]:
        return self._public()

    def values(self) -> list[Any]:
        return [getattr(self, k) for k in self._public()]

    def items(self) -> list[tuple[str, Any]]:
        return [(k, getattr(self, k)) for k in self._public()]

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(self.values())

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            if key not in self._public():
                raise KeyError(key)
            return getattr(self, key)
        return self.to_tuple()[key]

    def __contains__(self, key: object) -> bool:
        return key in self._public()

    def __iter__(self) -> Iterator[str]:
        return iter(self._public())

    def __len__(self) -> int:
        return len(self._public())

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self._public() else default


@dataclass
class Mask2FormerModelOutput(ModelOutput):
    """Backbone, pixel decoder and transformer decoder outputs (transformers' fields).

    encoder_last_hidden_state: (B, C5, H/32, W/32), the last backbone stage;
    pixel_decoder_last_hidden_state: (B, D, H/4, W/4), the mask features;
    transformer_decoder_last_hidden_state: (B, Q, C), the last decoder layer's output.
    With ``output_hidden_states``: encoder_hidden_states (the four backbone stages, finest
    first), pixel_decoder_hidden_states (the three multi-scale maps, coarsest first),
    transformer_decoder_hidden_states (Q, B, C) each (every layer's input, then the last
    output), transformer_decoder_intermediate_states (Q, B, C) each (normalised, one per
    prediction). masks_queries_logits: (B, Q, H/4, W/4) per prediction. attentions (with
    ``output_attentions``): each decoder layer's self-attention weights (B, heads, Q, Q).
    """

    encoder_last_hidden_state: Optional[Tensor] = None
    pixel_decoder_last_hidden_state: Optional[Tensor] = None
    transformer_decoder_last_hidden_state: Optional[Tensor] = None
    encoder_hidden_states: Optional[tuple[Tensor, ...]] = None
    pixel_decoder_hidden_states: Optional[tuple[Tensor, ...]] = None
    transformer_decoder_hidden_states: Optional[tuple[Tensor, ...]] = None
    transformer_decoder_intermediate_states: Optional[tuple[Tensor, ...]] = None
    masks_queries_logits: Optional[tuple[Tensor, ...]] = None
    attentions: Optional[tuple[Tensor, ...]] = None


@dataclass
class Mask2FormerForUniversalSegmentationOutput(ModelOutput):
    """The predictions (readable by the processor's post-processing), transformers' fields.

    class_queries_logits: (B, Q, K+1); masks_queries_logits: (B, Q, H/4, W/4) of the final
    prediction. auxiliary_logits: the same pair for every earlier prediction (first = before
    any decoder layer); as an attribute it is always there, in keys and tuples only with
    ``output_auxiliary_logits`` (transformers leaves it None otherwise). The hidden-state and
    attention fields are :class:`Mask2FormerModelOutput`'s. Extras: pixel_mask (B, H, W),
    the valid region of each padded input, kept so post-processing can crop padding away;
    loss_dict, the loss's unweighted terms.
    """

    loss: Optional[Tensor] = None
    class_queries_logits: Optional[Tensor] = None
    masks_queries_logits: Optional[Tensor] = None
    auxiliary_logits: Optional[list[dict[str, Tensor]]] = None
    encoder_last_hidden_state: Optional[Tensor] = None
    pixel_decoder_last_hidden_state: Optional[Tensor] = None
    transformer_decoder_last_hidden_state: Optional[Tensor] = None
    encoder_hidden_states: Optional[tuple[Tensor, ...]] = None
    pixel_decoder_hidden_states: Optional[tuple[Tensor, ...]] = None
    transformer_decoder_hidden_states: Optional[tuple[Tensor, ...]] = None
    attentions: Optional[tuple[Tensor, ...]] = None
    pixel_mask: Optional[Tensor] = _extra()
    loss_dict: Optional[dict[str, Tensor]] = _extra()
    output_auxiliary_logits: bool = field(default=False, metadata={"extra": True}, repr=False)

    def _public(self) -> list[str]:
        names = super()._public()
        return names if self.output_auxiliary_logits else [n for n in names if n != "auxiliary_logits"]


# The fields the segmentation output takes over from the base model's output.
SHARED_FIELDS = ("encoder_last_hidden_state", "pixel_decoder_last_hidden_state", "transformer_decoder_last_hidden_state",
                 "encoder_hidden_states", "pixel_decoder_hidden_states", "transformer_decoder_hidden_states",
                 "attentions")


class Mask2FormerOutput(Mask2FormerForUniversalSegmentationOutput):
    """The earlier name of :class:`Mask2FormerForUniversalSegmentationOutput`, constructed
    positionally as before: (class_queries_logits, masks_queries_logits, auxiliary_logits,
    pixel_mask, loss, loss_dict)."""

    def __init__(self, class_queries_logits: Optional[Tensor] = None, masks_queries_logits: Optional[Tensor] = None,
                 auxiliary_logits: Optional[list[dict[str, Tensor]]] = None, pixel_mask: Optional[Tensor] = None,
                 loss: Optional[Tensor] = None, loss_dict: Optional[dict[str, Tensor]] = None, **rest: Any) -> None:
        super().__init__(loss=loss, class_queries_logits=class_queries_logits,
                         masks_queries_logits=masks_queries_logits,
                         auxiliary_logits=[] if auxiliary_logits is None else auxiliary_logits,
                         pixel_mask=pixel_mask, loss_dict=loss_dict, **rest)
