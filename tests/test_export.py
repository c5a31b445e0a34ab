"""ONNX / torch.export export and the ONNX Runtime / OpenVINO backends against our PyTorch model.

One exported file per model serves every check: three input sizes and a padded batch of two.
Logits: class <= 1e-4, mask <= 1e-3 of the PyTorch model run as exported (grid_sample
deformable attention, final prediction only), with masked attention's threshold accounted
for as tests/export_probe.py explains; label maps after our post-processing >= 99.99 % equal;
the in-graph semantic post-processing >= 99.99 % equal to our Python post-processing of the
PyTorch logits. The runtimes run in subprocesses (tests/runtime_worker.py), never in pytest's.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from export_probe import check_case, export_probe, run_worker, torch_logits
from mask2former import Mask2FormerForUniversalSegmentation
from mask2former.export import ExportError, check_standard, export_model, export_onnx, read_metadata
from mask2former.processor import Mask2FormerImageProcessor
from mask2former.segmenter import Segmenter

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
for _runtime in ("onnxruntime", "openvino"):  # installed, but not imported here (see the docstring)
    if importlib.util.find_spec(_runtime) is None:
        pytest.skip(f"{_runtime} is not installed", allow_module_level=True)

DEMO = os.path.join(os.path.dirname(__file__), os.pardir, "models", "demo-street")
RUNTIMES = ["onnxruntime", "openvino"]
FIGURES = os.environ.get("MASK2FORMER_EXPORT_FIGURES")  # a .jsonl to append the measured figures to


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mask2former.cli", *args], capture_output=True, text=True,
                          timeout=1200, env={**os.environ, "OMP_NUM_THREADS": "2"})


def inputs(seed: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Three sizes and a padded batch of two (pixel_values, pixel_mask). 448x512 gives Swin-L's
    12x12 windows two windows per axis in its last stage, the smaller ones a single one: one
    graph must run both (an export example of one window had frozen that count)."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for sizes, pad in (([(256, 320)], (256, 320)), ([(352, 224)], (352, 224)), ([(250, 300), (224, 320)], (256, 320)),
                       ([(448, 512)], (448, 512))):
        x = torch.zeros(len(sizes), 3, *pad)
        mask = torch.zeros(len(sizes), *pad, dtype=torch.long)
        for i, (h, w) in enumerate(sizes):
            x[i, :, :h, :w] = torch.randn(3, h, w, generator=g)
            mask[i, :h, :w] = 1
        cases.append((x, mask))
    return cases


def assert_runtime_matches(model, probe_path: str, runtime: str, tmp: str, name: str) -> None:
    """check_case on every input, the runtime in a subprocess over the probe graph."""
    cases = inputs()
    results = run_worker(probe_path, runtime, "graph", tmp, cases=[{"pixel_values": x.numpy()} for x, _ in cases])
    for (x, mask), got in zip(cases, results):
        figures = check_case(model, x, mask, got, f"{name} {runtime} {tuple(x.shape)}")
        if FIGURES:
            with open(FIGURES, "a") as f:
                f.write(json.dumps(figures) + "\n")


# -- the demo model: the command line, both runtimes, file checks ------------------------


@pytest.fixture(scope="module")
def demo_onnx(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("onnx") / "demo.onnx")
    r = cli("export", DEMO, "--output", path)
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stderr
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # as any file the user writes, not private
    return path


@pytest.fixture(scope="module")
def demo_model():
    return Mask2FormerForUniversalSegmentation.from_pretrained(DEMO).eval()


def test_file_is_standard_onnx_with_metadata(demo_onnx):
    proto = onnx.load(demo_onnx)
    check_standard(proto)
    assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node)
    assert {"GridSample", "MatMul", "Softmax"} <= {n.op_type for n in proto.graph.node}
    onnx.checker.check_model(proto, full_check=True)
    onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    dims = [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] == "batch" and dims[2] == "height" and dims[3] == "width"
    assert [o.name for o in proto.graph.output] == ["class_queries_logits", "masks_queries_logits"]
    meta = read_metadata(demo_onnx)
    info = meta.model_info()
    assert meta.graph == "logits" and info.task == "semantic"
    assert info.id2label[0] == "road" and info.test_size == (256, 1024) and info.thing_ids == [5, 6, 7]
    assert meta.info["size_divisibility"] == 32 and meta.info["image_std"] == [0.229, 0.224, 0.225]
    assert meta.model_config().num_queries == 16


@pytest.fixture(scope="module")
def demo_probe(demo_model, tmp_path_factory):
    return export_probe(demo_model, str(tmp_path_factory.mktemp("probe") / "demo-probe.onnx"))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_runtime_logits_and_labels(demo_model, demo_probe, runtime, tmp_path):
    assert_runtime_matches(demo_model, demo_probe, runtime, str(tmp_path), "demo")


def _street(tmp_path) -> str:
    rng = np.random.default_rng(0)
    img = np.zeros((300, 500, 3), np.uint8)
    img[:120] = (70, 130, 180)  # sky
    img[120:200] = (70, 70, 70)  # buildings
    img[200:] = (128, 64, 128)  # road
    img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
    path = str(tmp_path / "street.png")
    Image.fromarray(img).save(path)
    return path


@pytest.mark.parametrize("backend", [None, "openvino"])
def test_segment_command_writes_the_same_labels(demo_onnx, tmp_path, backend):
    image = _street(tmp_path)
    ref = cli("segment", image, "--model", DEMO, "--out", str(tmp_path / "torch"))
    assert ref.returncode == 0, ref.stderr
    extra = ["--backend", backend] if backend else []
    got = cli("segment", image, "--model", demo_onnx, "--out", str(tmp_path / "onnx"), *extra)
    assert got.returncode == 0, got.stderr
    a, b = (np.asarray(Image.open(tmp_path / d / "street_labels.png")) for d in ("torch", "onnx"))
    assert a.shape == b.shape == (300, 500)
    assert (a == b).mean() >= 0.9999
    assert len(np.unique(a)) > 1


def test_segmenter_backends_agree(demo_onnx, tmp_path):
    image = _street(tmp_path)
    torch_result = Segmenter(DEMO)(image)
    meta = read_metadata(demo_onnx).model_info()
    assert meta.task == "semantic" and meta.id2label == torch_result.id2label
    for backend in RUNTIMES:
        labels = run_worker(demo_onnx, backend, "segment", str(tmp_path), images=[image])[0]["labels"]
        assert (labels == torch_result.labels).mean() >= 0.9999


def test_evaluate_with_each_backend(demo_onnx, tmp_path):
    """evaluate --model FILE.onnx --backend B scores what the torch model scores."""
    from mask2former.data import synthetic

    synthetic.generate(tmp_path / "scenes", 0, 3, size=(192, 288), seed=1)
    metrics = {}
    for model, backend in ((DEMO, None), (demo_onnx, "onnxruntime"), (demo_onnx, "openvino")):
        extra = ["--backend", backend] if backend else []
        r = cli("evaluate", "--dataset", "folder", "--data-root", str(tmp_path / "scenes"), "--model", model,
                "--task", "semantic", "--json", *extra)
        assert r.returncode == 0, r.stderr
        metrics[backend] = json.loads(r.stdout.strip().splitlines()[-1])
    assert metrics[None]["num_images"] == 3 and metrics[None]["mIoU"] > 50  # the demo model segments these
    for backend in RUNTIMES:
        for key in ("mIoU", "pACC", "fwIoU"):
            assert metrics[backend][key] == pytest.approx(metrics[None][key], abs=0.05), (backend, key)


# -- in-graph semantic post-processing (demo model); torch.export (a transformers-built one)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from hf_models import SMALL_HEAD, SMALL_SWIN, hf_model, save_hf

    folder = save_hf(hf_model("swin", SMALL_SWIN, **SMALL_HEAD), tmp_path_factory.mktemp("tiny"))
    return folder, Mask2FormerForUniversalSegmentation.from_pretrained(folder).eval()


def scene_inputs() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """inputs()' shapes filled with synthetic street scenes (what the demo model was trained on)."""
    from mask2former.data.synthetic import render_scene

    processor = Mask2FormerImageProcessor()
    cases = []
    for k, (x, mask) in enumerate(inputs()):
        for i in range(len(x)):
            h, w = (int(v) + 1 for v in mask[i].nonzero().max(0).values)
            image, _, _ = render_scene(np.random.default_rng(10 * k + i), (h, w))
            x[i] = 0
            x[i, :, :h, :w] = processor([image], do_resize=False)["pixel_values"][0]
        cases.append((x, mask))
    return cases


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_semantic_postprocessing_in_graph(demo_model, tmp_path_factory, runtime, tmp_path):
    path = str(tmp_path_factory.getbasetemp() / "demo-semantic.onnx")
    if not os.path.exists(path):
        report = export_onnx(DEMO, path, postprocess="semantic")
        assert report.graph == "semantic" and report.bytes > 0
    check_standard(onnx.load(path))
    assert read_metadata(path).graph == "semantic"
    processor = Mask2FormerImageProcessor()
    cases, expected = [], []
    for (x, mask), target in zip(scene_inputs(), [(512, 640), (300, 200), (250, 300)]):
        valid = tuple(int(v) for v in mask[-1].nonzero().max(0).values + 1)
        mask[:] = 0
        mask[:, :valid[0], :valid[1]] = 1  # one valid size per batch, as Segmenter batches
        ref = torch_logits(demo_model, x)
        ref.pixel_mask = mask
        expected.append(torch.stack(processor.post_process_semantic_segmentation(
            ref, target_sizes=[target] * len(x), resize_before_inference=False)).numpy())
        cases.append({"pixel_values": x.numpy(), "valid_size": np.array(valid), "target_size": np.array(target)})
    for got, want in zip(run_worker(path, runtime, "graph", str(tmp_path), cases=cases), expected):
        labels = got["labels"]
        assert labels.shape == want.shape
        assert (labels == want).mean() >= 0.9999
        assert len(np.unique(want)) > 2


