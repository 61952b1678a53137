"""Checkpoint folders: the weights (sharded fp16 safetensors, never pickle), config.json (what rebuilds the
model and repeats the run), metrics.json (every evaluation with its settings), the card rendered from them."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; evaluate one checkpoint at a time there
    fcntl = None

import torch
from huggingface_hub import load_torch_model, save_torch_state_dict

from pagdemo.models import MODEL_KEYS, PAGClassifier
from pagdemo.records.card import render_card
from pagdemo.records.files import RecordError, atomic_write_text, read_json, write_json
from pagdemo.records.hub import download, is_hub, short_name
from pagdemo.threat import DATASET_SIDES

MAX_SHARD = "15MB"  # every file stays under the 16 MB that comes back from a GPU machine
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")
NOTES = "NOTES.md"  # optional hand-written context, shown in the model card under "Notes"


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded; the message says what is wrong and where."""


def _read(path: Path, default: Any = None) -> Any:
    """read_json, with a corrupt file reported as a CheckpointError."""
    try:
        return read_json(path, default)
    except RecordError as e:
        raise CheckpointError(str(e)) from None


def save_checkpoint(model: PAGClassifier, folder: str | Path, run: dict[str, Any]) -> Path:
    """fp16 weights (half the bytes; tested lossless enough), config.json and the card; metrics.json stays."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)  # unwrap DDP
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    # shards of at most MAX_SHARD, swapped in one by one; stale shards of another layout go
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}.") as tmp:
        save_torch_state_dict(state, tmp, max_shard_size=MAX_SHARD)
        old = {p.name for p in folder.glob("model*.safetensors*")}
        new = {p.name for p in Path(tmp).iterdir()}
        for name in new:
            os.replace(Path(tmp) / name, folder / name)
        for name in old - new:
            (folder / name).unlink()
    write_json(folder / "config.json", {**model.config(), "run": run})
    write_model_card(folder)
    return folder


def shard_names(folder: Path) -> set[str]:
    """Files a sharded save's index (or a single-file save) consists of, the index included."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        return set(_read(index)["weight_map"].values()) | {index.name}
    return {"model.safetensors"}


def check_folder(folder: str | Path) -> Path:
    """A complete safetensors checkpoint's folder (an hf-hub: name's is in the HF cache), else a reason."""
    folder = download(folder) if is_hub(folder) else Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"no checkpoint folder at {folder}")
    missing = sorted(n for n in shard_names(folder) if not (folder / n).exists())
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if missing and pickles:
        why = "pagdemo loads safetensors only, never pickle"
        raise CheckpointError(f"{folder} holds pickle weights ({', '.join(pickles)}); {why}")
    if not (folder / "config.json").exists():
        raise CheckpointError(f"{folder} has no config.json; is it a pagdemo checkpoint folder?")
    if missing:
        raise CheckpointError(f"{folder} is missing weight file(s): {', '.join(missing)}")
    return folder


def image_side(config: dict[str, Any]) -> int:
    """The side a checkpoint's model takes: recorded, else (older ones) its dataset's, else its arch's."""
    dataset = (config.get("run") or {}).get("dataset")
    arch_side = 96 if config.get("arch") == "resnet18_stl" else 32
    return int(config.get("image_size") or DATASET_SIDES.get(str(dataset)) or arch_side)


def model_from_config(config: dict[str, Any], where: str = "config.json") -> PAGClassifier:
    """The untrained model a config describes; older checkpoints without a size or stats get their data's."""
    kwargs = {k: config[k] for k in MODEL_KEYS if config.get(k) is not None}
    try:  # an unknown or missing arch is a ValueError too
        return PAGClassifier(**kwargs | {"arch": config.get("arch"), "image_size": image_side(config)})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: {e}") from None


def load_checkpoint(folder: str | Path, device: str | torch.device = "cpu") -> PAGClassifier:
    """The model from config.json with its weights in fp32, in eval mode (hf-hub: names are fetched)."""
    folder = check_folder(folder)
    config = _read(folder / "config.json")
    model = model_from_config(config, f"{folder}/config.json")
    try:
        load_torch_model(model, folder, strict=True, map_location="cpu")
    except RuntimeError as e:  # shape or key mismatch between config and weights
        detail = f"(arch {config['arch']!r}): {' '.join(str(e).split())[:300]}"
        raise CheckpointError(f"{folder}: weights do not match config.json {detail}") from None
    except Exception as e:  # noqa: BLE001 (a corrupt safetensors header or truncated shard)
        raise CheckpointError(f"{folder}: cannot read the weights ({type(e).__name__}: {e})") from None
    model.run = config.get("run", {})
    return model.float().to(device).eval()


def append_metrics(folder: str | Path, record: dict[str, Any]) -> None:
    """Add one evaluation (with its settings) to metrics.json and refresh the model card."""
    folder = Path(folder)
    fd = os.open(folder, os.O_RDONLY)
    try:
        if fcntl is not None:  # two evaluations of one checkpoint at once must not drop each other's line
            fcntl.flock(fd, fcntl.LOCK_EX)
        metrics = _read(folder / "metrics.json", {"evaluations": []})
        metrics["evaluations"].append(record)
        write_json(folder / "metrics.json", metrics)
        write_model_card(folder)
    finally:
        os.close(fd)  # releases the lock


def info(folder: str | Path, name: str | None = None) -> dict[str, Any]:
    """What the app, the reports and the model card show about a checkpoint, without loading its weights."""
    folder = Path(folder)
    config = _read(folder / "config.json", {})
    metrics = _read(folder / "metrics.json", {"evaluations": []})
    audits = {a.get("norm"): a for a in (_read(f, {}) for f in sorted(folder.glob("audit-*.json")))}
    unfinished = {norm: a for norm, a in audits.items() if a.get("finished") is False}  # not in metrics.json
    notes = folder / NOTES
    return {
        "name": name or folder.name,
        "path": str(folder),
        "arch": config.get("arch"),
        "classes": config.get("classes"),
        "image_size": image_side(config),
        "run": config.get("run", {}),
        "evaluations": metrics["evaluations"],
        "audits": audits,
        "unfinished_audits": unfinished,
        "notes": notes.read_text(encoding="utf-8") if notes.exists() else None,
    }


def write_model_card(folder: str | Path) -> None:
    """Render README.md from config.json, metrics.json and NOTES.md: no number in it is typed by hand."""
    atomic_write_text(Path(folder) / "README.md", render_card(info(folder)))


def list_checkpoints(root: str | Path = "checkpoints") -> tuple[list[dict[str, Any]], list[str]]:
    """Each checkpoint in `root` (any form `pagdemo app --checkpoints` takes) and why others were skipped."""
    found, skipped = [], []
    for entry in str(root).split(","):
        folder = download(entry) if is_hub(entry) else Path(entry)
        one = (folder / "config.json").exists()
        name = short_name(entry) if one and is_hub(entry) else None
        for sub in [folder] if one else sorted(folder.iterdir()) if folder.is_dir() else []:
            if sub.is_dir() and not sub.name.startswith("."):
                try:
                    found.append(info(check_folder(sub), name))
                except CheckpointError as e:
                    skipped.append(str(e))
    return found, skipped
