"""RobustBench's model zoo as pagdemo architectures.

`robustbench:<dataset>/<threat>/<name>` (e.g. `robustbench:cifar10/Linf/Engstrom2019Robustness`, the paper's linf
RIGD teacher) builds the model from RobustBench's own model definitions, never downloading anything, so a checkpoint
imported by `pagdemo import-robustbench` rebuilds from its config.json like any other. RobustBench models take pixels
in [0, 1] and normalize inside, as pagdemo's own do, so attacks, targets and the app need no change.

robustbench is an optional extra (`pip install -e .[zoo]`). Its 1.1.1 wheel imports the AutoAttack authors' code
under the name `autoattack`, which installs from GitHub only; `pyautoattack` (PyPI, one of pagdemo's requirements)
is that code, and stands in for it here.
"""

from __future__ import annotations

import difflib
import importlib
import sys
import warnings
from types import ModuleType

from torch import nn

ZOO_PREFIX = "robustbench:"
THREATS = ("Linf", "L2")  # RobustBench's names of the threat models pagdemo evaluates
DATASETS = (
    "cifar10",
)  # pagdemo's evaluation, class names and radii cover CIFAR-10 among RobustBench's datasets
INSTALL = "pip install -e '.[zoo]'"


class ZooError(ValueError):
    """RobustBench missing, an unknown model, a file that is not there or not plain tensors: one line."""


def robustbench() -> ModuleType:
    """The robustbench package, or a one-line error saying how to get it."""
    try:
        import pyautoattack
        import pyautoattack.state
    except ImportError:
        pyautoattack = None
    if pyautoattack is not None:
        sys.modules.setdefault("autoattack", pyautoattack)  # see the module docstring
        sys.modules.setdefault("autoattack.state", pyautoattack.state)
    try:
        with (
            warnings.catch_warnings()
        ):  # its imports warn about torch.jit and pkg_resources, not about anything we do
            warnings.simplefilter("ignore")
            return importlib.import_module("robustbench")
    except ImportError as e:
        raise ZooError(
            f"RobustBench models need the optional robustbench package ({e}); install it with: {INSTALL}"
        ) from None


def zoo_entries(dataset: str, threat: str) -> dict:
    """RobustBench's entries for one dataset and threat model: name -> {'model': constructor, 'gdrive_id': ...}."""
    if dataset not in DATASETS:
        raise ZooError(f"unknown dataset {dataset!r} for the model zoo; pagdemo imports {list(DATASETS)}")
    if threat not in THREATS:
        raise ZooError(f"unknown threat model {threat!r}; choose one of {list(THREATS)}")
    robustbench()
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    return model_dicts[BenchmarkDataset(dataset)][ThreatModel(threat)]


def zoo_names(dataset: str, threat: str) -> list[str]:
    """Every model RobustBench lists for a dataset and threat model."""
    return list(zoo_entries(dataset, threat))


def check_name(name: str, dataset: str, threat: str) -> None:
    """An unknown name is a user error that lists the closest of RobustBench's names."""
    names = zoo_names(dataset, threat)
    if name not in names:
        lower = {n.lower(): n for n in names}
        close = [n for n in names if name.lower() in n.lower()][:5] or [
            lower[m] for m in difflib.get_close_matches(name.lower(), list(lower), n=5, cutoff=0.5)
        ]
        raise ZooError(
            f"RobustBench has no {dataset} {threat} model {name!r}"
            + (
                f"; did you mean {', '.join(close)}?"
                if close
                else f"; it has {len(names)}, e.g. {', '.join(names[:5])}"
            )
        )


def zoo_arch(name: str, dataset: str, threat: str) -> str:
    """The pagdemo architecture name of a zoo model."""
    return f"{ZOO_PREFIX}{dataset}/{threat}/{name}"


def parse_arch(arch: str) -> tuple[str, str, str]:
    """(dataset, threat, name) of a zoo architecture name."""
    parts = arch[len(ZOO_PREFIX) :].split("/") if arch.startswith(ZOO_PREFIX) else []
    if len(parts) != 3 or not all(parts):
        raise ZooError(f"not a zoo architecture: {arch!r} (expected {ZOO_PREFIX}<dataset>/<threat>/<name>)")
    return parts[0], parts[1], parts[2]


def build_zoo_model(arch: str) -> nn.Module:
    """The untrained zoo model, from RobustBench's definition alone (no weights, no network)."""
    dataset, threat, name = parse_arch(arch)
    check_name(name, dataset, threat)
    return zoo_entries(dataset, threat)[name]["model"]()