def test_torch_export_has_dynamic_height_and_width(tiny):
    _, model = tiny
    program = export_model(model)
    run = program.module()
    # The program keeps the exporter's assumption that every Swin stage has more than one
    # window per axis (> 224 px for 7x7 windows); the ONNX file has no such limit.
    cases = [torch.randn(1, 3, 256, 320), torch.randn(1, 3, 320, 448), torch.randn(2, 3, 256, 320)]
    for x in cases:
        ref = torch_logits(model, x)
        with torch.no_grad():
            classes, masks = run(x)
        assert (classes - ref.class_queries_logits).abs().max().item() <= 1e-4
        assert (masks - ref.masks_queries_logits).abs().max().item() <= 1e-3


# -- one-line errors ---------------------------------------------------------------------


def _one_line_error(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode != 0
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_option_errors_are_one_line(tmp_path):
    _one_line_error(cli("export", DEMO, "--opset", "13", "--output", str(tmp_path / "m.onnx")), "GridSample", "16")
    _one_line_error(cli("export", DEMO, "--postprocess", "panoptic"), "Python")
    _one_line_error(cli("export", str(tmp_path / "missing")), "missing")


def test_onnx_without_metadata_is_one_error(tmp_path):
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = str(tmp_path / "plain.onnx")
    onnx.save(helper.make_model(graph), path)
    with pytest.raises(ExportError, match="no mask2former metadata"):
        read_metadata(path)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "x.png")
    _one_line_error(cli("segment", str(tmp_path / "x.png"), "--model", path, "--out", str(tmp_path / "o")),
                    "plain.onnx", "metadata")
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all")
    _one_line_error(cli("segment", str(tmp_path / "x.png"), "--model", str(tmp_path / "junk.onnx"), "--out",
                        str(tmp_path / "o")), "junk.onnx")


