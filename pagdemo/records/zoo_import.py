"""`pagdemo import-robustbench`: a RobustBench model as a pagdemo checkpoint folder (README, "Robust models
from RobustBench"). Every file is opened with `torch.load(weights_only=True)`, which never runs code from it,
before RobustBench's `load_model` reads it; the card names source, citation and licence."""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from fnmatch import fnmatchcase
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import torch

from pagdemo.models import CIFAR10_CLASSES, PAGClassifier
from pagdemo.options import flag
from pagdemo.records.checkpoints import save_checkpoint
from pagdemo.records.files import sha256
from pagdemo.records.provenance import git_commit, now
from pagdemo.threat import eval_eps
from pagdemo.zoo import DATASETS, THREATS, ZooError, check_name, zoo_arch, zoo_entries

ROBUSTBENCH_CITATION = (
    "Croce, Andriushchenko, Sehwag, Debenedetti, Flammarion, Chiang, Mittal, Hein: RobustBench: a "
    "standardized adversarial robustness benchmark. NeurIPS 2021 Datasets and Benchmarks Track"
)
MODEL_INFO = "https://github.com/RobustBench/robustbench/tree/master/model_info"  # the citations' home
LEADERBOARD = "https://robustbench.github.io"


@dataclass(frozen=True)
class ImportConfig:
    """`pagdemo import-robustbench`: which zoo model, where its file is, where the checkpoint goes."""

    # Engstrom2019Robustness: the paper's RIGD teachers
    name: str = flag(help="a RobustBench model name, e.g. Engstrom2019Robustness", positional=True)
    out: str = flag(help="the checkpoint folder to write (e.g. checkpoints/engstrom-linf)")
    threat: str = flag("Linf", "RobustBench's threat model: Linf (8/255) or L2 (0.5)", choices=THREATS)
    dataset: str = flag("cifar10", "RobustBench's dataset", choices=DATASETS)
    # RobustBench's own default: ./models
    model_dir: str = flag("models", "where RobustBench keeps its files, DIR/<dataset>/<threat>/<NAME>.pt")
    download: bool = flag(True, "let RobustBench download the file when DIR does not hold it")
    model_info: str | None = flag(None, "the model's RobustBench JSON, for its citation (default: NAME.json)")


def weights_file(cfg: ImportConfig) -> Path:
    """Where RobustBench's load_model looks for the model's file."""
    return Path(cfg.model_dir) / cfg.dataset / cfg.threat / f"{cfg.name}.pt"


def check_tensors_only(path: Path) -> None:
    """Open the file the safe way: tensors and plain containers only; anything else is refused in one line."""
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = " ".join(str(e).split("\n")[0].split())[:200]
        what = "Python objects other than tensors, which pagdemo does not load"
        raise ZooError(f"{path} holds {what} (torch.load weights_only: {first})") from None
    except (OSError, RuntimeError, EOFError) as e:
        raise ZooError(f"{path} is not a readable PyTorch file ({type(e).__name__}: {e})") from None


def _files(cfg: ImportConfig) -> list[tuple[Path, str]]:
    """(file, Google Drive id) of each file of the model (an ensemble has several), where load_model looks."""
    path, gdrive = weights_file(cfg), zoo_entries(cfg.dataset, cfg.threat)[cfg.name]["gdrive_id"]
    if gdrive is None:
        why = "it comes from timm; pagdemo imports file-backed models"
        raise ZooError(f"RobustBench keeps no file for {cfg.name} ({why})")
    if isinstance(gdrive, list):
        return [(path.parent / f"{path.name}_m{i}.pt", g) for i, g in enumerate(gdrive)]
    return [(path, gdrive)]


