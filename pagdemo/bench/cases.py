"""What the benchmark times: training steps per PAG implementation, PGD-20 against torchattacks,
the app's grid, the sampled approximation's error, and a profile of one step."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from pagdemo.attacks import pgd
from pagdemo.bench.harness import _autocast, _sync, interleaved
from pagdemo.models import build_model
from pagdemo.pag.fastpag import input_gradients_explicit
from pagdemo.pag.losses import IMPLS, PAGStep, cosine_misalignment, pag_loss
from pagdemo.pag.sampled import sampled_misalignment
from pagdemo.threat import eval_step
from pagdemo.viz.grid import GridSpec, pag_grid_steps

if TYPE_CHECKING:
    from pagdemo.bench import BenchConfig

Setup = tuple[nn.Module, torch.optim.Optimizer, tuple[torch.Tensor, ...]]  # model, optimizer, (x, y, targets)
SAMPLED = "sampled-k1"  # the approximate impl benchmarked beside the exact ones
CPU_SKIPPED = {"compiled": "torch.compile takes minutes per shape on CPU; benchmarked on CUDA only"}
# how each timed step relates to the reference loss (any other: "exact (equals loop)")
KINDS = {
    "vanilla": "no PAG term",
    SAMPLED: "APPROXIMATE (1 random class per image, scaled by C)",
    "batched": "exact in eval-mode BN; train-mode BN couples the C*B copies",
}


def _model(cfg: BenchConfig, device: torch.device) -> nn.Module:
    """A randomly initialized model of the bench's kind (speed only)."""
    model = build_model(cfg.model, cfg.num_classes).to(device)
    return model.to(memory_format=torch.channels_last) if cfg.channels_last else model


def _images(cfg: BenchConfig, n: int, device: torch.device, gen: torch.Generator) -> torch.Tensor:
    """n random images in the model's layout."""
    x = torch.rand(n, 3, cfg.image_size, cfg.image_size, generator=gen).to(device)
    return x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x


def _training_setup(cfg: BenchConfig, device: torch.device, gen: torch.Generator, b: int) -> Setup:
    """A train-mode model, the paper's SGD and a synthetic batch (x, y, PAG targets) of b images."""
    model = _model(cfg, device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)  # the paper's
    x = _images(cfg, b, device, gen)
    y = torch.randint(0, cfg.num_classes, (b,), generator=gen).to(device)
    targets = torch.randn(b, cfg.num_classes, *x.shape[1:], generator=gen).to(device)
    return model, opt, (x, y, targets)


def _train_step(setup: Setup, impl: str, cfg: BenchConfig, device: torch.device) -> Callable[[], None]:
    """One SGD step of `_training_setup`'s model with the vanilla loss, or the PAG loss of `impl`."""
    model, opt, (x, y, targets) = setup

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with _autocast(device):
            if impl == "vanilla":
                loss = F.cross_entropy(model(x), y)
            elif impl == SAMPLED:
                logits, cos = sampled_misalignment(model, x, targets, k=1, grad_of=cfg.grad_of)
                loss = F.cross_entropy(logits, y) + cfg.lam * cos
            else:
                loss, _ = pag_loss(model, x, y, targets, cfg.lam, PAGStep(impl, grad_of=cfg.grad_of))
        loss.backward()
        opt.step()

    return step


def step_cases(cfg: BenchConfig, device: torch.device) -> tuple[list[str], dict[str, str]]:
    """(names to time, skipped name -> reason); the reference `loop` always runs, for the ratios."""
    names = list(cfg.impls) or [*IMPLS, SAMPLED]
    if unknown := [n for n in names if n not in IMPLS and n != SAMPLED]:
        raise ValueError(f"unknown PAG implementation(s) {unknown}; choose from {sorted(IMPLS) + [SAMPLED]}")
    cpu_default = device.type == "cpu" and not cfg.impls  # an impl asked for by name runs
    skipped = {n: CPU_SKIPPED[n] for n in names if cpu_default and n in CPU_SKIPPED}
    names = ["loop"] + [n for n in names if n not in skipped and n != "loop"]
    return ["vanilla"] + names, skipped


def bench_steps(cfg: BenchConfig, device: torch.device, gen: torch.Generator) -> tuple[list[dict], dict]:
    """Rows of images/second and peak memory per batch size and implementation, and the cases skipped."""
    names, skipped = step_cases(cfg, device)
    rows = []
    for b in cfg.batch_sizes:
        setup = _training_setup(cfg, device, gen, b)  # shared by the cases: one memory baseline
        steps = {name: _train_step(setup, name, cfg, device) for name in names}
        stats, _ = interleaved(steps, cfg, device, f"train steps, batch {b}")
        vanilla, loop = stats["vanilla"]["median_s"], stats["loop"]["median_s"]
        for name, st in stats.items():
            rows.append({"case": name, "batch": b, "semantics": KINDS.get(name, "exact (equals loop)"), **st})
            if "error" not in st:
                t = st["median_s"]
                rows[-1].update(img_per_s=b / t, x_vanilla_time=t / vanilla, speedup_vs_loop=loop / t)
    return rows, skipped


