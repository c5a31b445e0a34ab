"""Image file -> label map, ours vs transformers, same random-weight checkpoint, same images.

    python benchmarks/end_to_end.py                      # Swin-T and Swin-L, 512x1024, batch 1
    python benchmarks/end_to_end.py --archs swin-l --sizes 1024x2048 --batches 1 4
    python benchmarks/end_to_end.py --threads 1 --repeats 5 --no-memory
    python benchmarks/end_to_end.py --archs swin-l --sizes 1024x2048 --precision bf16   # ours in bf16

What is timed, per call, for each implementation:

* ours: ``Segmenter(task="semantic", precision=--precision)`` on the image paths: decode,
  processor, forward, semantic post-processing at the original size (the original's
  algorithm);
* transformers: PIL decode, its ``Mask2FormerImageProcessor``, its model, its
  ``post_process_semantic_segmentation(outputs, target_sizes=...)``.

Both processors keep the image size (no resize; sizes are multiples of 32), so both networks
see the same pixels. Timing runs both in one process, alternating, ``--repeats`` times; the
ratio uses each side's fastest call (the machine may be shared). Per-stage times come from
forward hooks (preprocessing = until the backbone starts; post-processing = after the
network returns). Peak memory, in fresh processes, two ways:

* whole process (the figure that matters: what ``/usr/bin/time -v`` or a container limit
  sees): a new interpreter loads the model from the folder and segments the images once;
  the parent reads the child's lifetime peak RSS (``wait4``'s ru_maxrss). ``--memory-repeats``
  runs per implementation, interleaved. "ours, lean allocator" is the same job with glibc's
  mmap threshold fixed at 2 MB and MKL's buffer cache off (environment variables, see
  docs/performance.md): less heap fragmentation, at a large cost in speed;
* above the loaded model: the kernel's peak-RSS count is reset after loading, then one call
  runs; reported is that peak minus the resident size after loading and touching every
  weight (so neither the loader's transient peak nor weights paged in lazily from a
  memory-mapped file count as inference).

The backbone's FLOPs are counted with FlopCounterMode and set against a large fp32 matmul
measured in the same run. ``--memory-only`` skips the timing (memory does not depend on the
machine's load; times do).

Writes benchmarks/results/end_to_end.json and .md (or --out). To measure an older checkout
of this package against the same transformers run (before/after), put it first on the path:
``PYTHONPATH=/path/to/old/checkout python benchmarks/end_to_end.py --out /tmp/before``.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (checkpoint, machine, peak_mb, rss_mb, run_isolated, run_isolated_peak, size_arg,  # noqa: E402
                    write_results)

STAGES = ("preprocess", "backbone", "pixel_decoder", "transformer_decoder", "postprocess")
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def make_images(size: tuple[int, int], count: int, folder: str) -> list[str]:
    """``count`` synthetic street scenes (distinct seeds) as PNG files."""
    import numpy as np
    from PIL import Image

    from mask2former.data.synthetic import render_scene

    paths = []
    for i in range(count):
        path = os.path.join(folder, f"scene-{size[0]}x{size[1]}-{i}.png")
        if not os.path.exists(path):
            image, _, _ = render_scene(np.random.default_rng(i), size)
            Image.fromarray(image).save(path)
        paths.append(path)
    return paths


class StageClock:
    """Timestamps from forward hooks: when each module starts and ends."""

    def __init__(self, modules: dict[str, Any]):
        self.marks: dict[str, float] = {}
        for name, module in modules.items():
            module.register_forward_pre_hook(lambda *a, n=name: self.marks.__setitem__(n + ".start", time.perf_counter()))
            module.register_forward_hook(lambda *a, n=name: self.marks.__setitem__(n + ".end", time.perf_counter()))

    def stages(self, start: float, end: float) -> dict[str, float]:
        m = self.marks
        return {"preprocess": m["backbone.start"] - start,
                "backbone": m["backbone.end"] - m["backbone.start"],
                "pixel_decoder": m["pixel_decoder.end"] - m["backbone.end"],
                "transformer_decoder": m["network.end"] - m["pixel_decoder.end"],
                "postprocess": end - m["network.end"]}


def build(impl: str, folder: str, precision: str = "fp32") -> tuple[Any, Any, Any]:
    """(callable paths -> label maps, the network, StageClock)."""
    import torch

    if impl == "ours":
        from mask2former.processor import Mask2FormerImageProcessor
        from mask2former.segmenter import Segmenter

        extra = dict(precision=precision, num_threads=torch.get_num_threads())
        known = inspect.signature(Segmenter).parameters  # an older checkout (before/after runs) has fewer
        # From the folder, as `segment` and `serve` load it: the Segmenter then owns the model
        # (int8 quantises it in place, bf16 stores its matmul weights in bf16).
        seg = Segmenter(folder, task="semantic", device="cpu", resize="config",
                        processor=Mask2FormerImageProcessor(do_resize=False),
                        **{k: v for k, v in extra.items() if k in known})
        net = seg.model
        clock = StageClock({"backbone": net.backbone, "pixel_decoder": net.pixel_decoder, "network": net})

        def run(paths: list[str]) -> list[Any]:
            return [r.labels for r in seg(paths, batch_size=len(paths))]

        return run, net, clock

    import transformers
    from PIL import Image

    transformers.logging.set_verbosity_error()
    model = transformers.Mask2FormerForUniversalSegmentation.from_pretrained(folder).eval()
    proc = transformers.Mask2FormerImageProcessor(do_resize=False)
    clock = StageClock({"backbone": model.model.pixel_level_module.encoder,
                        "pixel_decoder": model.model.pixel_level_module.decoder, "network": model})

    @torch.inference_mode()
    def run(paths: list[str]) -> list[Any]:
        images = [Image.open(p).convert("RGB") for p in paths]
        inputs = proc(images=images, return_tensors="pt")
        outputs = model(pixel_values=inputs["pixel_values"], pixel_mask=inputs["pixel_mask"])
        sizes = [(im.height, im.width) for im in images]
        return [m.numpy() for m in proc.post_process_semantic_segmentation(outputs, target_sizes=sizes)]

    return run, model, clock


def matmul_peak_gflops(n: int = 4096, repeats: int = 3, dtype: Any = None) -> float:
    """GFLOP/s of an n^3 matmul, best of ``repeats`` (float32 unless ``dtype``)."""
    import torch

    a, b = torch.randn(n, n).to(dtype or torch.float32), torch.randn(n, n).to(dtype or torch.float32)
    a @ b
    best = min(_seconds(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def backbone_gflop(net: Any, impl: str, size: tuple[int, int], batch: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(batch, 3, *size)
    backbone = net.backbone if impl == "ours" else net.model.pixel_level_module.encoder
    dtype = next(backbone.parameters()).dtype  # bf16 mode stores the matmul weights in bf16
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32), \
            FlopCounterMode(display=False) as counter:
        backbone(x)
    return counter.get_total_flops() / 1e9


def _seconds(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def time_both(args: dict[str, Any]) -> dict[str, Any]:
    """In one process: load both, warm up, alternate ``repeats`` timed calls."""
    import torch

    if args.get("threads"):
        torch.set_num_threads(args["threads"])
    paths = args["paths"]
    impls = {impl: build(impl, args["folder"], args.get("precision", "fp32")) for impl in ("transformers", "ours")}
    peak_before = matmul_peak_gflops()
    labels = {impl: run(paths) for impl, (run, _, _) in impls.items()}  # warm-up
    calls: dict[str, list[dict[str, float]]] = {impl: [] for impl in impls}
    for _ in range(args["repeats"]):
        for impl, (run, _, clock) in impls.items():
            start = time.perf_counter()
            run(paths)
            end = time.perf_counter()
            calls[impl].append({"total": end - start, **clock.stages(start, end)})
    out: dict[str, Any] = {"threads": torch.get_num_threads(),
                           "matmul_peak_gflops": max(peak_before, matmul_peak_gflops())}
    for impl, (_, net, _) in impls.items():
        best = min(calls[impl], key=lambda c: c["total"])
        flops = backbone_gflop(net, impl, tuple(args["size"]), len(paths))
        out[impl] = {"seconds": best["total"], "all_seconds": [c["total"] for c in calls[impl]],
                     "stages": {s: best[s] for s in STAGES}, "backbone_gflop": flops,
                     "backbone_gflops_per_s": flops / best["backbone"]}
    import numpy as np

    out["labels_equal_fraction_vs_transformers"] = float(np.mean([(a == b).mean() for a, b in
                                                                  zip(labels["ours"], labels["transformers"])]))
    return out


def reset_peak_rss() -> bool:
    """Restart the kernel's peak-RSS count (VmHWM) here, so that loading the checkpoint (whose
    transient peak can exceed a whole inference) is not counted. Linux >= 4.0."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def vm_hwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


