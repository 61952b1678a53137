"""`pagdemo bench`: the speed and memory of training steps (vanilla, every PAG implementation), of PGD-20
(ours and torchattacks') and of the app's grid, on synthetic data and random weights (docs/bench/README.md).
`harness` times and measures memory, `cases` holds what is timed, `tables` prints the results."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from pagdemo.bench import cases
from pagdemo.bench.cases import SAMPLED, step_cases
from pagdemo.bench.harness import memory_method
from pagdemo.bench.tables import format_tables
from pagdemo.options import flag
from pagdemo.pag.losses import IMPLS
from pagdemo.paper import LAMBDAS
from pagdemo.records.files import write_json
from pagdemo.records.provenance import cpu_name, git_commit, now
from pagdemo.threat import LINF_EPS, PICTURE_EPS_AT_32

__all__ = ["BenchConfig", "SMALL", "SAMPLED", "bench_config", "format_tables", "run_bench", "step_cases"]


@dataclass(frozen=True)
class BenchConfig:
    """`pagdemo bench`: what is timed, on what, how often (speed and memory only: random weights and data)."""

    device: str = flag("cuda", "cpu or cuda (default: cuda if there is a GPU)", choices=("cpu", "cuda"))
    model: str = flag("resnet18", "a pagdemo model name")
    image_size: int = 32  # pixels per side (CIFAR-10)
    num_classes: int = 10
    batch_sizes: tuple[int, ...] = flag((64, 256), "training-step batches", read="count")
    impls: tuple[str, ...] = flag((), "PAG implementations to time (default: all, and sampled-k1)")
    warmup: int = flag(3, "untimed runs per case", read="count")
    repeats: int = flag(10, "timed runs per case", read="count")
    lam: float = LAMBDAS["cifar10"]["Class Mean"]  # PAG weight (Table 3)
    grad_of: str = "logsoftmax"  # the authors' code
    channels_last: bool = flag(False, "NHWC model and inputs (the GPU tensor-core layout)")
    pgd_batch: int = flag(256, "images per PGD-20 evaluation batch", read="count")
    pgd_eps: float = LINF_EPS  # linf radius, [0, 1] pixel units
    # 20: one run's spread (~10% on a GPU) hides a 5% difference
    pgd_repeats: int = flag(20, "timed PGD-20 runs per attack", read="count")
    grid_models: int = 3  # the app's grid: rows = models
    grid_eps: float = PICTURE_EPS_AT_32["l2"]  # the app's targeted PGD's L2 radius, [0, 1] pixel units
    grid_steps: int = 20
    approx_draws: int = 8  # draws of the sampled approximation when measuring its gradient error
    threads: int = flag(0, "CPU threads for torch (default 0: torch's)")
    profile: tuple[str, ...] = flag((), "also profile one step of these implementations at the largest batch")
    profile_rows: int = 20  # operators listed per profile
    seed: int = 0
    json: str | None = flag(None, "write the results to this JSON file")
    small: bool = flag(False, "CPU-sized settings (a few minutes on 2 cores)")


# --small: ~4 min on 2 idle cores
SMALL = dict(batch_sizes=(8, 16), warmup=1, repeats=2, pgd_batch=16, pgd_repeats=3, approx_draws=4)


def bench_config(**given: Any) -> BenchConfig:
    """The flags given on the command line (None: not given) over the CPU-sized settings if --small, over the
    defaults; the device defaults to the GPU when there is one."""
    cfg = BenchConfig(device="cuda" if torch.cuda.is_available() else "cpu")
    if given.get("small"):
        cfg = replace(cfg, **SMALL)
    cfg = replace(cfg, **{k: v for k, v in given.items() if v is not None})
    if cfg.threads < 0:
        raise ValueError(f"--threads must be 0 (torch's default) or more, got {cfg.threads}")
    return cfg


def bench_command(cfg: BenchConfig, command: str) -> str:
    """`pagdemo bench`: run, write the JSON if asked, print the tables."""
    result = run_bench(cfg)
    if cfg.json:
        write_json(cfg.json, result)
    return format_tables(result)


def environment(device: torch.device) -> dict:
    """What the numbers were measured on."""
    env = {
        "date_utc": now(),
        "device": device.type,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "memory": memory_method(device),
        "autocast": "bf16" if device.type == "cuda" else "none (fp32)",
        "commit": git_commit(),
    }
    if hasattr(os, "getloadavg"):
        env["load_avg_1min_at_start"] = os.getloadavg()[0]  # other processes sharing the CPU skew CPU timings
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


def run_bench(cfg: BenchConfig) -> dict:
    """Every benchmark; returns the JSON-ready results."""
    if cfg.repeats < 1 or min(cfg.batch_sizes) < 1:
        raise ValueError(f"repeats and batch sizes must be >= 1, got {cfg.repeats} and {cfg.batch_sizes}")
    if unknown := [i for i in cfg.profile if i not in ("vanilla", *IMPLS, SAMPLED)]:
        raise ValueError(f"cannot profile {unknown}; choose from {['vanilla', *sorted(IMPLS), SAMPLED]}")
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but torch sees no CUDA device")
    threads, autotune = torch.get_num_threads(), torch.backends.cudnn.benchmark
    try:  # the bench's threads, cuDNN autotuning and seeded RNG, and the caller's back afterwards
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(cfg.seed)  # model initialization inside the cases
            if cfg.threads:
                torch.set_num_threads(cfg.threads)
            torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed shapes: let cuDNN pick its fastest
            return _run_sections(cfg, device)
    finally:
        torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark = autotune


def _run_sections(cfg: BenchConfig, device: torch.device) -> dict:
    """The timed sections in order; one that fails is recorded as skipped, with its error."""
    gen = torch.Generator().manual_seed(cfg.seed)
    start = time.perf_counter()
    result = {"config": asdict(cfg), "env": environment(device)}
    result["train_step"], result["skipped"] = cases.bench_steps(cfg, device, gen)
    sections = {"pgd20_eval": cases.bench_pgd, "app_grid": cases.bench_grid}
    if SAMPLED in step_cases(cfg, device)[0]:
        sections["approx_error"] = cases.bench_approx_error
    if cfg.profile:
        sections["profile"] = cases.bench_profile
    for key, fn in sections.items():
        try:  # a section that breaks (a missing torchattacks, say) must not lose the others
            result[key] = fn(cfg, device, gen)
        except Exception as e:  # noqa: BLE001 - recorded in the JSON
            result["skipped"][key] = f"failed: {type(e).__name__}: {e}"[:500]
    result["bench_wall_s"] = time.perf_counter() - start
    if hasattr(os, "getloadavg"):
        result["env"]["load_avg_1min_at_end"] = os.getloadavg()[0]
    return result