def bench_pgd(cfg: BenchConfig, device: torch.device, gen: torch.Generator) -> dict:
    """PGD-20 linf evaluation, ours vs torchattacks', same model and data, no random start."""
    import torchattacks

    model = _model(cfg, device).eval()
    x = _images(cfg, cfg.pgd_batch, device, gen)
    y = torch.randint(0, cfg.num_classes, (cfg.pgd_batch,), generator=gen).to(device)
    alpha = eval_step(cfg.pgd_eps, 20)
    ta = torchattacks.PGD(model, eps=cfg.pgd_eps, alpha=alpha, steps=20, random_start=False)
    attacks = {
        "ours": lambda: pgd(model, x, y, cfg.pgd_eps, norm="linf", steps=20, random_init=False),
        "torchattacks": lambda: ta(x, y),
    }
    with _autocast(device):
        stats, adv = interleaved(attacks, replace(cfg, repeats=cfg.pgd_repeats), device, "PGD-20")
    out: dict = {"batch": cfg.pgd_batch, "eps": cfg.pgd_eps, "steps": 20}
    for name, st in stats.items():
        out[name] = {**st, "img_per_s": cfg.pgd_batch / st["median_s"]}
    ours, theirs = out["ours"], out["torchattacks"]
    out["ours_vs_torchattacks_speed"] = ours["img_per_s"] / theirs["img_per_s"]
    out["ours_vs_torchattacks_speed_best"] = theirs["min_s"] / ours["min_s"]  # of the fastest runs
    out["same_pixels_frac"] = (adv["ours"] - adv["torchattacks"]).abs().le(1e-6).float().mean().item()
    return out


def bench_grid(cfg: BenchConfig, device: torch.device, gen: torch.Generator) -> dict:
    """How soon the app's grid (via `pag_grid_steps`) shows its clean frame, its first step's, its last."""
    models = [_model(cfg, device).eval() for _ in range(cfg.grid_models)]
    x = _images(cfg, 1, device, gen)[0]
    classes = list(range(cfg.num_classes))
    names = [f"model {i}" for i in range(cfg.grid_models)]
    spec = GridSpec(names, [str(c) for c in classes], classes, "bench")
    runs = []
    for _ in range(cfg.warmup + cfg.repeats):
        start, cpu_start, marks, frames = time.perf_counter(), time.process_time(), [], 0
        grid = pag_grid_steps(models, x, spec, "l2", cfg.grid_eps, cfg.grid_steps, min_interval=0.0)
        with _autocast(device):
            for _frame in grid:
                frames += 1
                if len(marks) < 2:
                    _sync(device)
                    marks.append(time.perf_counter() - start)
        _sync(device)
        runs.append((*marks[:2], time.perf_counter() - start, time.process_time() - cpu_start, frames))
    first_frame_s, first_step_s, total_s, cpu_s, frames = zip(*runs[cfg.warmup :])
    return {
        "models": cfg.grid_models,
        "targets": cfg.num_classes,
        "eps_l2": cfg.grid_eps,
        "steps": cfg.grid_steps,
        "path": "pagdemo.viz.grid.pag_grid_steps (as the app), a frame rendered after every step",
        "runs": len(total_s),
        "frames": frames[-1],
        "first_frame_s": statistics.median(first_frame_s),
        "first_step_s": statistics.median(first_step_s),
        "total_s": statistics.median(total_s),
        "total_min_s": min(total_s),
        "total_max_s": max(total_s),
        "cpu_util": sum(cpu_s) / sum(total_s),
    }


def _pag_param_grad(
    model: nn.Module, x: torch.Tensor, targets: torch.Tensor, cfg: BenchConfig, draw: torch.Generator | None
) -> torch.Tensor:
    """Flattened parameter gradient of the PAG term alone: exact, or sampled when `draw` is given."""
    model.zero_grad(set_to_none=True)
    if draw is None:
        _, grads = input_gradients_explicit(model, x, cfg.grad_of)
        cosine_misalignment(grads, targets).backward()
    else:
        sampled_misalignment(model, x, targets, k=1, grad_of=cfg.grad_of, generator=draw)[1].backward()
    grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in model.parameters()]
    return torch.cat([g.flatten().float() for g in grads])


def bench_approx_error(cfg: BenchConfig, device: torch.device, gen: torch.Generator) -> dict:
    """Error of the sampled (k=1) PAG-term gradient vs the exact one, in fp32, per BatchNorm mode."""
    b = min(cfg.batch_sizes)
    x = _images(cfg, b, device, gen)
    targets = torch.randn(b, cfg.num_classes, *x.shape[1:], generator=gen).to(device)
    out: dict = {"impl": SAMPLED, "batch": b, "draws": cfg.approx_draws}
    for mode in ("train", "eval"):
        model = _model(cfg, device).train(mode == "train")
        exact = _pag_param_grad(model, x, targets, cfg, None)
        draw = torch.Generator().manual_seed(cfg.seed)
        samples = [_pag_param_grad(model, x, targets, cfg, draw) for _ in range(cfg.approx_draws)]
        samples = torch.stack(samples)
        out[mode] = {
            "cos_to_exact_per_draw": F.cosine_similarity(samples, exact[None]).mean().item(),
            "rel_err_per_draw": ((samples - exact).norm(dim=1) / exact.norm()).mean().item(),
            "rel_err_of_mean": ((samples.mean(0) - exact).norm() / exact.norm()).item(),
        }
    return out


def bench_profile(cfg: BenchConfig, device: torch.device, gen: torch.Generator) -> dict:
    """Where one training step's time goes, per implementation: operators by own device (or CPU) time."""
    from torch.profiler import ProfilerActivity, profile

    b = max(cfg.batch_sizes)
    setup = _training_setup(cfg, device, gen, b)
    cuda = device.type == "cuda"
    out: dict = {"batch": b, "sorted_by": "self CUDA time" if cuda else "self CPU time"}
    for impl in cfg.profile:
        step = _train_step(setup, impl, cfg, device)
        for _ in range(max(cfg.warmup, 1)):  # compiles, picks cuDNN algorithms
            step()
        _sync(device)
        with profile(activities=[ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * cuda) as prof:
            step()
            _sync(device)
        order = "self_device_time_total" if cuda else "self_cpu_time_total"
        out[impl] = prof.key_averages().table(sort_by=order, row_limit=cfg.profile_rows)
    return out
