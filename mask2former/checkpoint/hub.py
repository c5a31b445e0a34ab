"""Finding checkpoint files: a local folder, or a Hugging Face hub id (downloaded or cached)."""
from __future__ import annotations

import os
from typing import Any, Optional


# Keyword arguments of from_pretrained that say where to read files (huggingface_hub's names).
HUB_KWARGS = ("revision", "cache_dir", "local_files_only", "token", "force_download", "subfolder", "proxies")


class CheckpointNotFoundError(OSError):
    """Raised with one line that says what was looked for and what to do instead."""


def is_local(name_or_path: str | os.PathLike) -> bool:
    return os.path.isdir(name_or_path) or os.path.isfile(name_or_path)


def looks_like_path(name: str) -> bool:
    """True for names that are meant as local paths rather than hub ids ("owner/name"):
    ./x, ../x, /x, ~/x, Windows separators, more than one slash, or a first component that
    exists here (models/nonexist when ./models exists)."""
    if name.startswith(("./", "../", "/", "~", ".\\", "..\\")) or name in (".", ".."):
        return True
    if "\\" in name or (os.altsep and os.altsep in name) or name.count("/") > 1:
        return True
    head = name.split("/")[0]
    return "/" in name and os.path.isdir(head)


def _hub_reachable() -> bool:
    """False when offline mode is on or the hub's host name does not even resolve, so that a
    machine without network fails at once instead of after minutes of retries."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def resolve_file(
    name_or_path: str | os.PathLike, filename: str, optional: bool = False, **hub_kwargs: Any
) -> Optional[str]:
    """Path of ``filename`` in a local folder or in the hub repository ``name_or_path``.

    Hub files come from the local cache when present (``HF_HUB_OFFLINE=1`` forces that);
    otherwise they are downloaded. Missing with ``optional=True`` returns None.
    """
    name = os.fspath(name_or_path)
    subfolder = hub_kwargs.pop("subfolder", None) or ""
    hub_kwargs = {k: v for k, v in hub_kwargs.items() if v is not None}
    if subfolder:
        hub_kwargs["subfolder"] = subfolder
    if os.path.isdir(name):
        path = os.path.join(name, subfolder, filename)
        if os.path.isfile(path):
            return path
        if optional:
            return None
        raise CheckpointNotFoundError(f"{os.path.join(name, subfolder)}: no {filename} in this folder")
    if os.path.exists(name):
        raise CheckpointNotFoundError(f"{name}: expected a checkpoint folder or a .pkl file")
    if looks_like_path(name):
        raise CheckpointNotFoundError(f"{name}: no such file or folder{_nearest(name)}")
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError
    except ImportError as e:  # pragma: no cover - huggingface_hub is a dependency
        raise CheckpointNotFoundError(f"{name}: huggingface_hub is needed to load hub ids ({e})") from e
    try:
        try:  # the cache first: no network round trip when the file is already here
            return hf_hub_download(repo_id=name, filename=filename, **{**hub_kwargs, "local_files_only": True})
        except LocalEntryNotFoundError:
            if hub_kwargs.get("local_files_only") or not _hub_reachable():
                raise
        return hf_hub_download(repo_id=name, filename=filename, **hub_kwargs)
    except RepositoryNotFoundError:
        raise CheckpointNotFoundError(
            f"{name}: no such local path, and no such model on the hub (or it is private)"
        ) from None
    # LocalEntryNotFoundError subclasses EntryNotFoundError in recent huggingface_hub: test it first.
    except LocalEntryNotFoundError:
        if optional:
            # Optional files are not worth failing over when offline, once the required ones resolved.
            return None
        raise CheckpointNotFoundError(
            f"{name}: not a local folder and not in the hub cache, and the hub cannot be reached "
            f"(offline?). Download it where there is network (`hf download {name}`) and copy the "
            f"cache, or pass the path of a folder holding config.json and model.safetensors."
        ) from None
    except EntryNotFoundError:
        if optional:
            return None
        raise CheckpointNotFoundError(f"{name}: the hub repository has no {filename}") from None
    except Exception as e:  # network errors of every kind
        if optional:
            return None
        raise CheckpointNotFoundError(f"{name}: could not fetch {filename} from the hub: {e}") from None


def _nearest(name: str) -> str:
    """Where the path stops existing, to show which part is wrong."""
    parent = os.path.dirname(os.path.normpath(os.path.expanduser(name)))
    while parent and not os.path.isdir(parent):
        parent = os.path.dirname(parent)
    return f" ({parent} exists, {os.path.relpath(name, parent) if parent else name} does not)" if parent else ""
