"""Inference at scale for ``mask2former segment``: input streams (``inputs``), the overlapped
decode -> forward -> write pipeline (``pipeline``), per-image files (``writer``), resumable
journals (``resume``), run-level files (``summary``), memory checks (``memory``) and videos
(``video``, resumable in chunks: ``video_chunks``). See docs/segment.md."""
