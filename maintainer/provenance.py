"""What every maintainer record begins with: what it measured, the command, the code and the machine."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import torch

from pagdemo.records.provenance import cpu_name, git_commit, now


def command_line(script: str) -> str:
    """How the record's script was run: `python -m maintainer.<script> ARGS`, from the repository root."""
    return " ".join(["python", "-m", f"maintainer.{Path(script).stem}", *sys.argv[1:]])


def record_header(doc: str, script: str) -> dict:
    """A record's first fields: its script's summary, command, commit (dirty or not), date, machine, torch."""
    return {
        "about": doc.split("\n\n")[0],
        "command": command_line(script),
        "commit": git_commit(),
        "date": now(),
        "machine": f"{cpu_name()}, {torch.get_num_threads()} threads, {platform.system()}",
        "torch": torch.__version__,
    }
