"""What ``segment`` reads: files, folders (recursive), glob patterns and ``--list`` files, as
one de-duplicated, deterministic stream of (input, output name) items.

* Streamed: folders are walked and lists read as the items are consumed; what is kept per
  item is two 8-byte hashes (resolved path, output name), for de-duplication.
* Outputs are never inputs: nothing under the output folder is read, and folder walks and
  globs skip files named like our own outputs (``*_labels.png``, ``*_overlay.png`` ...).
* Output names keep the inputs' folder structure relative to the folder given
  (``x/img.png``); a file named directly keeps its base name; a line of a list keeps its
  relative path when it has no ``..``, else its base name. Two inputs that would still share a name (``cat.jpg`` +
  ``cat.png``) get the extension appended (``cat_png``), then ``-1``, ``-2`` ...;
  ``OUT/manifest.jsonl`` records which input became which output.
"""
from __future__ import annotations

import atexit
import glob
import hashlib
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional, Sequence

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".gif")
OUTPUT_SUFFIXES = ("_labels.png", "_overlay.png", "_panoptic.png", "_overlay.mp4")
Report = Callable[[str], None]


@dataclass(frozen=True)
class InputItem:
    """One image to segment: ``index`` in the de-duplicated stream, ``stem`` the output name
    relative to the output folder, without suffix."""

    index: int
    path: str
    stem: str

    @property
    def key(self) -> int:
        return _hash(self.path + "\0" + self.stem)


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=8).digest(), "little")


def is_video(path: str) -> bool:
    return path.lower().endswith(VIDEO_EXTENSIONS)


def _is_image_name(name: str) -> bool:
    low = name.lower()
    return low.endswith(IMAGE_EXTENSIONS) and not low.endswith(OUTPUT_SUFFIXES) and not name.startswith(".tmp-")


def _inside(path: str, folder: Optional[str]) -> bool:
    if folder is None:
        return False
    real = os.path.realpath(path)
    return real == folder or real.startswith(folder + os.sep)


def _plain_stem(path: str) -> str:
    """A relative path without ``..`` keeps its folders; anything else its base name."""
    norm = os.path.normpath(path)
    if not os.path.isabs(norm) and not norm.startswith(".." + os.sep) and norm != "..":
        return os.path.splitext(norm)[0]
    return os.path.splitext(os.path.basename(norm))[0]


class InputStream:
    """Re-iterable: every pass yields the same items (each rank of a torchrun job walks
    the same stream and keeps its share). ``report`` receives one line per bad input;
    ``report_errors=False`` silences a pass (the other ranks, counting passes)."""

    def __init__(self, specs: Sequence[str], list_file: Optional[str] = None, out_dir: Optional[str] = None,
                 videos: bool = False):
        self.specs = list(specs)
        self.list_file = list_file
        self.out_dir = os.path.realpath(out_dir) if out_dir else None
        self.videos = videos  # whether video files are items too (else they are left to the video path)
        self._spool: Optional[str] = None  # where standard input's list is kept (--list -)

    def __iter__(self) -> Iterator[InputItem]:
        return self.items(lambda line: None)

    def items(self, report: Report) -> Iterator[InputItem]:
        seen_paths: set[int] = set()
        seen_stems: set[int] = set()
        index = 0
        for path, stem in self._raw(report):
            key = _hash(os.path.realpath(path))
            if key in seen_paths:  # the same file named twice is segmented once
                continue
            seen_paths.add(key)
            stem = _unique_stem(stem, path, seen_stems)
            yield InputItem(index, path, stem)
            index += 1

    def _raw(self, report: Report) -> Iterator[tuple[str, str]]:
        for spec in self.specs:
            yield from self._spec(spec, report, listed=False)
        if self.list_file is not None:
            yield from self._list(report)

    def _keep_file(self, path: str) -> bool:
        return not _inside(path, self.out_dir) and (self.videos or not is_video(path))

    def _spec(self, spec: str, report: Report, listed: bool) -> Iterator[tuple[str, str]]:
        if os.path.isdir(spec):
            count = 0
            for path, rel in self._walk(spec):
                count += 1
                yield path, os.path.splitext(rel)[0]
            if count == 0:
                report(f"{spec}: no images in this folder (looked for {', '.join(IMAGE_EXTENSIONS)})")
        elif os.path.exists(spec):
            if _inside(spec, self.out_dir):
                report(f"{spec}: is inside the output folder; outputs are never inputs")
            elif not self.videos and is_video(spec):
                report(f"{spec}: a video; name videos on the command line, not in --list")
            else:
                yield spec, _plain_stem(spec) if listed else os.path.splitext(os.path.basename(spec))[0]
        elif not listed and glob.has_magic(spec):
            matches = sorted(p for p in glob.glob(spec, recursive=True)
                             if os.path.isfile(p) and _is_image_name(os.path.basename(p)) and self._keep_file(p))
            if not matches:
                report(f"{spec}: no image matches this pattern")
            for p in matches:
                yield p, os.path.splitext(os.path.basename(p))[0]
        else:
            report(f"{spec}: no such file or folder")

    def _walk(self, folder: str) -> Iterator[tuple[str, str]]:
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not _inside(os.path.join(root, d), self.out_dir))
            for f in sorted(files):
                if _is_image_name(f):
                    path = os.path.join(root, f)
                    yield path, os.path.relpath(path, folder)

    def _list(self, report: Report) -> Iterator[tuple[str, str]]:
        """One path per line (blank lines and ``#`` comments skipped), read as it is consumed."""
        if self.list_file == "-":
            yield from self._lines(self._stdin_lines(), report)
            return
        try:
            f = open(self.list_file, encoding="utf-8", errors="surrogateescape")  # type: ignore[arg-type]
        except OSError as e:
            report(f"{self.list_file}: cannot read the list ({e.strerror or e})")
            return
        with f:
            yield from self._lines(f, report)

    def _stdin_lines(self) -> Iterator[str]:
        """Standard input can be read once; its lines go to a spool file as they are read, so
        every later pass (the run-level files) sees the same list, still never held in memory."""
        if self._spool is None:
            fd, self._spool = tempfile.mkstemp(prefix="mask2former-list-", suffix=".txt")
            os.close(fd)
            atexit.register(_remove_quietly, self._spool)
        with open(self._spool, encoding="utf-8", errors="surrogateescape") as f:
            yield from f
        with open(self._spool, "a", encoding="utf-8", errors="surrogateescape") as spool:
            for line in sys.stdin:
                spool.write(line if line.endswith("\n") else line + "\n")
                spool.flush()
                yield line

    def _lines(self, f: Iterable[str], report: Report) -> Iterator[tuple[str, str]]:
        for line in f:
            path = line.rstrip("\r\n").strip()
            if path and not path.startswith("#"):
                yield from self._spec(path, report, listed=True)


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _unique_stem(stem: str, path: str, seen: set[int]) -> str:
    """First come keeps the name; then ``name_ext``, then ``name_ext-1``, ``-2`` ..."""
    candidates = [stem]
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    if ext:
        candidates.append(f"{stem}_{ext}")
    for c in candidates:
        if _hash(c.lower()) not in seen:  # lower: case-insensitive file systems collide too
            seen.add(_hash(c.lower()))
            return c
    n = 1
    while _hash(f"{candidates[-1]}-{n}".lower()) in seen:
        n += 1
    name = f"{candidates[-1]}-{n}"
    seen.add(_hash(name.lower()))
    return name