def _robustbench_model(cfg: ImportConfig) -> torch.nn.Module:
    """The model with its weights: each file fetched if allowed and missing, checked, then loaded."""
    from robustbench.utils import download_gdrive_new, load_model

    for f, gdrive in _files(cfg):
        if not f.exists() and not cfg.download:
            fetch = "with internet, this command without --no-download fetches it into --model-dir"
            raise ZooError(f"no {f}: put RobustBench's {f.name} there ({fetch})")
        if not f.exists():
            f.parent.mkdir(parents=True, exist_ok=True)
            try:  # what load_model would do, done first so the file is checked first
                download_gdrive_new(gdrive, f)
            except Exception as e:  # noqa: BLE001 - no network, a moved file: one line with where the file goes
                f.unlink(missing_ok=True)
                failed = f"could not download {f.name} ({type(e).__name__})"
                raise ZooError(f"{failed}; put RobustBench's file at {f} and run again") from None
        check_tensors_only(f)
    try:
        model = load_model(cfg.name, model_dir=cfg.model_dir, dataset=cfg.dataset, threat_model=cfg.threat)
    except Exception as e:  # noqa: BLE001 - a file RobustBench itself cannot read, said in one line
        why = f"{type(e).__name__}: {' '.join(str(e).split())[:160]}"
        raise ZooError(f"RobustBench could not load {cfg.name} ({why})") from None
    return model.eval()


def licence(name: str, dataset: str, threat: str) -> str:
    """The model's licence from RobustBench's LICENSE: MIT unless it lists the model as an exception."""
    try:
        text = distribution("robustbench").read_text("LICENSE") or ""
    except PackageNotFoundError:
        text = ""
    data_name = {"cifar10": "CIFAR-10"}[dataset]
    # a line of exceptions: "- CIFAR-10/CIFAR-100, Linf/L2, Gowal2021Improving*: Apache License 2.0; ..."
    for line in text.splitlines():
        where, colon, terms = line[2:].partition(":")
        fields = [f.strip() for f in where.split(",")]
        if line.startswith("- ") and colon and len(fields) == 3 and fnmatchcase(name, fields[2]):
            if data_name in fields[0].split("/") and threat in fields[1].split("/"):
                return terms.strip() + " (RobustBench's LICENSE lists this model's own licence)"
    return "MIT (RobustBench's LICENSE: every Model Zoo weight it does not list otherwise)"


def citation(cfg: ImportConfig) -> str:
    """The model's citation from RobustBench's model_info JSON when it is here, and RobustBench's own."""
    path = Path(cfg.model_info) if cfg.model_info else weights_file(cfg).with_suffix(".json")
    own = f"see {MODEL_INFO}/{cfg.dataset}/{cfg.threat}/{cfg.name}.json"
    if path.is_file():
        info = json.loads(path.read_text())
        venue = info.get("venue", "").replace("<br>", " ")
        own = f"{info.get('authors', '?')}: {info.get('name', cfg.name)}, {venue} ({info.get('link', '')})"
    return f"{own}. Benchmark: {ROBUSTBENCH_CITATION}"


def import_command(cfg: ImportConfig, command: str) -> str:
    """`pagdemo import-robustbench`: write a RobustBench model's checkpoint folder, say how to evaluate it."""
    check_name(cfg.name, cfg.dataset, cfg.threat)  # loads robustbench, or says in one line how to get it
    arch = zoo_arch(cfg.name, cfg.dataset, cfg.threat)
    classifier = PAGClassifier(arch, 10, CIFAR10_CLASSES, image_size=32)
    classifier.net.load_state_dict(_robustbench_model(cfg).state_dict())
    path, norm = weights_file(cfg), cfg.threat.lower()
    run = {
        "method": "import",
        "source": f"RobustBench {distribution('robustbench').version}: {cfg.dataset} "
        f"{cfg.threat} {cfg.name} ({LEADERBOARD})",
        "citation": citation(cfg),
        "licence": licence(cfg.name, cfg.dataset, cfg.threat),
        "dataset": cfg.dataset,
        "adv_norm": norm,
        "adv_eps": eval_eps(norm, cfg.dataset),
        "file": str(path),
        "file_sha256": sha256(path) if path.exists() else None,
        "command": command,
        "commit": git_commit(),
        "date": now(),
        "torch": torch.__version__,
    }
    out = save_checkpoint(classifier, cfg.out, run)
    return f"checkpoint written to {out}; evaluate it with: pagdemo eval --checkpoint {out} --norm {norm}"
