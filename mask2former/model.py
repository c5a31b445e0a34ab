"""Mask2Former: backbone -> pixel decoder -> masked-attention transformer decoder.

Two entry points with transformers' names, signatures and outputs: :class:`Mask2FormerModel`
(the features and decoder states) and :class:`Mask2FormerForUniversalSegmentation` (the class
and mask predictions, and the training loss when labels are given). Both hold the same
modules under the same names, so either loads any checkpoint.
"""
from __future__ import annotations

import os
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from .backbone import build_backbone
from .config import Mask2FormerConfig
from .modeling_outputs import (
    SHARED_FIELDS,
    Mask2FormerForUniversalSegmentationOutput,
    Mask2FormerModelOutput,
    Mask2FormerOutput,
)
from .pixel_decoder import MSDeformAttnPixelDecoder
from .transformer_decoder import DecoderRecord, MultiScaleMaskedTransformerDecoder


class _Network:
    """One forward pass's intermediate results (what both models' outputs are made of)."""

    def __init__(self, features: list[Tensor], mask_features: Tensor, multi_scale: list[Tensor],
                 classes: list[Tensor], masks: list[Optional[Tensor]], record: DecoderRecord):
        self.features, self.mask_features, self.multi_scale = features, mask_features, multi_scale
        self.classes, self.masks, self.record = classes, masks, record


def _opt(value: Optional[bool], default: Optional[bool]) -> bool:
    return bool(default if value is None else value)


