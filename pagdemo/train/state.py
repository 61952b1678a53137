"""The full training state of a run, `<run>/train_state/`: what a killed run resumes from.

fp32 weights, buffers and SGD's momenta in safetensors shards of at most `checkpoints.MAX_SHARD` (a
ResNet-18's 90 MB in 6 shards: two calls back from a GPU machine), and `progress.json`. Written to a temporary
folder and swapped in, never half-written; the run folder moved to another machine resumes there.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

import torch
from huggingface_hub import save_torch_state_dict
from safetensors.torch import load_file
from torch import nn

from pagdemo.records.checkpoints import MAX_SHARD, shard_names
from pagdemo.records.files import read_json, write_json

STATE_DIR = "train_state"


def save_state(
    out: Path, model: nn.Module, opt: torch.optim.Optimizer, epoch: int, step: int, elapsed: float
) -> None:
    """Weights, momenta and progress after a finished epoch."""
    tensors = {
        f"model.{k}": v.detach().float() if v.is_floating_point() else v.detach()
        for k, v in model.state_dict().items()
    }
    for i, group in enumerate(opt.param_groups):
        for j, p in enumerate(group["params"]):
            buf = opt.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                tensors[f"opt.{i}.{j}"] = buf.float()
    tensors = {k: v.contiguous() for k, v in tensors.items()}  # channels_last weights on a GPU
    tmp = out / f".{STATE_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_torch_state_dict(tensors, tmp, max_shard_size=MAX_SHARD)
    write_json(tmp / "progress.json", {"epoch": epoch, "step": step, "elapsed_s": elapsed})
    old = out / f".{STATE_DIR}.old"
    shutil.rmtree(old, ignore_errors=True)
    if (out / STATE_DIR).exists():
        os.replace(out / STATE_DIR, old)
    os.replace(tmp, out / STATE_DIR)
    shutil.rmtree(old, ignore_errors=True)


def has_state(out: Path) -> bool:
    """Whether `out` holds an unfinished run to resume."""
    return (out / STATE_DIR / "progress.json").exists()


def load_state(out: Path, model: nn.Module, opt: torch.optim.Optimizer) -> tuple[int, int, float]:
    """Restore a saved state into `model` and `opt`; returns (epochs done, global step, seconds trained so
    far)."""
    folder = out / STATE_DIR
    progress = read_json(folder / "progress.json")
    missing = sorted(n for n in shard_names(folder) if not (folder / n).exists())
    if missing:
        raise ValueError(f"{folder} is incomplete: {', '.join(missing)} missing (did every shard arrive?)")
    tensors = {}
    for f in sorted(n for n in shard_names(folder) if n.endswith(".safetensors")):
        try:
            tensors.update(load_file(folder / f))
        except Exception as e:  # noqa: BLE001 (safetensors has its own error type for a damaged shard)
            raise ValueError(
                f"{folder / f} cannot be read ({type(e).__name__}: {e}); the state is damaged"
            ) from None
    model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    for i, group in enumerate(opt.param_groups):
        for j, p in enumerate(group["params"]):
            if f"opt.{i}.{j}" in tensors:
                opt.state[p]["momentum_buffer"] = tensors[f"opt.{i}.{j}"].to(p.device, p.dtype)
    return progress["epoch"], progress["step"], progress["elapsed_s"]


def drop_state(out: Path) -> None:
    """Remove train_state/ once a run has finished (it is twice the fp32 weights)."""
    shutil.rmtree(out / STATE_DIR, ignore_errors=True)


def trim_log(path: Path, epochs: int) -> None:
    """Keep the log lines of the epochs the state holds (a run killed between writes may have one more)."""
    if path.exists():
        lines = path.read_text().splitlines(keepends=True)
        if len(lines) > epochs:
            path.write_text("".join(lines[:epochs]))


@contextmanager
def writes_before_interrupt():
    """An epoch's log line, checkpoint and state are written together: a Ctrl-C (or the GPU window's SIGINT at
    its deadline) that arrives meanwhile takes effect once they are."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda sig, frame: caught.append(sig))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt
