"""Clean and PGD robust accuracy (the paper's evaluation: PGD-20, random start, step 2*eps/20).

`robust_accuracy` is the batched core that the CLI, the app's eps curve and the audit share;
`run_eval` adds the checkpoint, the data and the record appended to metrics.json.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from pagdemo.attacks import check_attack_args, eval_mode, pgd
from pagdemo.records.checkpoints import append_metrics, load_checkpoint
from pagdemo.data import DataError
from pagdemo.data.datasets import Dataset, load_dataset
from pagdemo.records.files import write_json
from pagdemo.records.provenance import now
from pagdemo.threat import eval_eps, eval_step


@dataclass(frozen=True)
class EvalConfig:
    checkpoint: str
    norm: str | None = "linf"  # "linf", "l2", or None for clean accuracy only
    eps: float | None = None  # radius in [0, 1] pixel units; None: the dataset's (pagdemo.threat: 8/255 linf, 0.5 l2)
    steps: int = 20
    step_size: float | None = None  # None: 2 * eps / steps, as in the paper
    restarts: int = 1  # a sample counts as robust only if it survives every restart
    random_start: bool = True
    limit: int | None = None  # a fixed, class-balanced subset of the test set; None: all of it
    dataset: str | None = None  # None: the dataset the checkpoint was trained on
    data_dir: str | None = None
    on_bad_image: str = "skip"  # an image folder's unreadable test file: "skip" (counted in n) or "stop"
    batch_size: int = 256
    device: str = "auto"
    seed: int = 0
    json: str | None = None  # also write the record here
    record: bool = True  # append the record to the checkpoint's metrics.json


def resolve_device(device: str) -> torch.device:
    """'auto' means the GPU when there is one: the same code runs on an H100 and a laptop."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but no CUDA GPU is visible")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"unknown device {device!r}; choose one of ['auto', 'cpu', 'cuda']")
    return torch.device(device)


def robust_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str | None,
    eps: float,
    steps: int = 20,
    step_size: float | None = None,
    restarts: int = 1,
    random_start: bool = True,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> tuple[float, float | None]:
    """(clean accuracy, robust accuracy) over (x, y) in [0, 1]; robust is None when norm is None."""
    if norm is not None:
        check_attack_args(norm, eps, steps)
    device = torch.device(device)
    with eval_mode(model.to(device)):
        return _robust_accuracy(model, x, y, norm, eps, steps, step_size, restarts, random_start, batch_size, device,
                                seed, progress)


def _robust_accuracy(model, x, y, norm, eps, steps, step_size, restarts, random_start, batch_size, device, seed,
                     progress) -> tuple[float, float | None]:
    """The loop of `robust_accuracy`, with the model already in eval mode on `device`."""
    gen = torch.Generator(device=device).manual_seed(seed)
    clean = robust = 0
    for i in tqdm(range(0, len(x), batch_size), desc=f"eval {norm or 'clean'}", disable=not progress, leave=False):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        with torch.no_grad():
            ok = model(xb).argmax(1) == yb
        clean += ok.sum().item()
        if norm is None:
            continue
        for _ in range(restarts):  # attack only what still stands: same answer, less work
            idx = ok.nonzero().squeeze(1)
            if len(idx) == 0:
                break
            x_adv = pgd(model, xb[idx], yb[idx], eps, norm=norm, steps=steps, step_size=step_size,
                        random_init=random_start, generator=gen)
            with torch.no_grad():
                ok[idx] = model(x_adv).argmax(1) == yb[idx]
        robust += ok.sum().item()
    n = len(x)
    return clean / n, (robust / n if norm is not None else None)


