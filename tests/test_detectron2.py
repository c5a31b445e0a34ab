"""Original (detectron2) checkpoints: name mapping, architecture inference, safety, parity.

Fake checkpoints are built two ways: from the original's exact state-dict listings in
../shared/reference (names, shapes, dtypes of three released configs), and from a small
random ``transformers`` Mask2Former renamed to the original's names by a mapping written here
from the original code's names (checked against those listings), so that the logits of the
loaded model can be compared with the ``transformers`` model's.
"""
from __future__ import annotations

import json
import os
import pickle
import re
from collections import OrderedDict

import numpy as np
import pytest
import torch

from mask2former.checkpoint import CheckpointMismatchError, load_model
from mask2former.checkpoint.detectron2 import UnsafeCheckpointError, read_detectron2_checkpoint
from mask2former.checkpoint.labels import DATASETS, palette

# The original's state-dict listings live in shared/ beside the checkout (also in CI).
REFERENCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared",
                         "reference", "original-state-dicts")


def _listing(name: str) -> dict:
    path = os.path.join(REFERENCE, name + ".json")
    if not os.path.exists(path):
        pytest.skip(f"{path} not available")
    with open(path) as f:
        return json.load(f)


def _rel_index(w: int) -> np.ndarray:
    """The original Swin's relative_position_index, written out independently of the package."""
    ys, xs = np.meshgrid(np.arange(w), np.arange(w), indexing="ij")
    coords = np.stack([ys.ravel(), xs.ravel()])  # (2, w*w)
    rel = coords[:, :, None] - coords[:, None, :] + (w - 1)
    return (rel[0] * (2 * w - 1) + rel[1]).astype(np.int64)


def _generic(name: str) -> str:
    """Block/layer numbers replaced by N, to compare name layouts across model sizes."""
    prev = None
    while prev != name:
        prev, name = name, re.sub(r"\.\d+\.", ".N.", name)
    return name


def _save(path: str, state: dict, fmt: str = "released", protocol: int = 4) -> str:
    if fmt in ("pth", "legacy"):  # a training checkpoint; "legacy": pre-1.6 torch.save format
        data = {"model": OrderedDict((k, torch.from_numpy(v)) for k, v in state.items()), "iteration": 3}
        torch.save(data, path, _use_new_zipfile_serialization=fmt == "pth")
        return path
    if fmt == "v1-head":  # pixel decoder directly under sem_seg_head, as head version 1 had it
        state = {k.replace("sem_seg_head.pixel_decoder.", "sem_seg_head."): v for k, v in state.items()}
    data = state if fmt == "bare" else {"model": state, "__author__": "Mask2Former test", "matching_heuristics": False}
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=protocol)
    return path


# --- (a) the three released layouts ------------------------------------------------------

@pytest.mark.parametrize("name,static_query", [
    ("cityscapes_swin_t", True), ("coco_panoptic_r50", False), ("coco_instance_r50", True)])
def test_released_layouts_load_strictly(tmp_path, name, static_query):
    listing = _listing(name)
    arch = listing["architecture"]
    state = {}
    for i, (key, shape, dtype) in enumerate(listing["keys"]):
        if key.endswith("relative_position_index"):
            state[key] = _rel_index(int(round(shape[0] ** 0.5)))
        else:
            state[key] = np.full(shape, i, dtype=dtype)  # each tensor tagged by its position
        if static_query and key.endswith("predictor.query_feat.weight"):
            state[key.replace("query_feat", "static_query")] = state.pop(key)
    if static_query:  # as pickled from a state_dict(): an OrderedDict carrying module versions
        state = OrderedDict(state)
        state._metadata = OrderedDict((k, {"version": v}) for k, v in listing["state_dict_metadata"])
    model = load_model(_save(str(tmp_path / "model_final.pkl"), state))

    cfg = model.config
    assert cfg.num_labels == arch["num_classes"]
    assert cfg.id2label == dict(enumerate(DATASETS[arch["num_classes"]].names))
    assert (cfg.num_queries, cfg.hidden_dim, cfg.num_attention_heads) == (arch["num_queries"], arch["hidden_dim"], arch["nheads"])
    assert cfg.decoder_layers == arch["dec_layers"] and cfg.dim_feedforward == arch["dim_feedforward"]
    assert (cfg.mask_feature_size, cfg.feature_size) == (arch["mask_dim"], arch["conv_dim"])
    assert cfg.encoder_layers == arch["transformer_enc_layers"] and cfg.common_stride == arch["common_stride"]
    assert cfg.enforce_input_projection == arch["enforce_input_proj"] and cfg.pre_norm == arch["pre_norm"]
    bb = cfg.backbone_config
    if "swin" in arch:
        sw = arch["swin"]
        assert (bb.embed_dim, bb.depths, bb.num_heads) == (sw["embed_dim"], sw["depths"], sw["num_heads"])
        assert (bb.window_size, bb.patch_size, bb.mlp_ratio, bb.qkv_bias) == (
            sw["window_size"], sw["patch_size"], sw["mlp_ratio"], sw["qkv_bias"])
    else:
        rn = arch["resnet"]
        assert rn["depth"] == 50 and bb.depths == [3, 4, 6, 3]
        assert bb.embedding_size == rn["stem_out_channels"] and bb.hidden_sizes[0] == rn["res2_out_channels"]

    # Every tensor landed where the original's prefixes say it belongs.
    ours = model.state_dict()
    for i, (key, _, dtype) in enumerate(listing["keys"]):
        if key.startswith("criterion.") or key.endswith("relative_position_index"):
            continue
        mine = key.replace("sem_seg_head.pixel_decoder.", "pixel_decoder.").replace(
            "sem_seg_head.predictor.", "transformer_decoder.")
        assert ours[mine].dtype == torch.float32 and bool((ours[mine] == i).all()), key


