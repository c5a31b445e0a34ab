"""Image file -> label map through every runtime, against transformers in the same run.

    python benchmarks/export.py --archs swin-t --sizes 512x1024          # one cell (what CI-size machines take)
    python benchmarks/export.py                                          # Swin-T and Swin-L, 512x1024 and 1024x2048
    python benchmarks/export.py --impls transformers torch-fp32 openvino-bf16 --repeats 5

Implementations (all semantic post-processing at the image size, no resize, same images):

* transformers: its processor, model and ``post_process_semantic_segmentation``;
* torch-fp32 / torch-bf16 / torch-int8: ``Segmenter`` with our precision modes;
* onnxruntime / openvino (fp32) / openvino-bf16: ``Segmenter`` over the exported .onnx.

Per architecture, the export itself is timed and the file size reported. Timing alternates
the implementations ``--repeats`` times in one process and keeps each one's fastest call (the
machine may be shared); labels are compared with torch-fp32's. Writes
benchmarks/results/export.json and .md (or --out).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import checkpoint, write_results  # noqa: E402
from end_to_end import build, make_images  # noqa: E402

IMPLS = ("transformers", "torch-fp32", "torch-bf16", "torch-int8", "onnxruntime", "openvino", "openvino-bf16")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def runner(impl: str, folder: str, onnx_path: str, threads: int) -> Callable[[list[str]], list[Any]]:
    """paths -> label maps for one implementation."""
    if impl == "transformers":
        return build("transformers", folder)[0]
    from mask2former.processor import Mask2FormerImageProcessor
    from mask2former.segmenter import Segmenter

    kind, _, precision = impl.partition("-")
    backend = "torch" if kind == "torch" else kind
    model = folder if backend == "torch" else onnx_path
    seg = Segmenter(model, task="semantic", device="cpu", resize="config", backend=backend,
                    processor=Mask2FormerImageProcessor(do_resize=False), precision=precision or "fp32",
                    num_threads=threads)
    if seg.precision.message:
        print(f"{impl}: {seg.precision.message}", file=sys.stderr)
    return lambda paths: [r.labels for r in seg(paths, batch_size=len(paths))]


def bench_arch(arch: str, sizes: list[tuple[int, int]], impls: list[str], repeats: int, threads: int,
               work: str) -> list[dict[str, Any]]:
    import numpy as np

    from mask2former.export import export_onnx

    folder = checkpoint(arch)
    onnx_path = os.path.join(work, f"{arch}.onnx")
    report = export_onnx(folder, onnx_path)
    runs = {impl: runner(impl, folder, onnx_path, threads) for impl in impls}
    rows = []
    for size in sizes:
        paths = make_images(size, 1, work)
        labels = {impl: run(paths) for impl, run in runs.items()}  # warm-up (OpenVINO compiles per size)
        best = {impl: float("inf") for impl in impls}
        for _ in range(repeats):
            for impl, run in runs.items():
                t = time.perf_counter()
                run(paths)
                best[impl] = min(best[impl], time.perf_counter() - t)
        ref = labels.get("torch-fp32", labels[impls[0]])
        for impl in impls:
            rows.append(dict(arch=arch, size=f"{size[0]}x{size[1]}", impl=impl, seconds=best[impl],
                             vs_transformers=best.get("transformers", float("nan")) / best[impl],
                             labels_equal_to_torch_fp32=float(np.mean([(a == b).mean() for a, b in
                                                                       zip(labels[impl], ref)])),
                             export_s=report.seconds, onnx_mib=report.bytes / 2**20))
    return rows


def table(rows: list[dict[str, Any]], threads: int) -> str:
    lines = [f"Image -> label map, batch 1, {threads} threads; speed-up = transformers time / this time "
             "(best of the repeats).", "",
             "| arch | size | runtime | s/image | speed-up vs transformers | labels = torch fp32 | export s | .onnx MiB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['arch']} | {r['size']} | {r['impl']} | {r['seconds']:.3f} | {r['vs_transformers']:.2f}x "
                     f"| {100 * r['labels_equal_to_torch_fp32']:.3f} % | {r['export_s']:.0f} | {r['onnx_mib']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", nargs="+", default=["swin-t", "swin-l"], choices=["swin-t", "swin-l"])
    p.add_argument("--sizes", nargs="+", default=["512x1024", "1024x2048"])
    p.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's default)")
    p.add_argument("--out", default=os.path.join(RESULTS, "export"))
    args = p.parse_args()
    import torch

    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    rows = []
    with tempfile.TemporaryDirectory(prefix="m2f-export-bench-") as work:
        for arch in args.archs:
            rows += bench_arch(arch, sizes, args.impls, args.repeats, threads, work)
    write_results(args.out, rows, table(rows, threads))


if __name__ == "__main__":
    main()
