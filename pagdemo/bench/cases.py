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

SAMPLED = "sampled-k1"  # the approximate impl benchmarked beside the exact ones
CPU_SKIPPED = {"compiled": "torch.compile takes minutes per shape on CPU; benchmarked on CUDA only"}


def _model(cfg: BenchConfig, device: torch.device) -> nn.Module:
    """A randomly initialized model of the bench's kind (speed only)."""
    model = build_model(cfg.model, cfg.num_classes).to(device)
    return model.to(memory_format=torch.channels_last) if cfg.channels_last else model


def _images(cfg: BenchConfig, n: int, device: torch.device, gen: torch.Generator) -> torch.Tensor:
    """n random images in the model's layout."""
    x = torch.rand(n, 3, cfg.image_size, cfg.image_size, generator=gen).to(device)
    return x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x


def _training_setup(
    cfg: BenchConfig, device: torch.device, gen: torch.Generator, b: int
) -> tuple[nn.Module, torch.optim.Optimizer, tuple[torch.Tensor, ...]]:
    """A train-mode model, the paper's SGD and a synthetic batch (x, y, PAG targets) of b images."""
    model = _model(cfg, device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)  # the paper's
    x = _images(cfg, b, device, gen)
    y = torch.randint(0, cfg.num_classes, (b,), generator=gen).to(device)
    targets = torch.randn(b, cfg.num_classes, *x.shape[1:], generator=gen).to(device)
    return model, opt, (x, y, targets)


def _train_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    batch: tuple[torch.Tensor, ...],
    impl: str,
    cfg: BenchConfig,
    device: torch.device,
) -> Callable[[], None]:
    """One SGD step with the vanilla loss, or the PAG loss of `impl`."""
    x, y, targets = batch

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
    unknown = [n for n in names if n not in IMPLS and n != SAMPLED]
    if unknown:
        raise ValueError(f"unknown PAG implementation(s) {unknown}; choose from {sorted(IMPLS) + [SAMPLED]}")
    skipped = {
        n: CPU_SKIPPED[n] for n in names if device.type == "cpu" and n in CPU_SKIPPED and not cfg.impls
    }
    names = ["loop"] + [n for n in names if n not in skipped and n != "loop"]
    return ["vanilla"] + names, skipped


def _kind(name: str) -> str:
    """How each timed step relates to the reference loss."""
    if name == "vanilla":
        return "no PAG term"
    if name == SAMPLED:
        return "APPROXIMATE (1 random class per image, scaled by C)"
    if name == "batched":
        return "exact in eval-mode BN; train-mode BN couples the C*B copies"
    return "exact (equals loop)"


def bench_steps(
    cfg: BenchConfig, device: torch.device, gen: torch.Generator
) -> tuple[list[dict], dict[str, str]]:
    """Images/second and peak memory of a training step, per batch size and implementation."""
    names, skipped = step_cases(cfg, device)
    rows = []
    for b in cfg.batch_sizes:
        model, opt, batch = _training_setup(cfg, device, gen, b)  # shared by the cases: one memory baseline
        steps = {name: _train_step(model, opt, batch, name, cfg, device) for name in names}
        stats, _ = interleaved(steps, cfg, device, f"train steps, batch {b}")
        ref = stats["vanilla"]["median_s"], stats["loop"]["median_s"]
        for name, st in stats.items():
            if "error" in st:
                rows.append({"case": name, "batch": b, "semantics": _kind(name), **st})
                continue
            rows.append(
                {
                    "case": name,
                    "batch": b,
                    "semantics": _kind(name),
                    **st,
                    "img_per_s": b / st["median_s"],
                    "x_vanilla_time": st["median_s"] / ref[0],
                    "speedup_vs_loop": ref[1] / st["median_s"],
                }
            )
    return rows, skipped