# --- (b) logit parity with transformers ------------------------------------------------------

_P, _T = r"model\.pixel_level_module\.", r"model\.transformer_module\."
_PD, _PR = "sem_seg_head.pixel_decoder.", "sem_seg_head.predictor."
_SWB = _P + r"encoder\.encoder\.layers\.(\d+)\.blocks\.(\d+)\."
_RES = _P + r"encoder\.encoder\.stages\.(\d+)\.layers\.(\d+)\."
_ENC = _P + r"decoder\.encoder\.layers\.(\d+)\."
_DEC = _T + r"decoder\.layers\.(\d+)\."
_res = lambda m: f"backbone.res{int(m[1]) + 2}.{m[2]}."  # noqa: E731 - HF stage 0 is res2

# (HF regex, original name as a function of the match). Written from the original code:
# D2SwinTransformer, detectron2's build_resnet_backbone, MSDeformAttnPixelDecoder and
# MultiScaleMaskedTransformerDecoder.
HF_TO_ORIGINAL = [
    (_P + r"encoder\.embeddings\.patch_embeddings\.projection\.(\w+)", lambda m: f"backbone.patch_embed.proj.{m[1]}"),
    (_P + r"encoder\.embeddings\.norm\.(\w+)", lambda m: f"backbone.patch_embed.norm.{m[1]}"),
    (_SWB + r"layernorm_before\.(\w+)", lambda m: f"backbone.layers.{m[1]}.blocks.{m[2]}.norm1.{m[3]}"),
    (_SWB + r"layernorm_after\.(\w+)", lambda m: f"backbone.layers.{m[1]}.blocks.{m[2]}.norm2.{m[3]}"),
    (_SWB + r"attention\.self\.relative_position_bias_table",
     lambda m: f"backbone.layers.{m[1]}.blocks.{m[2]}.attn.relative_position_bias_table"),
    (_SWB + r"attention\.output\.dense\.(\w+)", lambda m: f"backbone.layers.{m[1]}.blocks.{m[2]}.attn.proj.{m[3]}"),
    (_SWB + r"intermediate\.dense\.(\w+)", lambda m: f"backbone.layers.{m[1]}.blocks.{m[2]}.mlp.fc1.{m[3]}"),
    (_SWB + r"output\.dense\.(\w+)", lambda m: f"backbone.layers.{m[1]}.blocks.{m[2]}.mlp.fc2.{m[3]}"),
    (_P + r"encoder\.encoder\.layers\.(\d+)\.downsample\.(\w+)\.(\w+)",
     lambda m: f"backbone.layers.{m[1]}.downsample.{m[2]}.{m[3]}"),
    (_P + r"encoder\.hidden_states_norms\.stage(\d)\.(\w+)", lambda m: f"backbone.norm{int(m[1]) - 1}.{m[2]}"),
    (_P + r"encoder\.embedder\.embedder\.convolution\.weight", lambda m: "backbone.stem.conv1.weight"),
    (_P + r"encoder\.embedder\.embedder\.normalization\.(\w+)", lambda m: f"backbone.stem.conv1.norm.{m[1]}"),
    (_RES + r"shortcut\.convolution\.weight", lambda m: _res(m) + "shortcut.weight"),
    (_RES + r"shortcut\.normalization\.(\w+)", lambda m: _res(m) + f"shortcut.norm.{m[3]}"),
    (_RES + r"layer\.(\d)\.convolution\.weight", lambda m: _res(m) + f"conv{int(m[3]) + 1}.weight"),
    (_RES + r"layer\.(\d)\.normalization\.(\w+)", lambda m: _res(m) + f"conv{int(m[3]) + 1}.norm.{m[4]}"),
    (_P + r"decoder\.input_projections\.(\d+)\.(\d)\.(\w+)", lambda m: f"{_PD}input_proj.{m[1]}.{m[2]}.{m[3]}"),
    (_P + r"decoder\.level_embed", lambda m: f"{_PD}transformer.level_embed"),
    (_ENC + r"self_attn\.(\w+)\.(\w+)", lambda m: f"{_PD}transformer.encoder.layers.{m[1]}.self_attn.{m[2]}.{m[3]}"),
    (_ENC + r"self_attn_layer_norm\.(\w+)", lambda m: f"{_PD}transformer.encoder.layers.{m[1]}.norm1.{m[2]}"),
    (_ENC + r"fc(\d)\.(\w+)", lambda m: f"{_PD}transformer.encoder.layers.{m[1]}.linear{m[2]}.{m[3]}"),
    (_ENC + r"final_layer_norm\.(\w+)", lambda m: f"{_PD}transformer.encoder.layers.{m[1]}.norm2.{m[2]}"),
    (_P + r"decoder\.mask_projection\.(\w+)", lambda m: f"{_PD}mask_features.{m[1]}"),
    (_P + r"decoder\.(adapter|layer)_(\d+)\.0\.weight", lambda m: f"{_PD}{m[1]}_{m[2]}.weight"),
    (_P + r"decoder\.(adapter|layer)_(\d+)\.1\.(\w+)", lambda m: f"{_PD}{m[1]}_{m[2]}.norm.{m[3]}"),
    (_T + r"queries_embedder\.weight", lambda m: f"{_PR}query_embed.weight"),
    (_T + r"queries_features\.weight", lambda m: f"{_PR}query_feat.weight"),
    (_T + r"level_embed\.weight", lambda m: f"{_PR}level_embed.weight"),
    (_T + r"input_projections\.(\d+)\.(\w+)", lambda m: f"{_PR}input_proj.{m[1]}.{m[2]}"),
    (_DEC + r"self_attn\.out_proj\.(\w+)", lambda m: f"{_PR}transformer_self_attention_layers.{m[1]}.self_attn.out_proj.{m[2]}"),
    (_DEC + r"self_attn_layer_norm\.(\w+)", lambda m: f"{_PR}transformer_self_attention_layers.{m[1]}.norm.{m[2]}"),
    (_DEC + r"cross_attn\.(in_proj_\w+|out_proj\.\w+)",
     lambda m: f"{_PR}transformer_cross_attention_layers.{m[1]}.multihead_attn.{m[2]}"),
    (_DEC + r"cross_attn_layer_norm\.(\w+)", lambda m: f"{_PR}transformer_cross_attention_layers.{m[1]}.norm.{m[2]}"),
    (_DEC + r"fc(\d)\.(\w+)", lambda m: f"{_PR}transformer_ffn_layers.{m[1]}.linear{m[2]}.{m[3]}"),
    (_DEC + r"final_layer_norm\.(\w+)", lambda m: f"{_PR}transformer_ffn_layers.{m[1]}.norm.{m[2]}"),
    (_T + r"decoder\.layernorm\.(\w+)", lambda m: f"{_PR}decoder_norm.{m[1]}"),
    (_T + r"decoder\.mask_predictor\.mask_embedder\.(\d)\.0\.(\w+)", lambda m: f"{_PR}mask_embed.layers.{m[1]}.{m[2]}"),
    (r"class_predictor\.(\w+)", lambda m: f"{_PR}class_embed.{m[1]}"),
]
# Separate q, k, v in transformers; one stacked (q; k; v) tensor in the original.
HF_FUSED = [
    (_SWB + r"attention\.self\.(query|key|value)\.(\w+)", ("query", "key", "value"),
     lambda m: f"backbone.layers.{m[1]}.blocks.{m[2]}.attn.qkv.{m[4]}"),
    (_DEC + r"self_attn\.(q_proj|k_proj|v_proj)\.(\w+)", ("q_proj", "k_proj", "v_proj"),
     lambda m: f"{_PR}transformer_self_attention_layers.{m[1]}.self_attn.in_proj_{m[3]}"),
]
HF_UNUSED = re.compile(r"(num_batches_tracked$|^criterion\.|encoder\.(swin\.)?layernorm\.)")


