"""transformers' Mask2Former API on our classes: outputs (fields, order, tuple access), the loss
from labels alone, gradient checkpointing, the config, from_pretrained's keywords, meta device.
Reference values come from transformers on the same weights, computed here."""
from __future__ import annotations

import copy
import json
import os

import pytest
import torch

from hf_models import SMALL_HEAD, SMALL_SWIN, hf_model, save_hf
from mask2former import (
    Mask2FormerConfig,
    Mask2FormerForUniversalSegmentation,
    Mask2FormerForUniversalSegmentationOutput,
    Mask2FormerModel,
    Mask2FormerOutput,
)
from mask2former.checkpoint import CheckpointMismatchError
from test_criterion import shape_keyed_rand  # noqa: F401 (fixture)

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(transformers model, our model) with the same random weights, eval mode."""
    ref = hf_model("swin", SMALL_SWIN, num_labels=5, **SMALL_HEAD)
    folder = save_hf(ref, tmp_path_factory.mktemp("pair"))
    return ref, Mask2FormerForUniversalSegmentation.from_pretrained(folder), folder


def _tiny_config(**overrides) -> Mask2FormerConfig:
    """transformers' test-suite style: constructor arguments, then attributes set on the config."""
    cfg = Mask2FormerConfig(hidden_size=32, num_labels=3, num_queries=6, decoder_layers=3, encoder_layers=1,
                            feature_size=32, mask_feature_size=32, dim_feedforward=32, encoder_feedforward_dim=32,
                            num_attention_heads=2, train_num_points=256, **overrides)
    cfg.backbone_config.embed_dim = 16
    cfg.backbone_config.depths = [1, 1, 1, 1]
    cfg.backbone_config.num_heads = [1, 1, 2, 2]
    return cfg


