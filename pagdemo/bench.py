"""Benchmark: training-step throughput (vanilla vs every PAG implementation), PGD-20 evaluation
(ours next to torchattacks'), and the latency of the app's targeted-PGD grid.

    python -m pagdemo.bench [--device cpu|cuda] [--json FILE] [--small]

Data are synthetic and models randomly initialized: only speed and memory are measured.
On CUDA everything runs under bf16 autocast. Every timing is a median over `repeats` runs after
`warmup` untimed runs (which also absorb torch.compile's compilation), with min and max; the
cases compared with each other run round-robin, so that a busy shared CPU slows them alike.
"""
from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import platform
import re
import statistics
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, replace
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from pagdemo.attacks import pgd
from pagdemo.fastpag import input_gradients_explicit
from pagdemo.grid import GridSpec, pag_grid_steps
from pagdemo.losses import PAG_IMPLS, cosine_misalignment, pag_loss, sampled_misalignment, sampled_pag_loss
from pagdemo.models import build_model
from pagdemo.provenance import git_commit

SAMPLED = "sampled-k1"  # the approximate impl benchmarked beside the exact ones
CPU_SKIPPED = {"compiled": "torch.compile takes minutes per shape on CPU; benchmarked on CUDA only"}


@dataclass(frozen=True)
class BenchConfig:
    device: str = "cuda"
    model: str = "resnet18"
    image_size: int = 32  # pixels per side (CIFAR-10)
    num_classes: int = 10
    batch_sizes: tuple[int, ...] = (64, 256)  # training-step batches
    impls: tuple[str, ...] = ()  # PAG implementations to time; () = all registered (+ the sampled approximation)
    warmup: int = 3  # untimed runs per case
    repeats: int = 10  # timed runs per case
    lam: float = 0.4  # PAG weight (Class Mean, CIFAR-10)
    grad_of: str = "logsoftmax"  # the authors' code
    channels_last: bool = False  # NHWC model and inputs (GPU tensor-core layout)
    pgd_batch: int = 256  # images per PGD-20 evaluation batch
    pgd_eps: float = 8 / 255  # linf radius, [0, 1] pixel units
    pgd_repeats: int = 20  # timed PGD-20 runs per attack: one run's spread (~10% on a GPU) hides a 5% difference
    grid_models: int = 3  # the app's grid: rows = models
    grid_eps: float = 4.0  # L2 radius of the app's targeted PGD (its default), [0, 1] pixel units
    grid_steps: int = 20
    approx_draws: int = 8  # draws of the sampled approximation when measuring its gradient error
    threads: int = 0  # CPU threads for torch; 0 = torch's default
    profile: tuple[str, ...] = ()  # implementations to profile (one step at the largest batch), e.g. ("explicit",)
    profile_rows: int = 20  # operators listed per profile
    seed: int = 0
    json: str | None = None  # where to write the results


SMALL = dict(batch_sizes=(8, 16), warmup=1, repeats=2, pgd_batch=16, pgd_repeats=3, approx_draws=4)  # ~4 min on 2 idle cores


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device):
    """bf16 autocast on CUDA, as in training; full fp32 on CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def _rss_kib(field: str) -> int | None:
    """A field of /proc/self/status in KiB (Linux only)."""
    try:
        with open("/proc/self/status") as f:
            return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1))
    except (OSError, AttributeError):
        return None


def _reset_peak_rss() -> bool:
    """Return freed heap to the OS (glibc), then reset the process's peak RSS (Linux >= 4.0)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # else memory freed by earlier cases still counts
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_method(device: torch.device) -> str:
    """What `peak_mem_mb` means on this device."""
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated per run (max over runs)"
    if _reset_peak_rss() and _rss_kib("VmHWM") is not None:
        return ("process peak RSS per run (VmHWM, reset via /proc/self/clear_refs after malloc_trim; max over runs); "
                "includes torch itself (~0.3-0.5 GB) and the shared model and optimizer")
    return "unavailable on this OS"