def load_model_and_testset(checkpoint: str, device: torch.device, dataset: str | None, data_dir: str | None,
                           limit: int | None, seed: int, on_bad_image: str = "skip") -> tuple[nn.Module, Dataset]:
    """A checkpoint and the test split to judge it on: its own training dataset unless told otherwise."""
    model = load_checkpoint(checkpoint, device)
    dataset, data_dir = test_data_for(getattr(model, "run", {}), dataset, data_dir)
    ds = load_dataset(dataset, "test", data_dir=data_dir, limit=limit, seed=seed,
                      image_size=getattr(model, "image_size", None), on_bad_image=on_bad_image)
    check_classes(model, ds)
    return model, ds


def check_classes(model: nn.Module, ds: Dataset) -> None:
    """Labels only mean the model's classes when the test data names the same ones, in the same order."""
    classes = getattr(model, "classes", None)
    if classes is not None and list(classes) != list(ds.classes):
        raise DataError(f"the {ds.name} test data has the classes {ds.classes}, but the model was trained on {classes}: "
                        "evaluate it on the data it was trained on")


def test_data_for(run: dict, dataset: str | None, data_dir: str | None) -> tuple[str, str | None]:
    """(dataset, folder) to evaluate a run on: its own unless told otherwise, or where it is absent on this machine
    (a checkpoint trained on a rented GPU names that machine's folder), the dataset's default location."""
    dataset = dataset or run.get("dataset", "cifar10")
    own = run.get("data_dir") if dataset == run.get("dataset") else None
    return dataset, data_dir or (own if own and Path(own).exists() else None)


def run_eval(cfg: EvalConfig, progress: bool = True) -> dict:
    """Evaluate a checkpoint on its test set and record the result with its exact settings."""
    device = resolve_device(cfg.device)
    model, ds = load_model_and_testset(cfg.checkpoint, device, cfg.dataset, cfg.data_dir, cfg.limit, cfg.seed,
                                       cfg.on_bad_image)
    dataset = ds.name
    eps = cfg.eps if cfg.eps is not None else eval_eps(cfg.norm, dataset, model.image_size) if cfg.norm else 0.0
    step_size = eval_step(eps, cfg.steps) if cfg.step_size is None and cfg.norm else cfg.step_size
    clean, rob = robust_accuracy(model, ds.float(), ds.labels, cfg.norm, eps, cfg.steps, step_size, cfg.restarts,
                                 cfg.random_start, cfg.batch_size, device, cfg.seed, progress)
    record = {"date": now(), "data": f"{dataset}/test ({ds.source})", "n": len(ds), "limit": cfg.limit,
              "subset_seed": cfg.seed, "attack": f"pgd-{cfg.steps}" if cfg.norm else "none", "norm": cfg.norm,
              "eps": eps if cfg.norm else None, "steps": cfg.steps if cfg.norm else None,
              "step_size": step_size, "restarts": cfg.restarts if cfg.norm else None,
              "random_start": cfg.random_start if cfg.norm else None, "clean_acc": clean, "robust_acc": rob,
              "device": str(device), "config": asdict(cfg)}
    if cfg.record:
        append_metrics(cfg.checkpoint, record)
    if cfg.json:
        write_json(Path(cfg.json), record)
    return record


def accuracy_vs_eps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps_list: list[float],
                    steps: int = 10, batch_size: int = 256, seed: int = 0) -> Iterator[tuple[float, float]]:
    """Yield (eps, robust accuracy) for each radius; eps 0 is clean accuracy. PGD: random start, step 2*eps/steps."""
    device = next(model.parameters()).device
    for eps in eps_list:
        clean, robust = robust_accuracy(model, x, y, None if eps == 0 else norm, eps, steps=steps,
                                        batch_size=batch_size, device=device, seed=seed, progress=False)
        yield eps, clean if robust is None else robust


def format_record(record: dict) -> str:
    """One line a person reads in a terminal."""
    s = f"clean {100 * record['clean_acc']:.2f}%"
    if record["robust_acc"] is not None:
        s += (f" | PGD-{record['steps']} {record['norm']} eps={record['eps']:.4g}: "
              f"{100 * record['robust_acc']:.2f}%")
    return s + f" | n={record['n']} ({record['data']})"

