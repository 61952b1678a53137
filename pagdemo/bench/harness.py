"""Timing and memory. torch.utils.benchmark gives the clock and the statistics; what its `Timer` lacks is
here: cases timed in turn, one run each per round (so that load from other processes hits them alike), each
run's peak memory (RSS or CUDA) and CPU share, and a case that fails kept apart from the rest."""

from __future__ import annotations

import ctypes
import re
import time
from collections.abc import Callable
from contextlib import nullcontext, suppress
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from pagdemo.bench import BenchConfig


def _sync(device: torch.device) -> None:
    """Wait for the GPU, so a timing covers the work and not only its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device):
    """bf16 autocast on CUDA, as in training; full fp32 on CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def _peak_rss_mb() -> float | None:
    """The process's peak RSS (VmHWM) since its last reset, in MiB (Linux only)."""
    try:
        with open("/proc/self/status") as f:
            return round(int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) / 1024, 1)
    except (OSError, AttributeError):
        return None


def _reset_peak_rss() -> bool:
    """Return freed heap to the OS (glibc), then reset the process's peak RSS (Linux >= 4.0)."""
    with suppress(OSError, AttributeError):  # else memory freed by earlier cases still counts
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
        return True
    return False


def memory_method(device: torch.device) -> str:
    """What `peak_mem_mb` means on this device."""
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated per run (max over runs)"
    if _reset_peak_rss() and _peak_rss_mb() is not None:
        return (
            "process peak RSS per run (VmHWM, reset via /proc/self/clear_refs after malloc_trim; max over "
            "runs); includes torch itself (~0.3-0.5 GB) and the shared model and optimizer"
        )
    return "unavailable on this OS"


def measure(fn: Callable[[], object], device: torch.device) -> tuple[float, float, float | None, object]:
    """(wall s, process CPU s, peak MiB or None, output) of one call; CPU/wall far below threads: shared."""
    # imported here: it loads cpp_extension, which warns on import; its timer waits for the GPU
    from torch.utils.benchmark.utils.timer import timer

    cuda = device.type == "cuda"
    _sync(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    else:
        _reset_peak_rss()
    start, cpu_start = timer(), time.process_time()
    out = fn()
    seconds, cpu_seconds = timer() - start, time.process_time() - cpu_start
    _sync(device)
    peak = round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if cuda else _peak_rss_mb()
    return seconds, cpu_seconds, peak, out


def interleaved(
    fns: dict[str, Callable[[], object]], cfg: BenchConfig, device: torch.device, desc: str
) -> tuple[dict[str, dict], dict[str, object]]:
    """Per case its runs' statistics or its error, and its last output; round-robin: load hits all alike."""
    warm, failed = {}, {}
    for name, fn in fns.items():
        try:  # one case that breaks on this device (e.g. torch.compile) must not lose the others' numbers
            warm[name] = sum(measure(fn, device)[0] for _ in range(cfg.warmup))
        except Exception as e:  # noqa: BLE001 - recorded in the JSON, with its message
            failed[name] = f"{type(e).__name__}: {e}"[:500]
    runs: dict[str, list] = {name: [] for name in warm}
    last = {}
    for _ in tqdm(range(cfg.repeats), desc=desc, leave=False):
        for name in runs:
            seconds, cpu_seconds, peak, last[name] = measure(fns[name], device)
            runs[name].append((seconds, cpu_seconds, peak))
    from torch.utils.benchmark.utils.common import Measurement, TaskSpec

    stats = {}
    for name, rs in runs.items():
        times, peaks = [r[0] for r in rs], [r[2] for r in rs if r[2] is not None]
        m = Measurement(1, times, TaskSpec(stmt=name, setup="", label=desc))
        stats[name] = {
            "runs": len(m.times),
            "median_s": m.median,
            "iqr_s": m.iqr,
            "min_s": min(m.times),
            "max_s": max(m.times),
            "warmup_s": warm[name],
            "peak_mem_mb": max(peaks, default=None),
            "cpu_util": sum(r[1] for r in rs) / sum(times),
        }
    stats.update({name: {"error": why} for name, why in failed.items()})
    return stats, last