@contextmanager
def peak_memory(device: torch.device) -> Iterator[dict]:
    """Fill the yielded dict with the peak memory (MiB) of the block."""
    out: dict = {}
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        _reset_peak_rss()
    yield out
    if device.type == "cuda":
        _sync(device)
        out["peak_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    elif (kib := _rss_kib("VmHWM")) is not None:
        out["peak_mem_mb"] = round(kib / 1024, 1)


def measure(fn: Callable[[], object], device: torch.device) -> tuple[float, float, float | None, object]:
    """(wall seconds, process CPU seconds, peak MiB or None, output) of one call of `fn`.

    CPU seconds over wall seconds near the thread count means the CPU was ours; far below, shared.
    """
    with peak_memory(device) as mem:
        start, cpu_start = time.perf_counter(), time.process_time()
        out = fn()
        _sync(device)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return seconds, cpu_seconds, mem.get("peak_mem_mb"), out


def interleaved(fns: dict[str, Callable[[], object]], cfg: BenchConfig, device: torch.device,
                desc: str) -> tuple[dict[str, dict], dict[str, object]]:
    """Time several cases round-robin, so that load from other processes hits them alike.

    Returns per case: runs, median/min/max seconds, the untimed warmup's seconds (it absorbs
    torch.compile) and peak memory; and each case's last output.
    """
    warm, failed = {}, {}
    for name, fn in fns.items():
        try:  # one case that breaks on this device (e.g. torch.compile) must not lose the others' numbers
            warm[name] = sum(measure(fn, device)[0] for _ in range(cfg.warmup))
        except Exception as e:  # noqa: BLE001 - recorded in the JSON, with its message
            failed[name] = f"{type(e).__name__}: {e}"[:500]
    fns = {name: fn for name, fn in fns.items() if name in warm}
    runs: dict[str, list] = {name: [] for name in fns}
    last = {}
    for _ in tqdm(range(cfg.repeats), desc=desc, leave=False):
        for name, fn in fns.items():
            seconds, cpu_seconds, peak, last[name] = measure(fn, device)
            runs[name].append((seconds, cpu_seconds, peak))
    stats = {}
    for name, rs in runs.items():
        times, peaks = [r[0] for r in rs], [r[2] for r in rs if r[2] is not None]
        stats[name] = {"runs": len(times), "median_s": statistics.median(times), "min_s": min(times),
                       "max_s": max(times), "warmup_s": warm[name], "peak_mem_mb": max(peaks, default=None),
                       "cpu_util": sum(r[1] for r in rs) / sum(times)}
    stats.update({name: {"error": why} for name, why in failed.items()})
    return stats, last


def _model(cfg: BenchConfig, device: torch.device) -> nn.Module:
    model = build_model(cfg.model, cfg.num_classes).to(device)
    return model.to(memory_format=torch.channels_last) if cfg.channels_last else model


def _images(cfg: BenchConfig, n: int, device: torch.device, gen: torch.Generator) -> torch.Tensor:
    x = torch.rand(n, 3, cfg.image_size, cfg.image_size, generator=gen).to(device)
    return x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x


def _training_setup(cfg: BenchConfig, device: torch.device, gen: torch.Generator,
                    b: int) -> tuple[nn.Module, torch.optim.Optimizer, tuple[torch.Tensor, ...]]:
    """A train-mode model, the paper's SGD and a synthetic batch (x, y, PAG targets) of b images."""
    model = _model(cfg, device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)  # the paper's
    x = _images(cfg, b, device, gen)
    y = torch.randint(0, cfg.num_classes, (b,), generator=gen).to(device)
    targets = torch.randn(b, cfg.num_classes, *x.shape[1:], generator=gen).to(device)
    return model, opt, (x, y, targets)


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, batch: tuple[torch.Tensor, ...], impl: str,
                cfg: BenchConfig, device: torch.device) -> Callable[[], None]:
    """One SGD step with the vanilla loss, or the PAG loss of `impl`."""
    x, y, targets = batch

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with _autocast(device):
            if impl == "vanilla":
                loss = F.cross_entropy(model(x), y)
            elif impl == SAMPLED:
                loss, _ = sampled_pag_loss(model, x, y, targets, cfg.lam, k=1, grad_of=cfg.grad_of)
            else:
                loss, _ = pag_loss(model, x, y, targets, cfg.lam, grad_of=cfg.grad_of, impl=impl)
        loss.backward()
        opt.step()
    return step