def _labels(batch: int, size: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    masks = [(torch.rand(3, size, size, generator=g) > 0.5).float() for _ in range(batch)]
    classes = [torch.randint(0, 3, (3,), generator=g) for _ in range(batch)]
    return masks, classes


def _assert_same(ours, ref, atol=1e-4):
    if isinstance(ref, (tuple, list)):
        assert isinstance(ours, (tuple, list)) and len(ours) == len(ref)
        for a, b in zip(ours, ref):
            _assert_same(a, b, atol)
        return
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() <= atol


@pytest.mark.parametrize("flags", [{}, {"output_hidden_states": True}, {"output_attentions": True},
                                   {"output_auxiliary_logits": True}])
def test_outputs_have_transformers_fields_order_and_values(pair, flags):
    ref_model, ours, _ = pair
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        ref = ref_model(pixel_values=x, **flags)
        out = ours(pixel_values=x, **flags)
        as_tuple = ours(pixel_values=x, return_dict=False, **flags)
    assert list(out.keys()) == list(ref.keys())
    for key in ref.keys():
        if key == "auxiliary_logits":
            for a, b in zip(out[key], ref[key]):
                _assert_same([a["class_queries_logits"], a["masks_queries_logits"]],
                             [b["class_queries_logits"], b["masks_queries_logits"]])
        else:
            _assert_same(out[key], ref[key])
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(ref.to_tuple())
    assert torch.equal(as_tuple[0], out[0]) and torch.equal(out[0], out["class_queries_logits"])
    assert out.to_tuple()[1] is out.masks_queries_logits
    assert out.pixel_mask is None and "pixel_mask" not in out  # ours, an attribute only
    with pytest.raises(KeyError):
        out["loss"]


def test_base_model_outputs_match_transformers(pair, tmp_path):
    ref_model, _, folder = pair
    ref_base = transformers.Mask2FormerModel.from_pretrained(folder).eval()
    ref_base.save_pretrained(tmp_path)  # a base-model checkpoint: other names, no class head
    base = Mask2FormerModel.from_pretrained(tmp_path)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ref = ref_base(pixel_values=x, output_hidden_states=True, output_attentions=True)
        out = base(pixel_values=x, output_hidden_states=True, output_attentions=True)
    assert list(out.keys()) == list(ref.keys())
    for key in ref.keys():
        _assert_same(out[key], ref[key])


def test_extras_cost_nothing_unless_asked(pair):
    _, ours, _ = pair
    with torch.no_grad():
        out = ours(pixel_values=torch.randn(1, 3, 64, 64))
    assert out.encoder_hidden_states is None and out.transformer_decoder_hidden_states is None
    assert out.attentions is None
    # Ours: the earlier predictions stay readable as an attribute even when not in the tuple.
    assert len(out.auxiliary_logits) == ours.config.decoder_layers - 1


def test_old_output_name_still_constructs_positionally():
    cls, masks = torch.zeros(1, 2, 3), torch.zeros(1, 2, 4, 4)
    out = Mask2FormerOutput(cls, masks, [], torch.ones(1, 16, 16))
    assert isinstance(out, Mask2FormerForUniversalSegmentationOutput)
    assert out.pixel_mask.shape == (1, 16, 16) and out.to_tuple() == (cls, masks)


def test_loss_equals_transformers_and_reaches_every_parameter(pair, shape_keyed_rand):  # noqa: F811
    ref_model, ours, _ = pair
    x = torch.randn(2, 3, 64, 64)
    masks, classes = _labels(2, 64)
    ours.criterion = None  # built from the config on this call
    out = ours(pixel_values=x, mask_labels=masks, class_labels=classes)
    ref = ref_model(pixel_values=x, mask_labels=masks, class_labels=classes)
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-4, rtol=1e-5)
    assert out.loss.shape == () and out["loss"] is out.loss and out.to_tuple()[0] is out.loss
    out.loss.backward()
    missing = [n for n, p in ours.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    ours.zero_grad(set_to_none=True)


def test_criterion_follows_the_config():
    cfg = _tiny_config(use_auxiliary_loss=False, class_weight=1.0, no_object_weight=0.2)
    model = Mask2FormerForUniversalSegmentation(cfg)
    masks, classes = _labels(1, 64)
    out = model(pixel_values=torch.randn(1, 3, 64, 64), mask_labels=masks, class_labels=classes)
    assert set(out.loss_dict) == {"loss", "loss_ce", "loss_mask", "loss_dice"}  # no deep supervision
    assert model.criterion.class_weight == 1.0 and model.criterion.num_points == 256
    assert model.criterion.class_weights[-1].item() == pytest.approx(0.2)
    custom = model.criterion = type(model.criterion)(num_classes=3, num_points=64)
    model(pixel_values=torch.randn(1, 3, 64, 64), mask_labels=masks, class_labels=classes)
    assert model.criterion is custom  # a criterion set by training code is kept


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    cfg = _tiny_config()
    cfg.backbone_config.drop_path_rate = 0.5  # randomness inside checkpointed stages
    model = Mask2FormerForUniversalSegmentation(cfg).train()
    x = torch.randn(2, 3, 64, 64)
    masks, classes = _labels(2, 64)

    def step():
        torch.manual_seed(1)
        model.zero_grad(set_to_none=True)
        loss = model(pixel_values=x, mask_labels=masks, class_labels=classes).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    plain_loss, plain_grads = step()
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    ckpt_loss, ckpt_grads = step()
    twin = copy.deepcopy(model)  # e.g. an EMA copy: checkpoints its own modules
    assert twin.is_gradient_checkpointing and twin.backbone.layers[0].forward.module is twin.backbone.layers[0]
    model.gradient_checkpointing_disable()
    assert not model.is_gradient_checkpointing
    assert torch.equal(plain_loss, ckpt_loss)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(ckpt_grads[name], grad, atol=1e-6, rtol=1e-5, msg=name)
    assert set(model.state_dict()) == set(Mask2FormerForUniversalSegmentation(cfg).state_dict())


def test_config_takes_transformers_arguments(tmp_path):
    cfg = Mask2FormerConfig(hidden_size=64, num_hidden_layers=4, num_labels=4, use_auxiliary_loss=False,
                            output_hidden_states=True, use_return_dict=False,
                            backbone_config={"model_type": "swin", "embed_dim": 48, "depths": [1, 1, 1, 1]})
    assert (cfg.hidden_dim, cfg.decoder_layers, cfg.num_labels) == (64, 4, 4)
    assert cfg.hidden_size == 64 and not cfg.use_return_dict and cfg.output_hidden_states
    assert cfg.backbone_config.embed_dim == 48
    cfg.num_labels = 2
    assert cfg.id2label == {0: "LABEL_0", 1: "LABEL_1"} and cfg.label2id == {"LABEL_0": 0, "LABEL_1": 1}
    cfg.label2id = {"road": 0, "car": 1, "sky": 2}
    assert cfg.id2label == {0: "road", 1: "car", 2: "sky"}
    cfg.hidden_size = 32
    assert cfg.hidden_dim == 32
    from_hf = Mask2FormerConfig(backbone_config=transformers.SwinConfig(embed_dim=24, depths=[1, 1, 1, 1]))
    assert from_hf.backbone_config.embed_dim == 24
    hf_config = transformers.Mask2FormerConfig(**_tiny_config().to_dict())  # a transformers config object works too
    assert Mask2FormerForUniversalSegmentation(hf_config).config.num_queries == 6
    cfg.to_json_file(tmp_path / "c.json")
    assert Mask2FormerConfig.from_json_file(tmp_path / "c.json") == cfg


def test_config_round_trips_with_transformers(tmp_path):
    written = transformers.Mask2FormerConfig(num_labels=6, hidden_dim=128, use_auxiliary_loss=False,
                                             backbone_config=transformers.ResNetConfig(
                                                 depths=[2, 2, 2, 2], out_features=["stage1", "stage2", "stage3", "stage4"]))
    written.save_pretrained(tmp_path / "hf")
    ours = Mask2FormerConfig.from_pretrained(tmp_path / "hf")
    assert (ours.num_labels, ours.hidden_dim, ours.use_auxiliary_loss) == (6, 128, False)
    assert ours.backbone_config.depths == [2, 2, 2, 2] and ours.backbone_config.model_type == "resnet"
    ours.save_pretrained(tmp_path / "ours")
    again = transformers.Mask2FormerConfig.from_pretrained(tmp_path / "ours")
    expected, got = written.to_dict(), again.to_dict()
    for key in ("transformers_version", "_name_or_path", "architectures"):  # ours names the model class
        expected.pop(key, None), got.pop(key, None)
    assert got == expected
    sub = tmp_path / "repo"
    ours.save_pretrained(sub / "sub")
    assert Mask2FormerConfig.from_pretrained(sub, subfolder="sub", num_labels=2).num_labels == 2


def test_from_pretrained_keywords(pair, tmp_path):
    _, ours, folder = pair
    names = {i: f"thing {i}" for i in range(5)}
    relabelled = Mask2FormerForUniversalSegmentation.from_pretrained(folder, id2label=names, revision="main")
    assert relabelled.config.id2label == names
    assert torch.equal(relabelled.transformer_decoder.class_embed.weight, ours.transformer_decoder.class_embed.weight)
    with pytest.raises(CheckpointMismatchError, match="ignore_mismatched_sizes"):
        Mask2FormerForUniversalSegmentation.from_pretrained(folder, num_labels=3)
    fresh, info = Mask2FormerForUniversalSegmentation.from_pretrained(
        folder, label2id={"a": 0, "b": 1, "c": 2}, ignore_mismatched_sizes=True, output_loading_info=True)
    assert fresh.transformer_decoder.class_embed.weight.shape[0] == 4
    assert {k for k, _, _ in info["mismatched_keys"]} == {"transformer_decoder.class_embed.weight",
                                                          "transformer_decoder.class_embed.bias"}
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert torch.equal(fresh.transformer_decoder.query_feat.weight, ours.transformer_decoder.query_feat.weight)
    ours.save_pretrained(tmp_path / "sub")
    nested = Mask2FormerModel.from_pretrained(tmp_path, subfolder="sub", output_hidden_states=True)
    assert isinstance(nested, Mask2FormerModel) and nested.config.output_hidden_states
    with open(os.path.join(folder, "config.json")) as f:
        override = Mask2FormerConfig.from_dict({**json.load(f), "output_attentions": True})
    assert Mask2FormerForUniversalSegmentation.from_pretrained(folder, config=override).config.output_attentions


def test_meta_device_construction():
    cfg = _tiny_config()
    with torch.device("meta"):
        model = Mask2FormerForUniversalSegmentation(cfg)
        with pytest.raises(RuntimeError, match="meta device"):
            Mask2FormerForUniversalSegmentation.from_pretrained("unused")
    assert all(p.is_meta for p in model.parameters())
    model.to_empty(device="cpu")
    model.init_weights()
    with torch.no_grad():
        out = model.eval()(pixel_values=torch.randn(1, 3, 64, 64))
    assert torch.isfinite(out.masks_queries_logits).all()
    assert torch.equal(model.backbone.layers[0].blocks[0].attn.relative_position_index,
                       Mask2FormerForUniversalSegmentation(cfg).backbone.layers[0].blocks[0].attn.relative_position_index)


def test_eager_attention_equals_sdpa():
    cfg = _tiny_config(attn_implementation="eager")
    model = Mask2FormerForUniversalSegmentation(cfg).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        eager = model(pixel_values=x)
        cfg._attn_implementation = "sdpa"
        fused = model(pixel_values=x)
    assert eager.attentions is None  # computed explicitly, returned only when asked
    torch.testing.assert_close(eager.masks_queries_logits, fused.masks_queries_logits, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="attn_implementation"):
        cfg._attn_implementation = "flash"
