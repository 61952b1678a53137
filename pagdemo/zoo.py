"""RobustBench's model zoo as pagdemo architectures (an optional extra: `pip install -e .[zoo]`).

`robustbench:<dataset>/<threat>/<name>` (e.g. `robustbench:cifar10/Linf/Engstrom2019Robustness`, the
paper's linf RIGD teacher) builds the model from RobustBench's own model definitions, never downloading
anything, so a checkpoint imported by `pagdemo import-robustbench` rebuilds from its config.json like any
other. RobustBench models take pixels in [0, 1] and normalize inside, as pagdemo's own do."""

from __future__ import annotations

import contextlib
import difflib
import importlib
import sys
import warnings
from types import ModuleType

from torch import nn

ZOO_PREFIX = "robustbench:"
THREATS = ("Linf", "L2")  # RobustBench's names of the threat models pagdemo evaluates
DATASETS = ("cifar10",)  # of RobustBench's, the one pagdemo's evaluation, class names and radii cover


class ZooError(ValueError):
    """RobustBench missing, an unknown model, a file that is not there or not plain tensors: one line."""


def robustbench() -> ModuleType:
    """The robustbench package, or a one-line error saying how to get it."""
    # robustbench 1.1.1 imports the AutoAttack authors' code as `autoattack`, which installs from GitHub only;
    # pyautoattack (PyPI, one of pagdemo's requirements) is that code
    with contextlib.suppress(ImportError):
        import pyautoattack.state

        sys.modules.setdefault("autoattack", pyautoattack)
        sys.modules.setdefault("autoattack.state", pyautoattack.state)
    try:
        # its imports warn about torch.jit and pkg_resources, not about anything we do
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module("robustbench")
    except ImportError as e:
        raise ZooError(f"RobustBench models need robustbench ({e}): pip install -e '.[zoo]'") from None


def zoo_entries(dataset: str, threat: str) -> dict:
    """RobustBench's entries for a dataset and threat model: name -> {'model': constructor, ...}."""
    if dataset not in DATASETS:
        raise ZooError(f"unknown dataset {dataset!r} for the model zoo; pagdemo imports {list(DATASETS)}")
    if threat not in THREATS:
        raise ZooError(f"unknown threat model {threat!r}; choose one of {list(THREATS)}")
    robustbench()
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    return model_dicts[BenchmarkDataset(dataset)][ThreatModel(threat)]


def check_name(name: str, dataset: str, threat: str) -> None:
    """An unknown name is a user error that lists the closest of RobustBench's names."""
    names = list(zoo_entries(dataset, threat))
    if name in names:
        return
    lower = {n.lower(): n for n in names}
    close = [n for n in names if name.lower() in n.lower()][:5] or [
        lower[m] for m in difflib.get_close_matches(name.lower(), list(lower), n=5, cutoff=0.5)
    ]
    hint = (
        f"did you mean {', '.join(close)}?" if close else f"it has {len(names)}, e.g. {', '.join(names[:5])}"
    )
    raise ZooError(f"RobustBench has no {dataset} {threat} model {name!r}; {hint}")


def zoo_arch(name: str, dataset: str, threat: str) -> str:
    """The pagdemo architecture name of a zoo model."""
    return f"{ZOO_PREFIX}{dataset}/{threat}/{name}"


def build_zoo_model(arch: str) -> nn.Module:
    """The untrained zoo model, from RobustBench's definition alone (no weights, no network)."""
    parts = arch.removeprefix(ZOO_PREFIX).split("/")
    if not arch.startswith(ZOO_PREFIX) or len(parts) != 3 or not all(parts):
        raise ZooError(f"not a zoo architecture: {arch!r} (expected {ZOO_PREFIX}<dataset>/<threat>/<name>)")
    dataset, threat, name = parts
    check_name(name, dataset, threat)
    return zoo_entries(dataset, threat)[name]["model"]()