class Mask2FormerPreTrainedModel(nn.Module):
    """The network's modules plus what both models share: loading, saving, checkpointing."""

    config_class = Mask2FormerConfig
    base_model_prefix = "model"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True

    def __init__(self, config: Mask2FormerConfig):
        super().__init__()
        if not isinstance(config, Mask2FormerConfig):  # e.g. a transformers Mask2FormerConfig
            config = Mask2FormerConfig.from_dict(config.to_dict())
        self.config = config
        self.backbone = build_backbone(config.backbone_config)
        self.pixel_decoder = MSDeformAttnPixelDecoder(self.backbone.channels, self.backbone.strides, config)
        self.transformer_decoder = MultiScaleMaskedTransformerDecoder(config.feature_size, config)
        # Built from the config at the first call with labels; training code may set its own.
        self.criterion: Optional[nn.Module] = None
        if getattr(config, "gradient_checkpointing", False):  # transformers' older config switch
            self.gradient_checkpointing_enable()

    # transformers' loading hooks: nothing to ignore, no tied or fp32-only weights.
    _keys_to_ignore_on_load_missing = None
    _keys_to_ignore_on_load_unexpected = None
    _tied_weights_keys = None
    _keep_in_fp32_modules: list[str] = []
    _keep_in_fp32_modules_strict: list[str] = []

    # transformers' attention-dispatch and expert machinery are not used here (the attention
    # choice is config._attn_implementation, read by forward); transformers declares the same.
    _supports_sdpa = False
    _supports_flash_attn = False
    _supports_flex_attn = False

    @classmethod
    def can_generate(cls) -> bool:
        return False

    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        return False

    @classmethod
    def _can_set_experts_implementation(cls) -> bool:
        return False

    def get_input_embeddings(self) -> nn.Module:
        raise NotImplementedError("Mask2Former reads images: it has no token embeddings")

    def get_output_embeddings(self) -> None:
        return None  # no language-model head, as transformers says of Mask2Former

    def enable_input_require_grads(self) -> None:
        """Make the backbone's first feature map require gradients, so that gradient
        checkpointing works with every backbone weight frozen (adapter training, e.g. PEFT)."""
        first = self.backbone.patch_embed if hasattr(self.backbone, "patch_embed") else self.backbone.stem
        self.disable_input_require_grads()
        self._input_grad_hook = first.register_forward_hook(lambda module, args, out: out.requires_grad_(True))

    def disable_input_require_grads(self) -> None:
        hook = self.__dict__.pop("_input_grad_hook", None)
        if hook is not None:
            hook.remove()

    def init_weights(self) -> None:
        """Re-initialise every parameter and buffer as construction does (e.g. after
        ``to_empty`` of a model built on the meta device)."""
        fresh = type(self)(self.config).to(self.device)
        tensors = dict(fresh.named_parameters())
        tensors.update(fresh.named_buffers())
        with torch.no_grad():
            for name, t in [*self.named_parameters(), *self.named_buffers()]:
                if name in tensors:
                    t.copy_(tensors[name])

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def num_parameters(self, only_trainable: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not only_trainable)

    def _network(self, pixel_values: Tensor, hidden_states: bool, attentions: bool) -> _Network:
        """pixel_values: (B, 3, H, W). Hidden states and attentions are only collected when asked."""
        features = self.backbone(pixel_values)
        if hidden_states:
            mask_features, multi_scale = self.pixel_decoder(features)
        else:  # only the last map is returned: the others go as soon as the pixel decoder has read them
            last = features[-1]
            mask_features, multi_scale = self.pixel_decoder(features, release=True)
            features = [last]
        # The decoder's attention is always the original's explicit one (nn.MultiheadAttention),
        # so "sdpa" and "eager" compute the same bits; the weights are only kept when asked for.
        record = DecoderRecord(hidden_states=[] if hidden_states else None, intermediate=[] if hidden_states else None,
                               attentions=[] if attentions else None)
        classes, masks = self.transformer_decoder(multi_scale, mask_features, record)
        return _Network(features, mask_features, multi_scale, classes, masks, record)

    def _model_output(self, net: _Network, hidden_states: bool) -> Mask2FormerModelOutput:
        rec = net.record
        return Mask2FormerModelOutput(
            encoder_last_hidden_state=net.features[-1],
            pixel_decoder_last_hidden_state=net.mask_features,
            transformer_decoder_last_hidden_state=rec.last_hidden_state,
            encoder_hidden_states=tuple(net.features) if hidden_states else None,
            pixel_decoder_hidden_states=tuple(net.multi_scale) if hidden_states else None,
            transformer_decoder_hidden_states=tuple(rec.hidden_states) if rec.hidden_states is not None else None,
            transformer_decoder_intermediate_states=tuple(rec.intermediate) if rec.intermediate is not None else None,
            masks_queries_logits=tuple(net.masks),
            attentions=tuple(rec.attentions) if rec.attentions is not None else None,
        )

    # -- training ------------------------------------------------------------------------
    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: Optional[dict] = None) -> None:
        """Recompute backbone stages and decoder layers in backward instead of storing their
        activations (same loss and gradients, less memory)."""
        from .gradient_checkpointing import set_gradient_checkpointing

        set_gradient_checkpointing(self, True)

    def gradient_checkpointing_disable(self) -> None:
        from .gradient_checkpointing import set_gradient_checkpointing

        set_gradient_checkpointing(self, False)

    @property
    def is_gradient_checkpointing(self) -> bool:
        from .gradient_checkpointing import is_gradient_checkpointing

        return is_gradient_checkpointing(self)

    # transformers' newer names for the same switches.
    activation_checkpointing_enable = gradient_checkpointing_enable
    activation_checkpointing_disable = gradient_checkpointing_disable
    is_activation_checkpointing = is_gradient_checkpointing

    # -- checkpoints ---------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: Optional[Union[str, os.PathLike]] = None, *args: Any,
                        strict: Optional[bool] = None, **kwargs: Any) -> Any:
        """Load a Hugging Face folder or hub id, or an original detectron2 ``.pkl``.

        Accepts transformers' keyword arguments: ``config=`` (used instead of the file's),
        ``subfolder``, ``revision``, ``cache_dir``, ``local_files_only``, ``token``;
        ``id2label`` / ``label2id`` / ``num_labels`` (a new class count needs
        ``ignore_mismatched_sizes=True``: the classifier then starts fresh);
        ``output_loading_info=True`` returns ``(model, info)`` and loads what fits instead of
        refusing a partial checkpoint (``strict`` says otherwise explicitly); ``dtype``;
        ``config=`` with ``state_dict=`` and no path; any other config field (e.g.
        ``output_auxiliary_logits=True``) overrides the config.
        """
        from .checkpoint import load_model

        name_or_path = kwargs.pop("pretrained_model_name_or_path", name_or_path)
        if args:  # transformers' positional model_args are not used by this model
            raise TypeError(f"from_pretrained takes no positional arguments after the path; got {len(args)}")
        return load_model(name_or_path, strict=strict, model_class=cls, **kwargs)

    def save_pretrained(self, save_directory: Union[str, os.PathLike], **unused: Any) -> None:
        """Write ``config.json`` + ``model.safetensors`` that both this package and
        ``transformers`` load."""
        from .checkpoint.hf import save_hf_weights

        os.makedirs(save_directory, exist_ok=True)
        self.config.save_pretrained(save_directory)
        save_hf_weights(self, save_directory, self.config.no_object_weight)