LEAN_ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": str(2 * 2**20), "MKL_DISABLE_FAST_MM": "1"}


def process_job(args: dict[str, Any]) -> dict[str, Any]:
    """The whole job in this fresh process: load from the folder, segment once. The parent
    measures the peak (see :func:`whole_process_peaks`)."""
    import torch

    if args.get("threads"):
        torch.set_num_threads(args["threads"])
    run, _, _ = build(args["impl"], args["folder"], args.get("precision", "fp32"))
    run(args["paths"])
    return {}


def whole_process_peaks(job: dict[str, Any], repeats: int) -> dict[str, Any]:
    """Lifetime peak RSS (MB) of fresh processes doing the whole job, per implementation."""
    configs = [("transformers", "transformers", None), ("ours", "ours", None),
               ("ours_lean_allocator", "ours", LEAN_ALLOCATOR)]
    peaks: dict[str, list[float]] = {name: [] for name, _, _ in configs}
    for _ in range(repeats):  # interleaved
        for name, impl, env in configs:
            peaks[name].append(run_isolated_peak(__file__, dict(job, mode="process", impl=impl), env))
    out: dict[str, Any] = {name: {"peak_mb": max(v), "all_peak_mb": v} for name, v in peaks.items()}
    out["ratio"] = out["ours"]["peak_mb"] / out["transformers"]["peak_mb"]
    out["lean_ratio"] = out["ours_lean_allocator"]["peak_mb"] / out["transformers"]["peak_mb"]
    out["lean_allocator_env"] = LEAN_ALLOCATOR
    return out


