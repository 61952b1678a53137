"""Where a number came from: the commit, the time, the machine. Every record carries these."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import subprocess
from pathlib import Path

import torch


def _git(*args: str) -> str:
    """A git command's output, run where the package lives."""
    here = Path(__file__).resolve().parent
    return subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, check=True).stdout.strip()


def git_commit() -> str:
    """The commit that produced a run, with '-dirty' when the tree had uncommitted changes; $PAGDEMO_COMMIT
    where the code runs from a copy without .git (a rented GPU machine)."""
    if os.environ.get("PAGDEMO_COMMIT"):
        return os.environ["PAGDEMO_COMMIT"]
    try:
        sha = _git("rev-parse", "HEAD")
        return sha + ("-dirty" if _git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def now() -> str:
    """UTC timestamp for logs and metrics."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def cpu_name() -> str:
    """The CPU's model name, since CPU timings and floating-point results depend on it."""
    try:
        with open("/proc/cpuinfo") as f:
            return re.search(r"model name\s*:\s*(.*)", f.read()).group(1)
    except (OSError, AttributeError):
        return platform.processor() or "unknown"


def device_name(device: torch.device) -> str:
    """The GPU's name, or 'cpu': what a training run records as its device."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