def hf_to_original(hf_state: dict, window: int, num_classes: int) -> dict:
    out, parts = {}, {}
    for name, t in hf_state.items():
        if HF_UNUSED.search(name):
            continue
        for pattern, order, target in HF_FUSED:
            m = re.fullmatch(pattern, name)
            if m:
                parts.setdefault(target(m), {})[m[len(m.groups()) - 1]] = t
                break
        else:
            for pattern, target in HF_TO_ORIGINAL:
                m = re.fullmatch(pattern, name)
                if m:
                    out[target(m)] = t.numpy()
                    break
            else:
                raise AssertionError(f"test mapping misses {name}")
    for target, got in parts.items():
        order = next(o for _, o, _ in HF_FUSED if set(o) == set(got))
        out[target] = torch.cat([got[k] for k in order]).numpy()
    for name in list(out):  # buffers the original's state dict carries
        if name.endswith("attn.relative_position_bias_table"):
            out[name.replace("relative_position_bias_table", "relative_position_index")] = _rel_index(window)
    out["criterion.empty_weight"] = np.r_[np.ones(num_classes, np.float32), np.float32(0.1)]
    return out


def _hf_model(kind: str):
    transformers = pytest.importorskip("transformers")
    stages = ["stage1", "stage2", "stage3", "stage4"]
    if kind == "swin":
        backbone = transformers.SwinConfig(embed_dim=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8], window_size=7,
                                           drop_path_rate=0.0, out_features=stages)
        extra = dict(hidden_dim=96, num_labels=19)  # hidden != feature_size: projections by width
    else:
        backbone = transformers.ResNetConfig(embedding_size=16, hidden_sizes=[32, 64, 128, 256], depths=[1, 2, 1, 1],
                                             layer_type="bottleneck", downsample_in_bottleneck=False, out_features=stages)
        extra = dict(hidden_dim=64, num_labels=7, enforce_input_projection=True)
    cfg = transformers.Mask2FormerConfig(
        backbone_config=backbone, feature_size=64, mask_feature_size=64, num_attention_heads=4, dim_feedforward=128,
        encoder_feedforward_dim=96, encoder_layers=2, decoder_layers=4, num_queries=12, output_auxiliary_logits=True,
        **extra)
    model = transformers.Mask2FormerForUniversalSegmentation(cfg).eval()
    # Re-draw every tensor at unit activation scale: with the library's small initial weights the
    # logits hardly depend on the image and the masks are all negative, so masked attention
    # would go untested. Here masks are a mix of signs and the image moves the logits by ~10.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.uniform_(0.5, 1.5, generator=g)
            elif t.dim() >= 2:
                t.copy_(torch.randn(t.shape, generator=g) / t[0].numel() ** 0.5)
            elif name.endswith("weight"):
                t.copy_(1 + 0.2 * torch.randn(t.shape, generator=g))
            else:
                t.copy_(0.2 * torch.randn(t.shape, generator=g))
    return model


