"""The paper's reported numbers (Ganz, Kawar, Elad, ICML 2023), for side-by-side comparison.

Typed from the paper (the project's digest of it is shared/PAPER.md): clean / PGD-20 linf /
PGD-20 l2 accuracy in %, ResNet-18, PGD-20 with random start and step 2*eps/20. This module is
the only place these numbers are written down.
"""

from __future__ import annotations

# Table 1 (CIFAR-10) and Table 2 (STL-10): method -> (clean, linf, l2) accuracy in %.
TABLES: dict[str, dict[str, tuple[float, float, float]]] = {
    "cifar10": {
        "Vanilla": (93.61, 0.00, 0.00),
        "One Image": (79.46, 16.57, 49.68),
        "Class Mean": (81.41, 15.65, 50.62),
        "Nearest Neighbor": (80.65, 10.58, 46.33),
        "RIGD linf": (84.94, 40.69, 58.51),
        "RIGD l2": (88.96, 28.35, 65.04),
    },
    "stl10": {
        "Vanilla": (82.60, 0.00, 0.00),
        "One Image": (71.30, 10.65, 36.65),
        "Class Mean": (70.64, 14.58, 40.65),
        "Nearest Neighbor": (70.16, 16.35, 41.94),
        "RIGD linf": (75.19, 26.13, 42.65),
        "RIGD l2": (75.18, 20.66, 48.46),
    },
}
TABLE_NAMES = {"cifar10": "Table 1 (CIFAR-10)", "stl10": "Table 2 (STL-10)"}
# Table 3: the lambda behind each Table 1 / Table 2 row.
LAMBDAS = {
    "cifar10": {
        "One Image": 0.5,
        "Class Mean": 0.4,
        "Nearest Neighbor": 0.4,
        "RIGD linf": 0.4,
        "RIGD l2": 0.4,
    },
    "stl10": {
        "One Image": 0.25,
        "Class Mean": 0.2,
        "Nearest Neighbor": 0.4,
        "RIGD linf": 0.4,
        "RIGD l2": 0.4,
    },
}
# Figure 5: lambda ablation, CIFAR-10 Class Mean.
CM_LAMBDA_ABLATION = {
    0.01: (93.39, 0.0, 0.65),
    0.1: (88.40, 4.88, 36.43),
    0.4: (81.41, 15.65, 50.62),
    1.0: (72.63, 19.47, 48.73),
}
# Sec. 5.1 and App. C.1, the 2-D toy experiment: one run each, accuracies in %.
TOY = {"vanilla": {"clean_acc": 100.0, "pgd_acc": 0.0}, "pag": {"clean_acc": 100.0, "pgd_acc": 75.5}}
# The evaluation radii (linf 0.031, l2 0.5 on CIFAR-10 and 1.5 on STL-10) live in pagdemo.threat.
