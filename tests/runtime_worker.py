"""Runs an exported .onnx with ONNX Runtime or OpenVINO in a process of its own.

The tests never load either runtime into the pytest process: with their thread pools alive
there, full runs died of segmentation faults (in later tests that fork, and in theirs).

    python runtime_worker.py REQUEST.json

REQUEST: {"onnx": path, "runtime": "onnxruntime" | "openvino", "mode": "backend" | "graph" |
"segment", "inputs": npz path (modes backend/graph), "images": [paths] (mode segment),
"output": npz path}. Inputs are named "CASE/FEED"; outputs "CASE/OUTPUT".
- backend: our runtime backend (mask2former.runtime.load_backend) on each case's pixel_values;
  outputs its class and mask logits.
- graph: the file's graph as it is, every output (f32 for OpenVINO).
- segment: Segmenter(onnx, backend=runtime) labels of each image ("IMAGE_INDEX/labels").
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict

import numpy as np


def grouped(path: str) -> dict[str, dict[str, np.ndarray]]:
    cases: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    with np.load(path) as data:
        for key in data.files:
            case, feed = key.split("/", 1)
            cases[case][feed] = data[key]
    return dict(cases)


def graph_runner(path: str, runtime: str):
    if runtime == "onnxruntime":
        import onnxruntime as ort

        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return lambda feeds: dict(zip(names, session.run(None, feeds)))
    import openvino as ov

    import onnx

    names = [o.name for o in onnx.load(path, load_external_data=False).graph.output]
    compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})

    def run(feeds):
        result = compiled(feeds)  # an output may have several names: ours is the one the file declares
        return {name: np.asarray(result[compiled.output(name)]) for name in names}
    return run


def main(request_path: str) -> None:
    with open(request_path) as f:
        request = json.load(f)
    path, runtime, mode = request["onnx"], request["runtime"], request["mode"]
    out: dict[str, np.ndarray] = {}
    if mode == "segment":
        from mask2former.segmenter import Segmenter

        segmenter = Segmenter(path, backend=runtime)
        for i, image in enumerate(request["images"]):
            out[f"{i}/labels"] = np.asarray(segmenter(image).labels)
    elif mode == "backend":
        import torch

        from mask2former.runtime import load_backend

        backend = load_backend(path, runtime)
        for case, feeds in grouped(request["inputs"]).items():
            got = backend(pixel_values=torch.from_numpy(feeds["pixel_values"]))
            out[f"{case}/class_queries_logits"] = got.class_queries_logits.numpy()
            out[f"{case}/masks_queries_logits"] = got.masks_queries_logits.numpy()
    else:
        run = graph_runner(path, runtime)
        for case, feeds in grouped(request["inputs"]).items():
            for name, value in run(feeds).items():
                out[f"{case}/{name}"] = value
    np.savez(request["output"], **out)


if __name__ == "__main__":
    main(sys.argv[1])