class Mask2FormerModel(Mask2FormerPreTrainedModel):
    """transformers' ``Mask2FormerModel``: backbone, pixel decoder and transformer decoder
    states (:class:`~mask2former.modeling_outputs.Mask2FormerModelOutput`)."""

    # A base-model checkpoint (transformers' Mask2FormerModel.save_pretrained) has no class head.
    _optional_weights = ("transformer_decoder.class_embed.",)

    def forward(
        self,
        pixel_values: Tensor,
        pixel_mask: Optional[Tensor] = None,
        output_hidden_states: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        **unused: Any,
    ) -> Union[Mask2FormerModelOutput, tuple]:
        """pixel_values: (B, 3, H, W); ``pixel_mask`` is accepted and, as in the original
        network, not used inside it."""
        hidden = _opt(output_hidden_states, self.config.output_hidden_states)
        attentions = _opt(output_attentions, self.config.output_attentions)
        out = self._model_output(self._network(pixel_values, hidden, attentions), hidden)
        return out if _opt(return_dict, self.config.return_dict) else out.to_tuple()


class Mask2FormerForUniversalSegmentation(Mask2FormerPreTrainedModel):
    """The whole network. ``pixel_values`` are normalised images (the processor's output)."""

    def forward(
        self,
        pixel_values: Tensor,
        mask_labels: Optional[list[Tensor]] = None,
        class_labels: Optional[list[Tensor]] = None,
        pixel_mask: Optional[Tensor] = None,
        output_hidden_states: Optional[bool] = None,
        output_auxiliary_logits: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        point_generators: Optional[list[torch.Generator]] = None,
        **unused: Any,
    ) -> Union[Mask2FormerForUniversalSegmentationOutput, tuple]:
        """pixel_values: (B, 3, H, W); pixel_mask: (B, H, W), 1 on real pixels, 0 on padding.

        As in the original network, padding is not masked inside the model: an image padded
        in a batch gets slightly different logits than alone. ``pixel_mask`` travels to the
        output for post-processing. With ``mask_labels`` (per image (N, H, W)) and
        ``class_labels`` (per image (N,)) the loss is computed too, by the criterion built
        from the config (``point_generators``: one RNG per image for the loss's random
        points, so the loss does not depend on how images were batched).
        """
        cfg = self.config
        hidden = _opt(output_hidden_states, cfg.output_hidden_states)
        net = self._network(pixel_values, hidden, _opt(output_attentions, cfg.output_attentions))
        base = self._model_output(net, hidden)
        aux = [{"class_queries_logits": c, "masks_queries_logits": m} for c, m in zip(net.classes[:-1], net.masks[:-1])]
        out = Mask2FormerOutput(
            net.classes[-1], net.masks[-1], aux, pixel_mask, **{k: getattr(base, k) for k in SHARED_FIELDS},
            output_auxiliary_logits=_opt(output_auxiliary_logits, cfg.output_auxiliary_logits),
        )
        if mask_labels is not None and class_labels is not None:
            if self.criterion is None:
                from .criterion import build_criterion

                self.criterion = build_criterion(cfg).to(pixel_values.device)
            _check_labels(class_labels, cfg.num_labels)
            targets = [{"labels": c, "masks": m} for c, m in zip(class_labels, mask_labels)]
            out.loss_dict = self.criterion(out.class_queries_logits, out.masks_queries_logits,
                                           aux if cfg.use_auxiliary_loss else None, targets,
                                           generator=point_generators)
            out.loss = out.loss_dict["loss"]
        return out if _opt(return_dict, cfg.return_dict) else out.to_tuple()


def _check_labels(class_labels: list[Tensor], num_labels: int) -> None:
    """Class ids outside 0..num_labels-1 would index past the classifier deep in the loss."""
    ids = torch.cat([torch.as_tensor(c).reshape(-1) for c in class_labels])
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= num_labels):
        raise ValueError(f"class_labels hold ids {int(ids.min())}..{int(ids.max())}, but the model has "
                         f"{num_labels} classes (0..{num_labels - 1}); check ignore_index / do_reduce_labels")


def build_model(config: Mask2FormerConfig) -> Mask2FormerForUniversalSegmentation:
    return Mask2FormerForUniversalSegmentation(config)


__all__ = [
    "Mask2FormerPreTrainedModel",
    "Mask2FormerModel",
    "Mask2FormerForUniversalSegmentation",
    "Mask2FormerForUniversalSegmentationOutput",
    "Mask2FormerModelOutput",
    "Mask2FormerOutput",
    "build_model",
]