def step_cases(cfg: BenchConfig, device: torch.device) -> tuple[list[str], dict[str, str]]:
    """(names to time, skipped name -> reason); the reference `loop` always runs, for the ratios."""
    names = list(cfg.impls) or [*PAG_IMPLS, SAMPLED]
    unknown = [n for n in names if n not in PAG_IMPLS and n != SAMPLED]
    if unknown:
        raise ValueError(f"unknown PAG implementation(s) {unknown}; choose from {sorted(PAG_IMPLS) + [SAMPLED]}")
    skipped = {n: CPU_SKIPPED[n] for n in names if device.type == "cpu" and n in CPU_SKIPPED and not cfg.impls}
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


def bench_steps(cfg: BenchConfig, device: torch.device, gen: torch.Generator) -> tuple[list[dict], dict[str, str]]:
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
            rows.append({"case": name, "batch": b, "semantics": _kind(name), **st, "img_per_s": b / st["median_s"],
                         "x_vanilla_time": st["median_s"] / ref[0], "speedup_vs_loop": ref[1] / st["median_s"]})
    return rows, skipped


def bench_pgd(cfg: BenchConfig, device: torch.device, gen: torch.Generator) -> dict:
    """PGD-20 linf evaluation, ours vs torchattacks', same model and data, no random start."""
    import torchattacks

    model = _model(cfg, device).eval()
    x = _images(cfg, cfg.pgd_batch, device, gen)
    y = torch.randint(0, cfg.num_classes, (cfg.pgd_batch,), generator=gen).to(device)
    ta = torchattacks.PGD(model, eps=cfg.pgd_eps, alpha=2 * cfg.pgd_eps / 20, steps=20, random_start=False)
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
    out["ours_vs_torchattacks_speed_best"] = out["torchattacks"]["min_s"] / out["ours"]["min_s"]  # fastest run each
    out["same_pixels_frac"] = (adv["ours"] - adv["torchattacks"]).abs().le(1e-6).float().mean().item()
    return out


def bench_grid(cfg: BenchConfig, device: torch.device, gen: torch.Generator) -> dict:
    """The app's grid through the app's own path (`visualize.pag_grid_steps`, rendering included).

    first_frame_s: the clean grid a visitor sees at once; first_step_s: the first frame after a
    PGD step (the app streams at most one frame per `min_interval`, here every step); total_s: all.
    """
    models = [_model(cfg, device).eval() for _ in range(cfg.grid_models)]
    x = _images(cfg, 1, device, gen)[0]
    spec = GridSpec([f"model {i}" for i in range(cfg.grid_models)], [str(c) for c in range(cfg.num_classes)],
                    list(range(cfg.num_classes)), "bench")
    runs = []
    for _ in range(cfg.warmup + cfg.repeats):
        start, cpu_start, marks, frames = time.perf_counter(), time.process_time(), [], 0
        with _autocast(device):
            for frame in pag_grid_steps(models, x, spec, "l2", cfg.grid_eps, cfg.grid_steps, min_interval=0.0):
                frames += 1
                if len(marks) < 2:
                    _sync(device)
                    marks.append(time.perf_counter() - start)
        _sync(device)
        runs.append((marks[0], marks[1], time.perf_counter() - start, time.process_time() - cpu_start, frames))
    timed = runs[cfg.warmup:]
    total_s = [r[2] for r in timed]
    return {"models": cfg.grid_models, "targets": cfg.num_classes, "eps_l2": cfg.grid_eps, "steps": cfg.grid_steps,
            "path": "pagdemo.visualize.pag_grid_steps (as the app), a frame rendered after every step",
            "runs": len(total_s), "frames": runs[-1][4], "first_frame_s": statistics.median(r[0] for r in timed),
            "first_step_s": statistics.median(r[1] for r in timed), "total_s": statistics.median(total_s),
            "total_min_s": min(total_s), "total_max_s": max(total_s),
            "cpu_util": sum(r[3] for r in timed) / sum(total_s)}


