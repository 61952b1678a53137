"""Atomic text and JSON files (every record pagdemo writes: configs, metrics, audits, logs goes through
here), and the SHA-256 checks that keep a partly copied data file from training silently."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


class RecordError(ValueError):
    """A record file that exists but cannot be read; the message names the file."""


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write through a temporary file and rename, so a kill never leaves half a file; makes the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json(path: str | Path, obj: Any) -> None:
    """Pretty, atomic JSON, so a human can read a record with `cat`."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path, default: Any = None) -> Any:
    """Read a JSON file (`default` when it is missing), turning a corrupt one into a clear RecordError."""
    path = Path(path)
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RecordError(f"{path} is not valid JSON ({e})") from None


def read_jsonl(path: str | Path) -> list[dict]:
    """One JSON object per line (training logs); a missing file is an empty log."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def sha256(path: str | Path) -> str:
    """A file's SHA-256, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_sha256sums(path: str | Path) -> dict[str, str]:
    """A `sha256sum` listing (SHA256SUMS): file name -> expected hex digest."""
    lines = Path(path).read_text().splitlines()
    return {ln.split()[1].lstrip("*"): ln.split()[0] for ln in lines if ln.strip()}