def memory_one(args: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: peak resident memory of the first call, above the loaded model."""
    import torch

    if args.get("threads"):
        torch.set_num_threads(args["threads"])
    run, net, _ = build(args["impl"], args["folder"], args.get("precision", "fp32"))
    with torch.no_grad():  # page in weights that are memory-mapped from the checkpoint file
        for t in list(net.parameters()) + list(net.buffers()):
            t.sum()
    base = rss_mb()
    if reset_peak_rss():
        run(args["paths"])
        peak, how = vm_hwm_mb(), "VmHWM reset after loading"
    else:  # the lifetime peak, loading included: an upper bound
        run(args["paths"])
        peak, how = peak_mb(), "ru_maxrss (includes loading)"
    # (The lifetime peak of this process is not reported: the reset above erased it. See
    # whole_process_peaks.)
    return {"peak_above_loaded_mb": peak - base, "peak_mb": peak, "loaded_mb": base, "method": how}


def memory_markdown(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["Whole-process peak RSS (load from the folder + segment, fresh process, max of "
             "the repeats; MB):", "",
             "| arch | size | batch | ours precision | ours | transformers | **ours / transformers** | ours, lean allocator | lean / transformers |"
             " above loaded: ours | transformers | ratio |", "|" + "---|" * 12]
    for r in rows:
        p, mem = r["process"], r.get("memory") or {}
        above = (f"{mem['ours']['peak_above_loaded_mb']:.0f} | {mem['transformers']['peak_above_loaded_mb']:.0f} | "
                 f"{r['memory_ratio']:.2f} |" if mem else "- | - | - |")
        lines.append(f"| {r['arch']} | {r['size'][0]}x{r['size'][1]} | {r['batch']} | {r.get('precision', 'fp32')} | "
                     f"{p['ours']['peak_mb']:.0f} | "
                     f"{p['transformers']['peak_mb']:.0f} | **{p['ratio']:.2f}** | {p['ours_lean_allocator']['peak_mb']:.0f} | "
                     f"{p['lean_ratio']:.2f} | " + above)
    return lines + [""]


def markdown(rows: list[dict[str, Any]]) -> str:
    head = memory_markdown([r for r in rows if "process" in r]) if any("process" in r for r in rows) else []
    rows = [r for r in rows if "ours" in r]
    if not rows:
        return "\n".join(head)
    lines = head + ["| arch | size | batch | threads | ours precision | ours s | transformers s (fp32) | time ratio | "
                    "ours peak MB | transformers peak MB | memory ratio |", "|" + "---|" * 11]
    for r in rows:
        mem = r.get("memory") or {}
        lines.append(f"| {r['arch']} | {r['size'][0]}x{r['size'][1]} | {r['batch']} | {r['threads']} | "
                     f"{r.get('precision', 'fp32')} | {r['ours']['seconds']:.2f} | {r['transformers']['seconds']:.2f} | **{r['time_ratio']:.2f}** | "
                     + (f"{mem['ours']['peak_above_loaded_mb']:.0f} | {mem['transformers']['peak_above_loaded_mb']:.0f} | "
                        f"**{r['memory_ratio']:.2f}** |" if mem else "- | - | - |"))
    lines += ["", "Per stage (seconds, fastest call; transformers' \"transformer decoder\" includes its heads):", "",
              "| arch | size | batch | impl | " + " | ".join(STAGES) + " | backbone GFLOP/s (matmul peak) |",
              "|" + "---|" * (len(STAGES) + 5)]
    for r in rows:
        for impl in ("ours", "transformers"):
            st = r[impl]["stages"]
            lines.append(f"| {r['arch']} | {r['size'][0]}x{r['size'][1]} | {r['batch']} | {impl} | "
                         + " | ".join(f"{st[s]:.3f}" for s in STAGES)
                         + f" | {r[impl]['backbone_gflops_per_s']:.0f} ({r['matmul_peak_gflops']:.0f}) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    from mask2former.precision import PRECISIONS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", nargs="+", default=["swin-t", "swin-l"], choices=["swin-t", "swin-l"])
    p.add_argument("--sizes", nargs="+", type=size_arg, default=["512x1024"], help="HxW, multiples of 32")
    p.add_argument("--batches", nargs="+", type=int, default=[1])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    p.add_argument("--no-memory", action="store_true", help="skip the isolated peak-memory runs")
    p.add_argument("--memory-only", action="store_true", help="only the peak-memory runs (no timing)")
    p.add_argument("--memory-repeats", type=int, default=2, help="whole-process runs per implementation")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="our side's precision (transformers always runs its fp32)")
    p.add_argument("--out", default=os.path.join(RESULTS, "end_to_end"), help="output path without extension")
    a = p.parse_args()
    images = os.path.join(tempfile.gettempdir(), "m2f-bench-images")
    os.makedirs(images, exist_ok=True)
    rows = []
    for arch in a.archs:
        folder = checkpoint(arch)
        for size_text in a.sizes:
            size = [int(v) for v in size_text.lower().split("x")]
            for batch in a.batches:
                paths = make_images(tuple(size), batch, images)
                job = dict(folder=folder, paths=paths, size=size, repeats=a.repeats, threads=a.threads,
                           precision=a.precision)
                row = dict(arch=arch, size=size, batch=batch, machine=machine(), precision=a.precision)
                if not a.memory_only:
                    res = run_isolated(__file__, dict(job, mode="time"))
                    row.update(res, time_ratio=res["ours"]["seconds"] / res["transformers"]["seconds"])
                    print(f"{arch} {size[0]}x{size[1]} b{batch} ({res['threads']} threads): time ours {a.precision}/transformers = "
                          f"{row['time_ratio']:.2f} ({res['ours']['seconds']:.2f}s / {res['transformers']['seconds']:.2f}s)",
                          flush=True)
                if not a.no_memory:
                    row["process"] = whole_process_peaks(job, a.memory_repeats)
                    row["memory"] = {impl: run_isolated(__file__, dict(job, mode="memory", impl=impl))
                                     for impl in ("transformers", "ours")}
                    row["memory_ratio"] = (row["memory"]["ours"]["peak_above_loaded_mb"]
                                           / max(row["memory"]["transformers"]["peak_above_loaded_mb"], 1e-9))
                    p = row["process"]
                    print(f"{arch} {size[0]}x{size[1]} b{batch}: whole-process peak ours / transformers = "
                          f"{p['ratio']:.2f} ({p['ours']['peak_mb']:.0f} / {p['transformers']['peak_mb']:.0f} MB; "
                          f"lean allocator {p['lean_ratio']:.2f}), above the loaded model {row['memory_ratio']:.2f}",
                          flush=True)
                rows.append(row)
    write_results(a.out, rows, markdown(rows))


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1].startswith("{"):
        job = json.loads(sys.argv[1])
        modes = {"time": time_both, "memory": memory_one, "process": process_job}
        print(json.dumps(modes[job["mode"]](job)))
    else:
        main()
