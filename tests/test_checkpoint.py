"""Hugging Face checkpoint formats: folders, shards, .bin, hub cache, offline errors, strictness."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_models import SMALL_HEAD, hf_forward, hf_model, save_hf
from mask2former import Mask2FormerConfig, Mask2FormerForUniversalSegmentation
from mask2former.checkpoint import CheckpointMismatchError, CheckpointNotFoundError


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    model = hf_model("swin", **SMALL_HEAD)
    folder = save_hf(model, tmp_path_factory.mktemp("hf"))
    x = torch.randn(1, 3, 256, 256)
    return model, folder, x, hf_forward(model, x)


def close(ours, ref_out, atol=1e-4):
    return (ours.masks_queries_logits - ref_out.masks_queries_logits).abs().max().item() <= atol


def test_config_round_trip(reference):
    _, folder, _, _ = reference
    with open(os.path.join(folder, "config.json")) as f:
        raw = json.load(f)
    cfg = Mask2FormerConfig.from_dict(raw)
    again = cfg.to_dict()
    for key, value in raw.items():
        if key == "backbone_config":
            for k, v in value.items():
                assert again[key][k] == v, k
        elif not (key == "label2id" and value is None):  # transformers 5 may write null here
            assert again[key] == value, key
    assert cfg.num_labels == 7 and cfg.id2label[3] == "class_3"


def test_save_pretrained_loads_in_transformers(reference, tmp_path):
    import transformers

    ref_model, folder, x, ref_out = reference
    ours = Mask2FormerForUniversalSegmentation.from_pretrained(folder)
    ours.save_pretrained(tmp_path)
    assert set(load_file(os.path.join(tmp_path, "model.safetensors"))) >= set(load_file(os.path.join(folder, "model.safetensors"))) - {
        k for k in load_file(os.path.join(folder, "model.safetensors")) if "swin.layernorm" in k}
    again = transformers.Mask2FormerForUniversalSegmentation.from_pretrained(tmp_path).eval()
    assert close(hf_forward(again, x), ref_out, atol=0)


def test_sharded_safetensors(reference, tmp_path):
    ref_model, _, x, ref_out = reference
    ref_model.save_pretrained(tmp_path, max_shard_size="200KB")
    assert os.path.exists(os.path.join(tmp_path, "model.safetensors.index.json"))
    with torch.no_grad():
        assert close(Mask2FormerForUniversalSegmentation.from_pretrained(tmp_path)(x), ref_out)


def test_pytorch_model_bin(reference, tmp_path):
    _, folder, x, ref_out = reference
    shutil.copy(os.path.join(folder, "config.json"), tmp_path)
    torch.save(load_file(os.path.join(folder, "model.safetensors")), os.path.join(tmp_path, "pytorch_model.bin"))
    with torch.no_grad():
        assert close(Mask2FormerForUniversalSegmentation.from_pretrained(tmp_path)(x), ref_out)


def test_hub_cache_offline(reference, tmp_path, monkeypatch):
    """A hub id resolves through huggingface_hub's real cache layout, with the network off."""
    _, folder, x, ref_out = reference
    snapshot = tmp_path / "models--someone--m2f-test" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(folder, name), snapshot / name)
    (tmp_path / "models--someone--m2f-test" / "refs").mkdir()
    (tmp_path / "models--someone--m2f-test" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    model = Mask2FormerForUniversalSegmentation.from_pretrained("someone/m2f-test", cache_dir=str(tmp_path))
    with torch.no_grad():
        assert close(model(x), ref_out)


@pytest.mark.parametrize("how", ["offline_mode", "no_network"])
def test_offline_uncached_hub_id_is_one_clear_line(tmp_path, monkeypatch, how):
    import socket

    import huggingface_hub.constants

    if how == "offline_mode":
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    else:
        def no_dns(*args, **kwargs):
            raise socket.gaierror("Name or service not known")

        monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(CheckpointNotFoundError) as e:
        Mask2FormerForUniversalSegmentation.from_pretrained("facebook/mask2former-swin-large-cityscapes-semantic",
                                                            cache_dir=str(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg and "facebook/mask2former-swin-large-cityscapes-semantic" in msg and "offline" in msg


def test_missing_folder_file(tmp_path):
    (tmp_path / "config.json").write_text(Mask2FormerConfig().to_json_string())
    with pytest.raises(CheckpointNotFoundError, match="no weights"):
        Mask2FormerForUniversalSegmentation.from_pretrained(tmp_path)


@pytest.mark.parametrize("damage", ["missing", "unexpected", "shape", "class_count"])
def test_strict_loading_names_the_problem(reference, tmp_path, damage):
    _, folder, _, _ = reference
    state = load_file(os.path.join(folder, "model.safetensors"))
    cfg = json.load(open(os.path.join(folder, "config.json")))
    if damage == "missing":
        del state["model.transformer_module.queries_features.weight"]
        expect = "queries_features|query_feat"
    elif damage == "unexpected":
        state["model.transformer_module.extra_thing.weight"] = torch.zeros(1)
        expect = "extra_thing"
    elif damage == "shape":
        state["model.transformer_module.level_embed.weight"] = torch.zeros(4, 64)
        expect = "level_embed"
    else:
        cfg["id2label"] = {str(i): f"c{i}" for i in range(19)}
        cfg.pop("label2id", None)
        expect = "class_embed"
    save_file(state, os.path.join(tmp_path, "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointMismatchError, match=expect):
        Mask2FormerForUniversalSegmentation.from_pretrained(tmp_path)
