"""Shared pieces of the benchmarks: random-weight checkpoints written by transformers, and
measurement of one implementation in a fresh process so peak memory is its own."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

ARCHS: dict[str, dict[str, Any]] = {
    "swin-t": dict(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7),
    "swin-l": dict(embed_dim=192, depths=[2, 2, 18, 2], num_heads=[6, 12, 24, 48], window_size=12, image_size=384),
}


def size_arg(text: str) -> str:
    """argparse type for HxW (multiples of 32), e.g. 512x1024, returned as "HxW": a bad value
    is a usage error instead of a traceback."""
    import argparse

    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not HxW, e.g. 512x1024") from None
    if h <= 0 or w <= 0 or h % 32 or w % 32:
        raise argparse.ArgumentTypeError(f"{text!r}: height and width must be positive multiples of 32")
    return f"{h}x{w}"


def checkpoint(arch: str, num_labels: int = 19) -> str:
    """A transformers-written random-weight folder for ``arch`` (cached between runs)."""
    folder = os.path.join(tempfile.gettempdir(), f"m2f-bench-{arch}-{num_labels}")
    if not os.path.exists(os.path.join(folder, "model.safetensors")):
        import torch
        import transformers

        torch.manual_seed(0)
        bb = transformers.SwinConfig(out_features=["stage1", "stage2", "stage3", "stage4"], **ARCHS[arch])
        cfg = transformers.Mask2FormerConfig(backbone_config=bb, num_labels=num_labels)
        transformers.Mask2FormerForUniversalSegmentation(cfg).save_pretrained(folder)
    return folder


def machine() -> dict[str, Any]:
    """What a figure was measured on: CPU model, AMX or not, cores (and the GPU, if any)."""
    model, flags, ids = "unknown CPU", set(), {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = (part.strip() for part in line.partition(":"))
                if key == "model name" and model == "unknown CPU":
                    model = value
                elif key == "flags" and not flags:
                    flags = set(value.split())
                elif key in ("cpu family", "model") and key not in ids and value.isdigit():
                    ids[key] = int(value)
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": model, "amx": "amx_bf16" in flags, "avx512_bf16": "avx512_bf16" in flags,
                            "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()}
    if ids:  # virtual machines often name the CPU only "AMD EPYC": the family tells Zen 4 from Zen 5
        info["family"], info["model"] = ids.get("cpu family"), ids.get("model")
    return info


def generation(info: dict[str, Any]) -> str | None:
    """The core generation by CPUID family/model, where we know it (they differ in AVX-512 width)."""
    if info.get("generation"):  # rows from before the family was recorded carry it from their run's notes
        return info["generation"]
    family, model = info.get("family"), info.get("model")
    if "AMD" in info.get("cpu", "") and family == 25 and model is not None:  # family 19h: Zen 3 and Zen 4
        zen4 = 0x10 <= model <= 0x1F or 0x60 <= model <= 0x7F or 0xA0 <= model <= 0xAF
        return "Zen 4" if zen4 else "Zen 3"
    if "AMD" in info.get("cpu", "") and family == 26:
        return "Zen 5"
    intel = {143: "Sapphire Rapids", 207: "Emerald Rapids", 173: "Granite Rapids"}
    return intel.get(model) if "Intel" in info.get("cpu", "") and family == 6 else None


def machine_text(info: dict[str, Any] | None) -> str:
    if not info:
        return "not recorded (AVX-512, no AMX, 2 cores, per the notes of that run)"
    isa = "AMX" if info.get("amx") else ("AVX512-BF16, no AMX" if info.get("avx512_bf16") else "no AMX")
    gen = generation(info)
    cpu = f"{info['cpu']} ({gen})" if gen and gen not in info["cpu"] else info["cpu"]
    return f"{cpu}, {isa}, {info['cores']} cores"


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(script: str, args: dict[str, Any], env: dict[str, str] | None = None) -> tuple[int, str, str, float]:
    """Run ``script`` with JSON args in a new interpreter: (exit code, stdout, stderr tail, the
    child's lifetime peak resident size in MB). The peak is what the kernel reports to the parent
    (``wait4``'s ru_maxrss: what ``/usr/bin/time -v`` shows and what a container limit must
    allow). A child killed by a signal (the OOM killer) gives a negative exit code."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, script, json.dumps(args)], stdout=out, stderr=err,
                                env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        out.seek(0)
        err.seek(0)
        return (proc.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace")[-3000:],
                usage.ru_maxrss / 1024)


def run_isolated(script: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run ``script`` (a module path) in a new interpreter with JSON args; it prints JSON."""
    code, out, err, _ = run_child(script, args)
    if code != 0:
        raise RuntimeError(err)
    return json.loads(out.strip().splitlines()[-1])


def run_isolated_peak(script: str, args: dict[str, Any], env: dict[str, str] | None = None) -> float:
    """Run ``script`` with JSON args in a new interpreter and return the child's peak resident
    size in MB (see :func:`run_child`)."""
    code, _, err, peak = run_child(script, args, env)
    if code != 0:
        raise RuntimeError(err)
    return peak


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Markdown table lines."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def write_results(out: str, rows: list[dict[str, Any]], table: str) -> None:
    """``out``.json (raw rows) and ``out``.md (the table), and the table on stdout."""
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out + ".json", "w") as f:
        json.dump(rows, f, indent=1)
    with open(out + ".md", "w") as f:
        f.write(table)
    print(table)


def ratio_row(res: dict[str, dict[str, float]], **meta: Any) -> dict[str, Any]:
    """One result row from the isolated measurements of "ours" and "transformers"."""
    ours, ref = res["ours"], res["transformers"]
    return dict(meta, ours_s=ours["seconds"], transformers_s=ref["seconds"],
                time_ratio=ours["seconds"] / ref["seconds"], ours_peak_mb=ours["peak_mb"],
                transformers_peak_mb=ref["peak_mb"], memory_ratio=ours["peak_mb"] / max(ref["peak_mb"], 1e-9))