def _pag_param_grad(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, cfg: BenchConfig,
                    draw: torch.Generator | None) -> torch.Tensor:
    """Flattened parameter gradient of the PAG term alone: exact, or sampled when `draw` is given."""
    model.zero_grad(set_to_none=True)
    if draw is None:
        _, grads = input_gradients_explicit(model, x, cfg.grad_of)
        cosine_misalignment(grads, targets).backward()
    else:
        sampled_misalignment(model, x, targets, k=1, grad_of=cfg.grad_of, generator=draw)[1].backward()
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten().float()
                      for p in model.parameters()])


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
        samples = torch.stack([_pag_param_grad(model, x, targets, cfg, draw) for _ in range(cfg.approx_draws)])
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
        out[impl] = prof.key_averages().table(sort_by="self_device_time_total" if cuda else "self_cpu_time_total",
                                              row_limit=cfg.profile_rows)
    return out


def environment(cfg: BenchConfig, device: torch.device) -> dict:
    """What the numbers were measured on."""
    env = {"date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "device": device.type, "torch": torch.__version__, "python": platform.python_version(),
           "cpu": _cpu_name(), "cpu_threads": torch.get_num_threads(), "memory": memory_method(device),
           "autocast": "bf16" if device.type == "cuda" else "none (fp32)", "commit": git_commit()}
    if hasattr(os, "getloadavg"):
        env["load_avg_1min_at_start"] = os.getloadavg()[0]  # other processes sharing the CPU skew CPU timings
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return re.search(r"model name\s*:\s*(.*)", f.read()).group(1)
    except (OSError, AttributeError):
        return platform.processor() or "unknown"


def run_bench(cfg: BenchConfig) -> dict:
    """Every benchmark; returns the JSON-ready results."""
    if cfg.repeats < 1 or min(cfg.batch_sizes) < 1:
        raise ValueError(f"repeats and batch sizes must be >= 1, got {cfg.repeats} and {cfg.batch_sizes}")
    if unknown := [i for i in cfg.profile if i not in ("vanilla", *PAG_IMPLS, SAMPLED)]:
        raise ValueError(f"cannot profile {unknown}; choose from {['vanilla', *sorted(PAG_IMPLS), SAMPLED]}")
    device = torch.device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda asked for, but torch sees no CUDA device")
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest algorithms
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    start = time.perf_counter()
    result = {"config": asdict(cfg), "env": environment(cfg, device)}
    result["train_step"], result["skipped"] = bench_steps(cfg, device, gen)
    sections = {"pgd20_eval": bench_pgd, "app_grid": bench_grid}
    if SAMPLED in step_cases(cfg, device)[0]:
        sections["approx_error"] = bench_approx_error
    if cfg.profile:
        sections["profile"] = bench_profile
    for key, fn in sections.items():
        try:  # a section that breaks (a missing torchattacks, say) must not lose the others
            result[key] = fn(cfg, device, gen)
        except Exception as e:  # noqa: BLE001 - recorded in the JSON
            result["skipped"][key] = f"failed: {type(e).__name__}: {e}"[:500]
    result["bench_wall_s"] = time.perf_counter() - start
    if hasattr(os, "getloadavg"):
        result["env"]["load_avg_1min_at_end"] = os.getloadavg()[0]
    return result


