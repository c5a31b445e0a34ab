"""Where the time goes against the hardware's limit: achieved GFLOP/s per stage of our
network, per precision mode, against matrix-multiply peaks measured in the same run.

    python benchmarks/stages.py                                   # Swin-T 512x1024, fp32 bf16 int8
    python benchmarks/stages.py --arch swin-l --size 1024x2048 --modes fp32 bf16

Image file -> label map with ``Segmenter(precision=mode)`` (random-weight checkpoint written
by transformers); stage times come from forward hooks of the fastest of ``--repeats`` calls
(modes alternate), stage FLOPs from ``FlopCounterMode`` (matmuls and convolutions; the same
for every mode). Peaks: a 4096^3 float32 and bfloat16 matmul, best of 3, taken before and
after. Writes benchmarks/results/stages_ARCH_SIZE.json / .md (or --out).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import checkpoint, machine, machine_text, size_arg, write_results  # noqa: E402
from end_to_end import RESULTS, StageClock, build, make_images, matmul_peak_gflops  # noqa: E402

MODES = ("fp32", "bf16", "int8")


def stage_modules(net: Any) -> dict[str, Any]:
    """The hooked modules of our Swin network, in execution order."""
    mods = {"patch_embed": net.backbone.patch_embed}
    mods.update({f"swin_stage{i + 1}": stage for i, stage in enumerate(net.backbone.layers)})
    mods.update({"pixel_decoder": net.pixel_decoder, "transformer_decoder": net.transformer_decoder, "network": net})
    return mods


def stage_times(marks: dict[str, float], names: list[str], start: float, end: float) -> dict[str, float]:
    times = {"preprocess": marks["patch_embed.start"] - start}
    times.update({n: marks[f"{n}.end"] - marks[f"{n}.start"] for n in names if n != "network"})
    times["backbone other (norms, layouts)"] = (marks["swin_stage1.start"] - marks["patch_embed.end"]) + sum(
        marks[f"{b}.start"] - marks[f"{a}.end"] for a, b in zip(names[1:], names[2:5]))
    times["postprocess"] = end - marks["network.end"]
    return times


def stage_gflop(net: Any, size: tuple[int, int]) -> dict[str, float]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(pixel_values=torch.randn(1, 3, *size))
    counts = counter.get_flop_counts()
    out = {}
    for name, suffix in (("patch_embed", ".backbone.patch_embed"), ("pixel_decoder", ".pixel_decoder"),
                         ("transformer_decoder", ".transformer_decoder"),
                         *((f"swin_stage{i + 1}", f".backbone.layers.{i}") for i in range(4))):
        key = next((k for k in counts if k.endswith(suffix)), None)
        out[name] = sum(counts[key].values()) / 1e9 if key else 0.0
    return out


def main() -> None:
    import mask2former  # before torch: it sets the OpenMP wait policy the CLI and Segmenter users get
    del mask2former
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="swin-t", choices=["swin-t", "swin-l"])
    p.add_argument("--size", type=size_arg, default="512x1024")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    size = tuple(int(v) for v in a.size.split("x"))
    folder = checkpoint(a.arch)
    images = os.path.join(tempfile.gettempdir(), "m2f-bench-images")
    os.makedirs(images, exist_ok=True)
    paths = make_images(size, 1, images)
    peaks = {"fp32": matmul_peak_gflops(), "bf16": matmul_peak_gflops(dtype=torch.bfloat16)}
    runs = {}
    for mode in a.modes:
        run, net, _ = build("ours", folder, precision=mode)
        mods = stage_modules(net)
        runs[mode] = (run, net, StageClock(mods), list(mods))
        run(paths)  # warm-up
    best: dict[str, dict[str, float]] = {}
    for _ in range(a.repeats):
        for mode, (run, _, clock, names) in runs.items():
            start = time.perf_counter()
            run(paths)
            end = time.perf_counter()
            times = stage_times(clock.marks, names, start, end)
            times["total"] = end - start
            if mode not in best or times["total"] < best[mode]["total"]:
                best[mode] = times
    peaks = {k: max(v, matmul_peak_gflops(dtype=torch.float32 if k == "fp32" else torch.bfloat16))
             for k, v in peaks.items()}
    flops = stage_gflop(runs[a.modes[0]][1], size)
    info = machine()
    policy = os.environ.get("OMP_WAIT_POLICY", "libgomp's default (spin, then sleep)")
    rows = [{"arch": a.arch, "size": size, "mode": mode, "stages": best[mode], "gflop": flops, "peaks": peaks,
             "machine": info, "omp_wait_policy": policy} for mode in a.modes]
    lines = [f"{a.arch} {size[0]}x{size[1]}, image file -> label map, 1 image, {torch.get_num_threads()} threads, "
             f"OpenMP wait policy {policy}; {machine_text(info)}. Matmul peaks measured in this run: "
             f"fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s.", "",
             "| mode | stage | seconds | share | GFLOP | GFLOP/s | % of fp32 peak | % of bf16 peak |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        total = r["stages"]["total"]
        for stage, sec in r["stages"].items():
            g = flops.get(stage)
            rate = f"{g / sec:.0f} | {100 * g / sec / peaks['fp32']:.0f}% | {100 * g / sec / peaks['bf16']:.0f}%" \
                if g else "- | - | -"
            lines.append(f"| {r['mode']} | {stage} | {sec:.3f} | {100 * sec / total:.0f}% | "
                         f"{g if g else 0:.1f} | {rate} |")
    out = a.out or os.path.join(RESULTS, f"stages_{a.arch.replace('-', '_')}_{size[0]}x{size[1]}")
    write_results(out, rows, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
