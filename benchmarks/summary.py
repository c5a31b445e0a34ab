"""One markdown table of every end-to-end result on file (the README's performance table).

    python benchmarks/summary.py [benchmarks/results/end_to_end*.json ...]

Reads the JSON rows ``end_to_end.py`` wrote (default: every ``end_to_end*.json`` in
benchmarks/results except the before/after and 1-thread variants) and prints one line per
(machine, architecture, size, batch, our precision), sorted: a later file replaces an
earlier row of the same key, rows of another machine stand beside it. Ratios are ours / transformers measured in the same run.
"""
from __future__ import annotations

import glob
import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine_text  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def rows_from(paths: list[str]) -> list[dict[str, Any]]:
    rows = {}
    for path in paths:
        with open(path) as f:
            for r in json.load(f):
                key = (r["arch"], tuple(r["size"]), r["batch"], r.get("precision", "fp32"), machine_text(r.get("machine")))
                if "ours" not in r:  # a --memory-only run: joins the time row of its own machine, else any
                    key = key if key in rows else next((k for k in rows if k[:4] == key[:4]), key)
                    if key in rows:
                        rows[key] = {**rows[key], **{k: v for k, v in r.items() if k != "machine"},
                                     "memory_machine": r.get("machine")}
                        continue
                rows[key] = r  # a later file replaces an earlier one

    def order(k: tuple) -> tuple:  # AMX machines first (the class the targets name), then machine, model, size
        amx = bool((rows[k].get("machine") or {}).get("amx"))
        return (not amx, k[4], k[0] != "swin-t", k[1][0] * k[1][1], k[2], k[3] != "fp32", k[3])

    return [rows[k] for k in sorted(rows, key=order)]


def where(row: dict[str, Any]) -> str:
    """The machine of the row; both when its memory figures come from another run's machine."""
    text = machine_text(row.get("machine"))
    if "memory_machine" in row and row["memory_machine"] != row.get("machine"):
        text = f"time: {text}; memory: {machine_text(row['memory_machine'])}"
    return text


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | input | batch | ours in | time ours / transformers fp32 | peak memory above the loaded model, ours / "
             "transformers | whole-process peak, ours / transformers | labels equal | machine |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        name = {"swin-t": "Swin-T", "swin-l": "Swin-L"}.get(r["arch"], r["arch"])
        memory = "-"  # runs with --no-memory
        if r.get("memory_ratio") is not None:
            ours, ref = (r["memory"][k]["peak_above_loaded_mb"] for k in ("ours", "transformers"))
            memory = f"**{r['memory_ratio']:.2f}** ({ours:.0f} MB / {ref:.0f} MB)"
        process = "not measured"
        if r.get("process"):  # fresh processes, the child's ru_maxrss (end_to_end.whole_process_peaks)
            p = r["process"]
            process = f"**{p['ratio']:.2f}** ({p['ours']['peak_mb']:.0f} MB / {p['transformers']['peak_mb']:.0f} MB)"
        time = "-"  # a --memory-only row
        if "ours" in r:
            time = (f"**{r['time_ratio']:.2f}** ({r['ours']['seconds']:.1f} s / "
                    f"{r['transformers']['seconds']:.1f} s)")
        labels = r.get("labels_equal_fraction_vs_transformers")
        labels = "-" if labels is None else f"{100 * labels:.3f}%"
        lines.append(f"| {name} | {r['size'][0]}x{r['size'][1]} | {r['batch']} | {r.get('precision', 'fp32')} | {time} | {memory} | {process} "
                     f"| {labels} | {where(r)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    paths = sys.argv[1:] or sorted(p for p in glob.glob(os.path.join(RESULTS, "end_to_end*.json"))
                                   if not p.endswith(("_before.json", "_1thread.json")))
    print(table(rows_from(paths)), end="")


if __name__ == "__main__":
    main()