def format_tables(result: dict) -> str:
    """Markdown tables of a result, for the README."""
    env = result["env"]
    hw = env.get("gpu", env["cpu"] + f", {env['cpu_threads']} threads")
    lines = [f"{env['date_utc']}, {hw}, torch {env['torch']}, autocast {env['autocast']}, "
             f"model {result['config']['model']}, median of {result['config']['repeats']} runs (min-max)", "",
             "| step | batch | img/s | ms/step (min-max) | x vanilla time | speedup vs loop | peak MiB | CPU util | semantics |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["train_step"]:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['batch']} | failed: {r['error'][:120]} | | | | | | {r['semantics']} |")
            continue
        lines.append(f"| {r['case']} | {r['batch']} | {r['img_per_s']:.1f} | {1e3 * r['median_s']:.0f} "
                     f"({1e3 * r['min_s']:.0f}-{1e3 * r['max_s']:.0f}) | {r['x_vanilla_time']:.1f} | "
                     f"{r['speedup_vs_loop']:.2f} | {r['peak_mem_mb']} | {r['cpu_util']:.2f} | {r['semantics']} |")
    p = result.get("pgd20_eval")
    lines += [""] if p is None else ["", f"PGD-20 linf eval, batch {p['batch']}: ours {p['ours']['img_per_s']:.1f} img/s, torchattacks "
              f"{p['torchattacks']['img_per_s']:.1f} img/s (ratio of medians {p['ours_vs_torchattacks_speed']:.2f}, of best runs "
              f"{p['ours_vs_torchattacks_speed_best']:.2f}, {p['ours']['runs']} runs each; "
              f"identical pixels {100 * p['same_pixels_frac']:.1f}%)"]
    g = result.get("app_grid")
    lines += [] if g is None else [f"App grid ({g['models']} models x {g['targets']} targets, L2 eps {g['eps_l2']}, {g['steps']} steps): "
              f"clean grid {1e3 * g['first_frame_s']:.0f} ms, first PGD step {1e3 * g['first_step_s']:.0f} ms, "
              f"total {g['total_s']:.2f} s"]
    if "approx_error" in result:
        a = result["approx_error"]
        for mode in ("train", "eval"):
            m = a[mode]
            lines.append(f"{a['impl']} gradient error ({mode}-mode BN, batch {a['batch']}, {a['draws']} draws): "
                         f"cosine to exact {m['cos_to_exact_per_draw']:.3f}, relative error per draw "
                         f"{m['rel_err_per_draw']:.2f}, of their mean {m['rel_err_of_mean']:.2f}")
    for name, why in result["skipped"].items():
        lines.append(f"Skipped {name}: {why}")
    prof = result.get("profile", {})
    for impl in (i for i in result["config"].get("profile", ()) if i in prof):
        lines += ["", f"Profile of one `{impl}` step, batch {prof['batch']}, by {prof['sorted_by']}:", "", prof[impl]]
    return "\n".join(lines)


def parse_config(argv: list[str] | None = None) -> BenchConfig:
    """Command-line flags -> BenchConfig; --small sets the CPU-sized defaults that other flags override."""
    p = argparse.ArgumentParser(prog="python -m pagdemo.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    p.add_argument("--model", default=None, help="a pagdemo model name (default resnet18)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    p.add_argument("--impls", nargs="+", default=None, help="PAG implementations (default: all)")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--pgd-batch", type=int, default=None)
    p.add_argument("--pgd-repeats", type=int, default=None, help="timed PGD-20 runs per attack (default 20)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--profile", nargs="+", default=None, metavar="IMPL",
                   help="also profile one training step of these implementations (e.g. explicit) at the largest batch")
    p.add_argument("--small", action="store_true", help="CPU-sized settings (under 5 minutes on 2 cores)")
    a = p.parse_args(argv)
    cfg = BenchConfig(device=a.device, json=a.json, channels_last=a.channels_last)
    if a.small:
        cfg = replace(cfg, **SMALL)
    given = {"model": a.model, "batch_sizes": a.batch_sizes and tuple(a.batch_sizes), "impls": a.impls and tuple(a.impls),
             "repeats": a.repeats, "warmup": a.warmup, "pgd_batch": a.pgd_batch,
             "pgd_repeats": a.pgd_repeats, "threads": a.threads, "profile": a.profile and tuple(a.profile)}
    return replace(cfg, **{k: v for k, v in given.items() if v is not None})


def save_json(result: dict, path: str) -> None:
    """Write the results where the README's tables are built from."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)


def main(argv: list[str] | None = None) -> dict:
    """CLI entry point: run, write the JSON, print the tables."""
    cfg = parse_config(argv)
    result = run_bench(cfg)
    if cfg.json:
        save_json(result, cfg.json)
    print(format_tables(result))
    return result


if __name__ == "__main__":
    try:
        main()
    except ValueError as e:  # bad flags: say what was wrong, no traceback
        raise SystemExit(f"error: {e}") from None
