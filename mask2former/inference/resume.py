"""Resumable runs: an append-only journal per process of the images it finished.

Every file of an image is written to a temporary name and renamed; only then is the image's
line appended to ``OUT/.mask2former/done-RUN-rankR.jsonl``. So a process killed at any moment
leaves complete files under their final names, a stray ``.tmp-*`` at most (removed by the
next run), and a journal whose last line may be torn (ignored when read). A rerun skips the
images the journals name whose files all exist and segments the rest; ``--overwrite`` starts
from an empty journal. Rank 0 builds the run-level files from the journals, so they are the
same whatever the number of processes, their order, or how many runs it took.
"""
from __future__ import annotations

import json
import os
import shutil
import threading
from typing import Any, Iterator, Optional

JOURNAL_DIR = ".mask2former"


def journal_dir(out: str) -> str:
    return os.path.join(out, JOURNAL_DIR)


def reset(out: str) -> None:
    shutil.rmtree(journal_dir(out), ignore_errors=True)


def remove_stale_temporaries(out: str) -> int:
    """Delete ``.tmp-*`` files a killed run left behind, video chunks in the journal folder
    included (none is being written: call before any process starts writing)."""
    removed = 0
    for root, dirs, files in os.walk(out):
        for f in files:
            if f.startswith(".tmp-"):
                try:
                    os.unlink(os.path.join(root, f))
                    removed += 1
                except OSError:
                    pass
    return removed


class Journal:
    """This process's journal of one run: finished images and failures, one JSON line each."""

    def __init__(self, out: str, run_id: str, rank: int):
        folder = journal_dir(out)
        os.makedirs(folder, exist_ok=True)
        self.done_path = os.path.join(folder, f"done-{run_id}-rank{rank}.jsonl")
        self.error_path = os.path.join(folder, f"errors-{run_id}-rank{rank}.jsonl")
        self._lock = threading.Lock()
        self._done = open(self.done_path, "a", encoding="utf-8")
        self._errors = open(self.error_path, "a", encoding="utf-8")

    def done(self, record: dict[str, Any]) -> None:
        self._append(self._done, record)

    def failed(self, path: str, error: str, index: Optional[int] = None) -> None:
        self._append(self._errors, {"i": index, "path": path, "error": error})

    def _append(self, f: Any, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:  # one write per line: a kill tears at most the last one
            f.write(line)
            f.flush()

    def close(self) -> None:
        self._done.close()
        self._errors.close()


def _records(path: str) -> Iterator[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    yield json.loads(line)
                except ValueError:  # a torn last line of a killed run
                    continue
    except OSError:
        return


def journal_files(out: str, prefix: str, run_id: Optional[str] = None) -> list[str]:
    folder = journal_dir(out)
    if not os.path.isdir(folder):
        return []
    head = f"{prefix}-{run_id}-" if run_id else f"{prefix}-"
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.startswith(head))


def finished_keys(out: str) -> set[int]:
    """Keys of every image some run of this output folder finished."""
    return {r["key"] for path in journal_files(out, "done") for r in _records(path) if "key" in r}


def finished_records(out: str) -> dict[int, dict[str, Any]]:
    """The last record of every finished image, by key."""
    records: dict[int, dict[str, Any]] = {}
    for path in sorted(journal_files(out, "done"), key=os.path.getmtime):
        for r in _records(path):
            if "key" in r:
                records[r["key"]] = r
    return records


def run_errors(out: str, run_id: str) -> list[dict[str, Any]]:
    errors = [r for path in journal_files(out, "errors", run_id) for r in _records(path)]
    return sorted(errors, key=lambda r: (r["i"] is not None, r["i"] if r["i"] is not None else 0))


class LineCounter:
    """Follows the journal files of one run as they grow (the progress bar's global counts
    under torchrun: every process appends, rank 0 reads)."""

    def __init__(self, out: str, run_id: str):
        self.out, self.run_id = out, run_id
        self._offsets: dict[str, int] = {}
        self.counts = {"done": 0, "failed_images": 0, "failed_inputs": 0}

    def _new_lines(self, path: str) -> bytes:
        try:
            with open(path, "rb") as f:
                f.seek(self._offsets.get(path, 0))
                chunk = f.read()
        except OSError:
            return b""
        complete = chunk[:chunk.rfind(b"\n") + 1]  # a line being written counts once whole
        self._offsets[path] = self._offsets.get(path, 0) + len(complete)
        return complete

    def poll(self) -> tuple[dict[str, int], list[str]]:
        """(counts so far, error messages new since the last poll)."""
        for path in journal_files(self.out, "done", self.run_id):
            self.counts["done"] += self._new_lines(path).count(b"\n")
        messages = []
        for path in journal_files(self.out, "errors", self.run_id):
            for line in self._new_lines(path).splitlines():
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                self.counts["failed_images" if r.get("i") is not None else "failed_inputs"] += 1
                messages.append(r["error"])
        return dict(self.counts), messages