_CASES: dict = {}


def _case(kind: str, tmp_path_factory):
    """(transformers model, its saved state dict, input, its outputs, original-named state)."""
    if kind not in _CASES:
        from safetensors.torch import load_file

        hf = _hf_model(kind)
        folder = str(tmp_path_factory.mktemp(f"hf_{kind}"))
        hf.save_pretrained(folder)
        saved = load_file(os.path.join(folder, "model.safetensors"))  # published names
        # Every stage map larger than the 7x7 window: transformers' Swin shrinks windows otherwise.
        # A single image and a padded pair whose second image is smaller.
        x = torch.randn(1, 3, 256, 288) if kind == "swin" else torch.randn(1, 3, 96, 128)
        pair = torch.cat([x, torch.zeros_like(x)])
        pair[1, :, : x.shape[2] - 32, : x.shape[3] - 32] = torch.randn(3, x.shape[2] - 32, x.shape[3] - 32)
        x = (x, pair)
        with torch.no_grad():
            ref = tuple(hf(pixel_values=v) for v in x)
        window = 7 if kind == "swin" else 0
        original = hf_to_original(saved, window, hf.config.num_labels)
        _CASES[kind] = (hf, x, ref, original)
    return _CASES[kind]


def _check_layout(original: dict, listing_name: str, allowed_extra: set = frozenset()) -> None:
    """The test mapping yields the original's name layout exactly (modulo depths)."""
    ours = {_generic(k) for k in original}
    ref = {_generic(k) for k, _, _ in _listing(listing_name)["keys"]}
    assert ours - ref <= set(allowed_extra), sorted(ours - ref)
    assert not ref - ours, sorted(ref - ours)


