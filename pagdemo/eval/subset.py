"""What every evaluation of a checkpoint shares: which test images it is judged on and where the work runs
(`SubsetConfig`, the base of the PGD, AutoAttack and audit configs), loading the model with its test data, the
default radius, which images the model gets right, and the one record a metrics.json line is built from."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from pagdemo.data import DataError
from pagdemo.data.datasets import DATASET_NAMES, Dataset, load_dataset
from pagdemo.data.folder import DATA_DIR_HELP, FOLDER_HELP, ON_BAD, ON_BAD_HELP
from pagdemo.models import resolve_device
from pagdemo.options import flag
from pagdemo.records.checkpoints import append_metrics, load_checkpoint
from pagdemo.records.files import write_json
from pagdemo.records.hub import is_hub
from pagdemo.records.provenance import git_commit, now
from pagdemo.threat import NORMS, eval_eps

EPS_HELP = "radius in [0, 1] pixel units (default: the dataset's, 8/255 linf, 0.5 l2 on CIFAR-10)"


@dataclass(frozen=True)
class SubsetConfig:
    """A checkpoint, the test images it is judged on and the threat model: every evaluation config's base."""

    checkpoint: str = flag(help="checkpoint folder, or hf-hub:ORG/NAME[@REVISION] (with --no-record)")
    norm: str | None = flag("linf", "threat model", choices=NORMS)
    eps: float | None = flag(None, EPS_HELP, read="eps")
    limit: int | None = flag(
        None, "a fixed class-balanced subset of N test images (default: all)", read="count"
    )
    dataset: str | None = flag(
        None, "default: the checkpoint's (" + FOLDER_HELP + ")", choices=sorted(DATASET_NAMES)
    )
    data_dir: str | None = flag(None, DATA_DIR_HELP)
    on_bad_image: str = flag("skip", ON_BAD_HELP, choices=ON_BAD)
    batch_size: int = flag(256, "images per batch", read="count")
    device: str = flag("auto", "auto (GPU if any), cpu or cuda")
    seed: int = flag(0, "seed of the subset, of the random starts and of the attacks")
    json: str | None = flag(None, "also write the result to this file")
    record: bool = flag(True, "append the result to the checkpoint's metrics.json")

    def radius(self, dataset: str, side: int) -> float:
        """The eps asked for, else the dataset's radius for the norm, scaled with the image side."""
        return self.eps if self.eps is not None else eval_eps(self.norm, dataset, side)


@dataclass
class Subject:
    """A loaded checkpoint, its test subset and the device, as an evaluation sees them."""

    model: nn.Module
    data: Dataset
    device: torch.device

    @property
    def described(self) -> str:
        """The data as a record names it."""
        return f"{self.data.name}/test ({self.data.source})"


def data_for_eval(run: dict, dataset: str | None, data_dir: str | None) -> tuple[str, str | None]:
    """(dataset, folder) to evaluate a run on: its own unless told otherwise, or where it is absent on this
    machine (a checkpoint trained on a rented GPU names that machine's folder), the dataset's default one."""
    dataset = dataset or run.get("dataset", "cifar10")
    own = run.get("data_dir") if dataset == run.get("dataset") else None
    return dataset, data_dir or (own if own and Path(own).exists() else None)


def check_classes(classes: list[str] | None, ds: Dataset) -> None:
    """Labels only mean a model's classes when the test data names the same ones, in the same order."""
    if classes is not None and list(classes) != list(ds.classes):
        raise DataError(
            f"the {ds.name} test data has the classes {ds.classes}, but the model was trained on {classes}: "
            "evaluate it on the data it was trained on"
        )


def load_subject(cfg: SubsetConfig) -> Subject:
    """The checkpoint on its device and the test subset to judge it on."""
    if cfg.record and is_hub(cfg.checkpoint):
        raise ValueError(
            f"{cfg.checkpoint} is a copy in the Hugging Face cache, not a folder of yours to record in: "
            "add --no-record (and --json FILE to keep the result)"
        )
    device = resolve_device(cfg.device)
    model = load_checkpoint(cfg.checkpoint, device)
    return Subject(model, test_data(cfg, model, cfg.limit), device)


def test_data(cfg: SubsetConfig, model: nn.Module, limit: int | None) -> Dataset:
    """`limit` class-balanced test images of the model's dataset (unless told), checked for its classes."""
    dataset, data_dir = data_for_eval(getattr(model, "run", {}), cfg.dataset, cfg.data_dir)
    kw = dict(data_dir=data_dir, limit=limit, seed=cfg.seed, on_bad_image=cfg.on_bad_image)
    ds = load_dataset(dataset, "test", image_size=getattr(model, "image_size", None), **kw)
    check_classes(getattr(model, "classes", None), ds)
    return ds


def evaluation_record(cfg: SubsetConfig, subject: Subject, **result) -> dict:
    """One metrics.json line: when, on what, by which settings, and the result (attack, accuracies)."""
    return {
        "date": now(),
        "data": subject.described,
        "n": len(subject.data),
        "limit": cfg.limit,
        "subset_seed": cfg.seed,
        "norm": cfg.norm,
        **result,
        "device": str(subject.device),
        "commit": git_commit(),
        "config": asdict(cfg),
    }


def keep_records(cfg: SubsetConfig, *records: dict) -> None:
    """Append the records to the checkpoint's metrics.json (unless told not to); write the last to --json."""
    if cfg.record:
        for r in records:
            append_metrics(cfg.checkpoint, r)
    if cfg.json and records:
        write_json(Path(cfg.json), records[-1])