def bench_pgd(cfg: BenchConfig, device: torch.device, gen: torch.Generator) -> dict:
    """PGD-20 linf evaluation, ours vs torchattacks', same model and data, no random start."""
    import torchattacks

    model = _model(cfg, device).eval()
    x = _images(cfg, cfg.pgd_batch, device, gen)
    y = torch.randint(0, cfg.num_classes, (cfg.pgd_batch,), generator=gen).to(device)
    ta = torchattacks.PGD(
        model, eps=cfg.pgd_eps, alpha=eval_step(cfg.pgd_eps, 20), steps=20, random_start=False
    )
    attacks = {
        "ours": lambda: pgd(model, x, y, cfg.pgd_eps, norm="linf", steps=20, random_init=False),
        "torchattacks": lambda: ta(x, y),
    }
    with _autocast(device):
        stats, adv = interleaved(attacks, replace(cfg, repeats=cfg.pgd_repeats), device, "PGD-20")
    out: dict = {"batch": cfg.pgd_batch, "eps": cfg.pgd_eps, "steps": 20}
    for name, st in stats.items():
        out[name] = {**st, "img_per_s": cfg.pgd_batch / st["median_s"]}
    out["ours_vs_torchattacks_speed"] = out["ours"]["img_per_s"] / out["torchattacks"]["img_per_s"]
    out["ours_vs_torchattacks_speed_best"] = (
        out["torchattacks"]["min_s"] / out["ours"]["min_s"]
    )  # fastest run each
    out["same_pixels_frac"] = (adv["ours"] - adv["torchattacks"]).abs().le(1e-6).float().mean().item()
    return out


def bench_grid(cfg: BenchConfig, device: torch.device, gen: torch.Generator) -> dict:
    """The app's grid through the app's own path (`visualize.pag_grid_steps`, rendering included).

    first_frame_s: the clean grid a visitor sees at once; first_step_s: the first frame after a
    PGD step (the app streams at most one frame per `min_interval`, here every step); total_s: all.
    """
    models = [_model(cfg, device).eval() for _ in range(cfg.grid_models)]
    x = _images(cfg, 1, device, gen)[0]
    spec = GridSpec(
        [f"model {i}" for i in range(cfg.grid_models)],
        [str(c) for c in range(cfg.num_classes)],
        list(range(cfg.num_classes)),
        "bench",
    )
    runs = []
    for _ in range(cfg.warmup + cfg.repeats):
        start, cpu_start, marks, frames = time.perf_counter(), time.process_time(), [], 0
        with _autocast(device):
            for _frame in pag_grid_steps(
                models, x, spec, "l2", cfg.grid_eps, cfg.grid_steps, min_interval=0.0
            ):
                frames += 1
                if len(marks) < 2:
                    _sync(device)
                    marks.append(time.perf_counter() - start)
        _sync(device)
        runs.append(
            (marks[0], marks[1], time.perf_counter() - start, time.process_time() - cpu_start, frames)
        )
    timed = runs[cfg.warmup :]
    total_s = [r[2] for r in timed]
    return {
        "models": cfg.grid_models,
        "targets": cfg.num_classes,
        "eps_l2": cfg.grid_eps,
        "steps": cfg.grid_steps,
        "path": "pagdemo.visualize.pag_grid_steps (as the app), a frame rendered after every step",
        "runs": len(total_s),
        "frames": runs[-1][4],
        "first_frame_s": statistics.median(r[0] for r in timed),
        "first_step_s": statistics.median(r[1] for r in timed),
        "total_s": statistics.median(total_s),
        "total_min_s": min(total_s),
        "total_max_s": max(total_s),
        "cpu_util": sum(r[3] for r in timed) / sum(total_s),
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
    return torch.cat(
        [
            (p.grad if p.grad is not None else torch.zeros_like(p)).flatten().float()
            for p in model.parameters()
        ]
    )


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
        samples = torch.stack(
            [_pag_param_grad(model, x, targets, cfg, draw) for _ in range(cfg.approx_draws)]
        )
        out[mode] = {
            "cos_to_exact_per_draw": F.cosine_similarity(samples, exact[None]).mean().item(),
            "rel_err_per_draw": ((samples - exact).norm(dim=1) / exact.norm()).mean().item(),
            "rel_err_of_mean": ((samples.mean(0) - exact).norm() / exact.norm()).item(),
        }
    return out


def bench_profile(cfg: BenchConfig, device: torch.device, gen: torch.Generator) -> dict:
    """Where one training step's time goes, per implementation: the operators by their own device (or CPU) time."""
    from torch.profiler import ProfilerActivity, profile

    b = max(cfg.batch_sizes)
    model, opt, batch = _training_setup(cfg, device, gen, b)
    cuda = device.type == "cuda"
    out: dict = {"batch": b, "sorted_by": "self CUDA time" if cuda else "self CPU time"}
    for impl in cfg.profile:
        step = _train_step(model, opt, batch, impl, cfg, device)
        for _ in range(max(cfg.warmup, 1)):  # compiles, picks cuDNN algorithms
            step()
        _sync(device)
        with profile(activities=[ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * cuda) as prof:
            step()
            _sync(device)
        out[impl] = prof.key_averages().table(
            sort_by="self_device_time_total" if cuda else "self_cpu_time_total", row_limit=cfg.profile_rows
        )
    return out
