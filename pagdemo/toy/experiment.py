"""The paper's 2-D toy experiment (Sec. 5.1, App. C.1), vanilla vs PAG (Nearest Neighbor) on a line, with the
image models' loss, NN target and attack (`bounds=None`: raw coordinates, no pixel range); float64 on one
thread, so a seed's numbers are the same in the CLI, docs and app. Setup and results: docs/toy/README.md."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from pagdemo.attacks import pgd
from pagdemo.models import build_model
from pagdemo.options import flag
from pagdemo.pag.losses import PAGStep, pag_loss
from pagdemo.pag.targets import NearestNeighborTarget
from pagdemo.toy.stats import describe

MODE_CENTERS = ((-50.0, -10.0, 30.0), (-30.0, 10.0, 50.0))  # x1 centres of class A's and class B's modes
N_MODES = sum(len(c) for c in MODE_CENTERS)
TEST_SEED_OFFSET = 10_000  # test points come from their own generator: fresh, never the training ones
SWEEP_SEED0 = 100  # the lambda sweep runs on seeds 100, 101, ...: lambda is not chosen on the reported seeds
DTYPES = {"float64": torch.float64, "float32": torch.float32}


@dataclass(frozen=True)
class ToyConfig:
    """App. C.1 defaults; `lam`, `k`, `grad_of` and `random_init` are our choices (the paper gives none)."""

    seeds: int = flag(20, "seeds 0..seeds-1, each for both runs (results: mean, 95% interval)", read="count")
    lam: float = flag(1.0, "PAG weight lambda of Eq. 1 (default: the value our sweep chose, see docs/toy)")
    k: int = 30  # Nearest Neighbor sample size: class-t candidates drawn once per class
    grad_of: str = "logit"  # input gradient of "logit" (Eq. 1, chosen) or "logsoftmax" (authors' code)
    # pagdemo.pag.losses.IMPLS key; the MLP has no BatchNorm, so "loop" gives the same numbers
    impl: str = "batched"
    epochs: int = 100
    batch_size: int = 128
    lr: float = 0.01  # Adam
    n_per_mode: int = 1000  # training samples per mode (6 modes: 6000 in all)
    n_test: int = 600  # fresh test samples, split evenly over the 6 modes
    sigma: float = 1.0  # std of x1 within a mode
    eps: float = 15.0  # L2 attack radius, in coordinate units
    steps: int = 10
    step_size: float = 2.0
    random_init: bool = False  # the paper's "simple PGD": start at the clean point
    dtype: str = flag("float64", "float64: results barely depend on the CPU rounding", choices=tuple(DTYPES))
    workers: int = flag(1, "processes for the seeds (one thread each; the same numbers)", read="count")
    sweep_lams: tuple[float, ...] = flag(
        (), f"also sweep lambda on held-out seeds {SWEEP_SEED0}.. (e.g. 0,1,3)", read="floats", name="--sweep"
    )
    out: str = flag("runs/toy", "for results.json and decision_boundary.png (docs/toy holds the shipped run)")

    def __post_init__(self) -> None:
        """Reject bad settings when the config is made (from argv or the app), not minutes into a run."""
        PAGStep(self.impl, grad_of=self.grad_of)  # checks both
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; choose one of {sorted(DTYPES)}")
        if self.n_test % N_MODES:
            raise ValueError(f"n_test must be a multiple of {N_MODES} (a share per mode), got {self.n_test}")
        for name in ("seeds", "k", "epochs", "batch_size", "n_per_mode", "steps", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lam < 0 or any(lam < 0 for lam in self.sweep_lams):
            raise ValueError(f"lambda must be >= 0, got lam={self.lam}, sweep_lams={self.sweep_lams}")


def make_toy_data(
    n_per_mode: int, generator: torch.Generator, sigma: float = 1.0, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """App. C.1 data: x1 ~ N(c, sigma^2) for each mode centre c, x2 = 2 * x1; returns (x (N, 2), y (N,))."""
    xs, ys = [], []
    for label, centers in enumerate(MODE_CENTERS):
        for c in centers:
            x1 = c + sigma * torch.randn(n_per_mode, generator=generator, dtype=torch.float64)
            xs.append(torch.stack([x1, 2 * x1], dim=1).to(dtype))  # the data line
            ys.append(torch.full((n_per_mode,), label, dtype=torch.long))
    return torch.cat(xs), torch.cat(ys)


def make_test_data(cfg: ToyConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n_test` fresh points from the training distribution, from a generator the training never touches."""
    gen = torch.Generator().manual_seed(seed + TEST_SEED_OFFSET)
    return make_toy_data(cfg.n_test // N_MODES, gen, cfg.sigma, DTYPES[cfg.dtype])


def nn_targets(x: torch.Tensor, y: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Nearest Neighbor g(x, t) = r(x, t) - x, (N, C, 2), computed once (no augmentation: exact)."""
    target = NearestNeighborTarget(x, y, int(y.max()) + 1, k=k, seed=seed)
    return target(x, y, idx=torch.arange(len(x)))


@contextmanager
def _single_thread() -> Iterator[None]:
    """One intra-op thread, then the caller's: every reduction in one order, whatever the core count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_toy(cfg: ToyConfig, seed: int, lam: float) -> nn.Module:
    """The 2-32-2 MLP by Adam (lam 0: vanilla); the seed fixes data, init and batch order, not global RNG."""
    gen = torch.Generator().manual_seed(seed)
    x, y = make_toy_data(cfg.n_per_mode, gen, cfg.sigma, DTYPES[cfg.dtype])
    targets = nn_targets(x, y, cfg.k, seed) if lam > 0 else None
    step = PAGStep(cfg.impl, grad_of=cfg.grad_of)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model("mlp", 2).to(DTYPES[cfg.dtype])
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    model.train()
    for _ in range(cfg.epochs):
        for idx in torch.randperm(x.shape[0], generator=gen).split(cfg.batch_size):
            if targets is None:
                loss = F.cross_entropy(model(x[idx]), y[idx])
            else:
                loss, _ = pag_loss(model, x[idx], y[idx], targets[idx], lam, step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, chunk: int = 1 << 20) -> torch.Tensor:
    """Predicted class of many 2-D points, in chunks to bound memory."""
    dtype = next(model.parameters()).dtype
    return torch.cat([model(c.to(dtype)).argmax(dim=1) for c in x.split(chunk)])


def boundary_distance(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Minimal L2 distance from each point to the decision boundary, (N,): along `n_rays` directions, march
    out in `step`s to the first change of class, bisect that interval, take the minimum over rays. A point
    whose class never changes within `r_max` gets `r_max`; a boundary thinner than `step` can be missed."""
    n_rays, r_max, step = 120, 40.0, 0.5  # rays 3 degrees apart
    angles = torch.arange(n_rays, dtype=x.dtype) * (2 * math.pi / n_rays)
    dirs = torch.stack([angles.cos(), angles.sin()], dim=1)  # (R, 2)
    radii = torch.arange(1, int(r_max / step) + 1, dtype=x.dtype) * step  # (S,)
    own = predict(model, x)
    pts = x[:, None, None, :] + radii[None, None, :, None] * dirs[None, :, None, :]  # (N, R, S, 2)
    flipped = predict(model, pts.reshape(-1, 2)).view(pts.shape[:3]) != own[:, None, None]
    hit = flipped.any(dim=2)
    first = flipped.to(x.dtype).argmax(dim=2)  # index of the first flipped radius (0 if none)
    hi = torch.where(hit, radii[first], torch.full_like(radii[first], r_max))
    lo = (hi - step).clamp_min(0)
    for _ in range(12):  # bisections
        mid = (lo + hi) / 2
        mid_pts = (x[:, None, :] + mid[..., None] * dirs[None]).reshape(-1, 2)
        moved = predict(model, mid_pts).view(mid.shape) != own[:, None]
        hi, lo = torch.where(moved, mid, hi), torch.where(moved, lo, mid)
    return hi.min(dim=1).values


def attack_toy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: ToyConfig) -> torch.Tensor:
    """App. C.1's attack: L2 PGD, eps 15, 10 steps of size 2, unbounded coordinates."""
    steps = {"steps": cfg.steps, "step_size": cfg.step_size, "random_init": cfg.random_init}
    return pgd(
        model, x, y, cfg.eps, norm="l2", bounds=None, generator=torch.Generator().manual_seed(0), **steps
    )


def evaluate_toy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: ToyConfig) -> dict[str, float]:
    """Accuracies (%), mean boundary distance; ray search (near-exhaustive in 2-D) is normally <= PGD's."""
    correct, dist = predict(model, x) == y, boundary_distance(model, x)
    robust = predict(model, attack_toy(model, x, y, cfg)) == y
    hits = {"clean_acc": correct, "pgd_acc": robust, "ray_search_acc": correct & (dist >= cfg.eps)}
    percent = {name: 100 * h.double().mean().item() for name, h in hits.items()}
    return {**percent, "boundary_dist": dist.mean().item()}


def run_seed(cfg: ToyConfig, seed: int, lam: float) -> tuple[nn.Module, nn.Module, dict]:
    """Train vanilla and PAG for one seed; evaluate both on the seed's fresh test set (on one thread)."""
    metrics: dict = {"seed": seed, "lam": lam}
    models = []
    with _single_thread():
        x_test, y_test = make_test_data(cfg, seed)
        for name, weight in (("vanilla", 0.0), ("pag", lam)):
            t0 = time.perf_counter()
            models.append(train_toy(cfg, seed, weight))
            train_s = round(time.perf_counter() - t0, 2)
            metrics[name] = {**evaluate_toy(models[-1], x_test, y_test, cfg), "train_s": train_s}
    return models[0], models[1], metrics


def _metrics_only(args: tuple[ToyConfig, int, float]) -> dict:
    """A worker's job: one seed's metrics (the models stay in the worker)."""
    return run_seed(*args)[2]


def _pag_only(args: tuple[ToyConfig, int, float]) -> dict:
    """A sweep's job: one seed's PAG run at one lambda (lambda 0 is the vanilla run)."""
    cfg, seed, lam = args
    with _single_thread():
        model = train_toy(cfg, seed, lam)
        return {"seed": seed, **evaluate_toy(model, *make_test_data(cfg, seed), cfg)}


def _map(fn, cfg: ToyConfig, seeds: list[int], lam: float, desc: str, progress: bool) -> list:
    """fn(cfg, seed, lam) per seed in `cfg.workers` processes (spawned: no forked torch state), in order."""
    jobs = [(cfg, s, lam) for s in seeds]
    if cfg.workers == 1:
        return [fn(j) for j in tqdm(jobs, desc=desc, disable=not progress)]
    with ProcessPoolExecutor(cfg.workers, mp_context=get_context("spawn")) as pool:
        return list(tqdm(pool.map(fn, jobs), total=len(jobs), desc=desc, disable=not progress))


def run_seeds(cfg: ToyConfig, seeds: list[int], lam: float, progress: bool = True) -> list[dict]:
    """Metrics of every seed, in `cfg.workers` processes; a seed's numbers do not depend on how many."""
    return _map(_metrics_only, cfg, seeds, lam, f"seeds, lambda {lam:g}", progress)


def sweep(lams: list[float], seeds: list[int], cfg: ToyConfig, progress: bool = True) -> list[dict]:
    """To choose lambda: PAG's metrics per seed and their summary for each lambda, on held-out seeds."""
    rows = []
    for lam in lams:
        runs = _map(_pag_only, cfg, seeds, lam, f"sweep, lambda {lam:g}", progress)
        row = {"lam": lam, "grad_of": cfg.grad_of, "k": cfg.k, "seeds": list(seeds), "per_seed": runs}
        rows.append({**row, **{m: describe([r[m] for r in runs]) for m in runs[0] if m != "seed"}})
    return rows