def _assert_same_logits(model, inputs, refs) -> None:
    """Bit-identical to transformers (and so to the original) on every prediction."""
    for x, ref in zip(inputs, refs):
        with torch.no_grad():
            out = model(x)
        pairs = [(out.class_queries_logits, ref.class_queries_logits), (out.masks_queries_logits, ref.masks_queries_logits)]
        assert len(out.auxiliary_logits) == len(ref.auxiliary_logits) > 0
        for a, b in zip(out.auxiliary_logits, ref.auxiliary_logits):
            pairs += [(a["class_queries_logits"], b["class_queries_logits"]),
                      (a["masks_queries_logits"], b["masks_queries_logits"])]
        for a, b in pairs:
            assert a.shape == b.shape
            assert torch.equal(a, b), (a - b).abs().max().item()


@pytest.mark.parametrize("kind,fmt,protocol,static_query", [
    ("swin", "released", 2, True), ("resnet", "bare", 5, False), ("resnet", "pth", 0, False),
    ("resnet", "legacy", 0, False), ("resnet", "v1-head", 4, True)])
def test_logits_match_transformers(tmp_path, tmp_path_factory, kind, fmt, protocol, static_query):
    hf, x, ref, original = _case(kind, tmp_path_factory)
    extra = {_PR + "input_proj.N.weight", _PR + "input_proj.N.bias"}  # present when projections exist
    _check_layout(original, "cityscapes_swin_t" if kind == "swin" else "coco_panoptic_r50", extra)
    state = dict(original)
    if static_query:
        state[_PR + "static_query.weight"] = state.pop(_PR + "query_feat.weight")
    if fmt == "pth":  # Cityscapes ResNets train with SyncBN, whose state carries a step counter
        for key in [k for k in state if k.endswith(".norm.running_mean")]:
            state[key.replace("running_mean", "num_batches_tracked")] = np.array(90000, dtype=np.int64)
    path = _save(str(tmp_path / ("model.pth" if fmt == "pth" else "model.pkl")), state, fmt, protocol)
    model = load_model(path)
    for field in ("num_queries", "hidden_dim", "feature_size", "mask_feature_size", "num_attention_heads",
                  "dim_feedforward", "encoder_feedforward_dim", "encoder_layers", "decoder_layers",
                  "enforce_input_projection", "num_labels", "common_stride"):
        assert getattr(model.config, field) == getattr(hf.config, field), field
    _assert_same_logits(model, x, ref)


# --- (e) conversion to a Hugging Face folder ----------------------------------------------------