def test_backend_errors(demo_onnx, tmp_path):
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "x.png")
    _one_line_error(cli("segment", str(tmp_path / "x.png"), "--model", demo_onnx, "--backend", "torch", "--out",
                        str(tmp_path / "o")), "onnxruntime")
    from mask2former.export.onnx import require

    with pytest.raises(ExportError, match=r"pip install 'mask2former\[export\]'"):
        require("no_such_runtime_package")
    with pytest.raises(ExportError, match="quantised"):
        from mask2former.export.torch_export import check_exportable

        check_exportable(torch.ao.quantization.quantize_dynamic(
            Mask2FormerForUniversalSegmentation.from_pretrained(DEMO), {torch.nn.Linear}, dtype=torch.qint8))


def test_onnxruntime_provider_choice():
    """GPU providers first where installed and the device allows them, the CPU provider always."""
    from mask2former.runtime.ort_backend import providers_for

    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers_for(None, gpu) == gpu
    assert providers_for("cuda:1", gpu) == gpu
    assert providers_for("cpu", gpu) == ["CPUExecutionProvider"]
    assert providers_for(None, ["CUDAExecutionProvider", "CPUExecutionProvider"]) == ["CUDAExecutionProvider",
                                                                                      "CPUExecutionProvider"]
    assert providers_for(None, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


# -- the published architectures (random weights) and an original .pkl ------------------


_EXPORTED: dict = {}


def exported_architecture(arch: str, tmp_path_factory) -> tuple:
    """(random-weight model, its probe .onnx), exported once per architecture for both runtimes."""
    if arch not in _EXPORTED:
        from mask2former.train.model_init import architecture_config

        torch.manual_seed(0)
        cfg = architecture_config(arch, {i: f"c{i}" for i in range(19)}, {})
        model = Mask2FormerForUniversalSegmentation(cfg).eval()
        path = export_probe(model, str(tmp_path_factory.mktemp(arch) / f"{arch}.onnx"))
        check_standard(onnx.load(path, load_external_data=False))
        _EXPORTED[arch] = (model, path)
    return _EXPORTED[arch]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["swin-t", "r50", "swin-l"])
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_published_architectures(tmp_path_factory, tmp_path, arch, runtime):
    model, path = exported_architecture(arch, tmp_path_factory)
    assert_runtime_matches(model, path, runtime, str(tmp_path), arch)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["swin-s", "swin-b", "r101"])
def test_other_published_architectures(tmp_path_factory, tmp_path, arch):
    """The remaining published backbones export and run too: the same block types as Swin-T
    (7x7 windows), Swin-L (12x12) and ResNet-50 at other depths and widths, so one runtime."""
    model, path = exported_architecture(arch, tmp_path_factory)
    assert_runtime_matches(model, path, "onnxruntime", str(tmp_path), arch)


@pytest.mark.slow
def test_original_pkl(tmp_path, tmp_path_factory):
    from test_detectron2 import _case, _save

    _, _, _, original = _case("swin", tmp_path_factory)
    pkl = _save(str(tmp_path / "model_final.pkl"), original)
    r = cli("export", pkl, "--output", str(tmp_path / "from-pkl.onnx"))
    assert r.returncode == 0, r.stderr
    assert read_metadata(str(tmp_path / "from-pkl.onnx")).graph == "logits"
    model = Mask2FormerForUniversalSegmentation.from_pretrained(pkl).eval()
    probe = export_probe(model, str(tmp_path / "pkl-probe.onnx"))
    for runtime in RUNTIMES:
        assert_runtime_matches(model, probe, runtime, str(tmp_path), "pkl")