def test_convert_loads_in_transformers(tmp_path, tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    from mask2former.checkpoint.convert import convert

    hf, x, ref, original = _case("swin", tmp_path_factory)
    out = convert(_save(str(tmp_path / "model_final.pkl"), original), str(tmp_path / "hf"))
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= set(os.listdir(out))
    converted = transformers.Mask2FormerForUniversalSegmentation.from_pretrained(out, output_auxiliary_logits=True).eval()
    assert converted.config.id2label[18] == "bicycle"  # 19 classes: Cityscapes names
    with torch.no_grad():
        got = converted(pixel_values=x[0])
    for a, b in [(got.class_queries_logits, ref[0].class_queries_logits),
                 (got.masks_queries_logits, ref[0].masks_queries_logits)]:
        assert torch.equal(a, b)
    with open(os.path.join(out, "preprocessor_config.json")) as f:
        pre = json.load(f)
    assert pre["size"] == {"shortest_edge": 1024, "longest_edge": 2048}  # Cityscapes test size
    _assert_same_logits(load_model(out), x, ref)  # and it round-trips through our own loader


# --- (c) the restricted unpickler ------------------------------------------------------------

class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_refuses_code_in_pickles(tmp_path, suffix):
    marker = tmp_path / "pwned"
    path = str(tmp_path / f"evil{suffix}")
    payload = {"model": {"backbone.stem.conv1.weight": _Evil(str(marker))}, "__author__": "x"}
    if suffix == ".pth":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    with pytest.raises(UnsafeCheckpointError) as err:
        load_model(path)
    assert path in str(err.value)
    if suffix == ".pkl":
        assert "system" in str(err.value)
    assert not marker.exists()


def test_refuses_builtins_that_run_code(tmp_path):
    path = tmp_path / "eval.pkl"
    # GLOBAL builtins.eval, then call it: a plain pickle would evaluate the string.
    path.write_bytes(b"cbuiltins\neval\n(S'1+1'\ntR.")
    with pytest.raises(UnsafeCheckpointError, match="builtins.eval"):
        read_detectron2_checkpoint(str(path))


# --- (d) clear errors, never a partial load ----------------------------------------------------

def _broken(tmp_path, tmp_path_factory, edit) -> str:
    state = dict(_case("resnet", tmp_path_factory)[3])
    edit(state)
    return _save(str(tmp_path / "model.pkl"), state)


@pytest.mark.parametrize("edit,expected", [
    (lambda s: s.pop(_PR + "transformer_ffn_layers.1.norm.weight"), r"missing: .*transformer_ffn_layers\.1\.norm\.weight"),
    (lambda s: s.__setitem__("roi_heads.box_predictor.weight", np.zeros(3, np.float32)), r"roi_heads\.box_predictor"),
    (lambda s: s.__setitem__(_PR + "bogus.weight", np.zeros(3, np.float32)), r"unexpected: transformer_decoder\.bogus"),
    (lambda s: s.__setitem__(_PR + "transformer_ffn_layers.0.linear1.bias", np.zeros(5, np.float32)),
     r"mis-shaped: transformer_decoder\.transformer_ffn_layers\.0\.linear1\.bias"),
    (lambda s: s.__setitem__(_PR + "static_query.weight", s[_PR + "query_feat.weight"]), "query_feat"),
    (lambda s: s.pop(_PR + "class_embed.weight"), r"number of classes: no tensor transformer_decoder\.class_embed"),
    (lambda s: s.__setitem__("backbone.res3.0.conv1.weight", "not an array"), "not arrays"),
])
def test_mismatches_fail_loudly(tmp_path, tmp_path_factory, edit, expected):
    with pytest.raises(CheckpointMismatchError, match=expected):
        load_model(_broken(tmp_path, tmp_path_factory, edit))


def test_wrong_relative_position_index_fails(tmp_path, tmp_path_factory):
    state = dict(_case("swin", tmp_path_factory)[3])
    state["backbone.layers.1.blocks.0.attn.relative_position_index"] = _rel_index(7)[::-1].copy()
    with pytest.raises(CheckpointMismatchError, match="relative_position_index"):
        load_model(_save(str(tmp_path / "m.pkl"), state))


def test_backbone_only_checkpoint_is_named(tmp_path):
    path = _save(str(tmp_path / "R-50.pkl"), {"stem.conv1.weight": np.zeros((64, 3, 7, 7), np.float32)})
    with pytest.raises(CheckpointMismatchError, match="backbone-only"):
        load_model(path)


# --- labels ---------------------------------------------------------------------------------

def test_id2label_override_and_palette(tmp_path, tmp_path_factory):
    original = _case("resnet", tmp_path_factory)[3]  # 7 classes: no released dataset
    path = _save(str(tmp_path / "m.pkl"), original)
    config, _ = read_detectron2_checkpoint(path)
    assert config.id2label == {i: f"LABEL_{i}" for i in range(7)}
    names = ["a", "b", "c", "d", "e", "f", "g"]
    assert load_model(path, id2label=names).config.id2label == dict(enumerate(names))
    assert read_detectron2_checkpoint(path, id2label={str(i): n for i, n in enumerate(names)})[0].id2label[6] == "g"
    with pytest.raises(ValueError, match="7 classes"):
        read_detectron2_checkpoint(path, id2label=names[:3])
    assert palette(7) == palette(7) and len(set(palette(7))) == 7
    assert palette(19)[0] == (128, 64, 128) and DATASETS[19].names[0] == "road"
    assert DATASETS[133].names[79] == "toothbrush" and DATASETS[133].names[-1] == "rug-merged"
    assert DATASETS[150].names[:3] == ("wall", "building", "sky") and DATASETS[65].names[0] == "Bird"
    assert DATASETS[8].names == ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")
