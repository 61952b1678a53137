"""Training: vanilla, PAG (Eq. 1 with the oi / cm / nn / rigd targets) and adversarial training.

One loop serves all of them; only the loss differs (`step_loss`). A run is a folder: the
checkpoint (weights, config, model card) is rewritten after every epoch, the full training
state (fp32 weights, optimizer momenta, epoch, step) is saved beside it in `train_state/`,
and a killed run started again with the same `--out` resumes from the last finished epoch,
also on another machine. Data order, augmentation and attack noise are drawn from
generators seeded by (seed, epoch), so a resumed run repeats the uninterrupted one.

Recipes (`--recipe`):
- paper: SGD lr 0.01, momentum 0.9, wd 1e-4, batch 64 (STL-10: 32), 100 epochs, lr x0.1 at
  50% and 75% of training (the authors' script), fp32.
- fast: batch 256, lr 0.04 (the paper's lr scaled linearly with the batch), Nesterov, one
  epoch of linear warm-up then cosine decay to 0, 30 epochs; bf16 autocast and channels_last
  on a GPU. Built for our ~25-minute H100 slots; the checkpoint records which recipe ran.
Multi-GPU: launch with `torchrun --nproc_per_node=N -m pagdemo train ...`; each process
trains on its shard of every batch (batch_size is the global batch) under DDP.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from huggingface_hub import save_torch_state_dict
from safetensors.torch import load_file
from tqdm.auto import tqdm

from pagdemo.attacks import NORMS, pgd
from pagdemo.checkpoints import (PAGClassifier, git_commit, load_checkpoint, now, save_checkpoint, shard_names,
                                 write_json)
from pagdemo.data import Dataset, augment, batches, load_dataset
from pagdemo.evaluate import resolve_device, robust_accuracy
from pagdemo.losses import GRAD_OF, PAG_IMPLS, pag_loss
from pagdemo.paper import LAMBDAS as PAPER_LAMBDAS
from pagdemo.targets import TARGETS, TeacherGradientTarget, build_target

METHODS = ("vanilla", "oi", "cm", "nn", "rigd", "adv")
PAPER_ROWS = {"oi": "One Image", "cm": "Class Mean", "nn": "Nearest Neighbor", "rigd": "RIGD linf"}
LAMBDA = {ds: {m: PAPER_LAMBDAS[ds][row] for m, row in PAPER_ROWS.items()} for ds in PAPER_LAMBDAS}  # Table 3
RECIPES = {
    "paper": {"epochs": 100, "batch_size": 64, "lr": 0.01, "schedule": "multistep-50-75", "nesterov": False},
    "fast": {"epochs": 30, "batch_size": 256, "lr": 0.04, "schedule": "warmup1-cosine", "nesterov": True},
}
DEFAULT_ARCH = {"stl10": "resnet18_stl", "synthetic": "tinycnn"}  # synthetic data is for trying things on a CPU
STATE_DIR = "train_state"


@dataclass(frozen=True)
class TrainConfig:
    out: str  # run folder: checkpoint, train_log.jsonl, train_state/
    method: str = "vanilla"  # one of METHODS; "adv" is adversarial training (pagdemo adv-train)
    lam: float | None = None  # PAG weight; None: the paper's Table 3 value for method and dataset
    grad_of: str = "logsoftmax"  # input gradient of the class "logit" (Eq. 1) or its "logsoftmax" (authors' code)
    pag_impl: str = "batched"  # a key of losses.PAG_IMPLS; "loop" is the reference
    nn_k: int = 100  # Nearest Neighbor: sampled images per class
    teacher: str | None = None  # RIGD: checkpoint folder of the robust teacher
    dataset: str = "cifar10"  # cifar10, stl10 or synthetic
    data_dir: str | None = None  # None: the dataset's default location
    limit: int | None = None  # train on a fixed class-balanced subset of this size
    arch: str | None = None  # None: resnet18 (resnet18_stl for stl10, tinycnn for synthetic)
    recipe: str = "paper"  # "paper" or "fast", see the module docstring
    epochs: int | None = None  # None: the recipe's
    batch_size: int | None = None  # global batch; None: the recipe's (paper: 32 on stl10)
    lr: float | None = None  # None: the recipe's
    momentum: float = 0.9
    weight_decay: float = 1e-4
    amp: bool | None = None  # bf16 autocast; None: on for the fast recipe on a GPU
    adv_norm: str = "linf"  # adversarial training threat model
    adv_eps: float = 8 / 255  # in [0, 1] pixel units
    adv_attack: str = "pgd"  # "pgd" (PGD-AT, Madry et al.) or "fgsm" (FGSM with random start, Wong et al. 2020)
    adv_steps: int = 10  # PGD-AT steps (step size 2.5 * eps / steps)
    seed: int = 0
    device: str = "auto"
    monitor_limit: int = 1000  # test images for the per-epoch clean accuracy (0: off)
    monitor_robust: int = 200  # of those, how many get the authors' per-epoch L2 PGD-7 (eps 0.5) check (0: off)
    keep_state: bool = False  # keep train_state/ after the last epoch (it is 2x the fp32 weights)


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Fill recipe and paper defaults, and refuse impossible settings with a clear message."""
    if cfg.method not in METHODS:
        raise ValueError(f"unknown method {cfg.method!r}; choose one of {list(METHODS)}")
    if cfg.recipe not in RECIPES:
        raise ValueError(f"unknown recipe {cfg.recipe!r}; choose one of {sorted(RECIPES)}")
    if cfg.grad_of not in GRAD_OF:
        raise ValueError(f"unknown grad_of {cfg.grad_of!r}; choose one of {list(GRAD_OF)}")
    if cfg.pag_impl not in PAG_IMPLS:
        raise ValueError(f"unknown PAG implementation {cfg.pag_impl!r}; choose one of {sorted(PAG_IMPLS)}")
    if cfg.method == "rigd" and not cfg.teacher:
        raise ValueError("method rigd needs --teacher DIR (an adversarially trained checkpoint, see pagdemo adv-train)")
    if cfg.method == "adv" and cfg.adv_norm not in NORMS:
        raise ValueError(f"unknown adversarial norm {cfg.adv_norm!r}; choose one of {list(NORMS)}")
    if cfg.method == "adv" and cfg.adv_attack not in ("pgd", "fgsm"):
        raise ValueError(f"unknown adversarial attack {cfg.adv_attack!r}; choose one of ['fgsm', 'pgd']")
    r = RECIPES[cfg.recipe]
    batch = cfg.batch_size
    if batch is None:
        batch = 32 if cfg.dataset == "stl10" and cfg.recipe == "paper" else r["batch_size"]
    lam = cfg.lam
    if lam is None:
        lam = 0.0 if cfg.method in ("vanilla", "adv") else LAMBDA.get(cfg.dataset, LAMBDA["cifar10"])[cfg.method]
    out = replace(cfg, lam=lam, epochs=r["epochs"] if cfg.epochs is None else cfg.epochs, batch_size=batch,
                  lr=r["lr"] if cfg.lr is None else cfg.lr,
                  arch=cfg.arch or DEFAULT_ARCH.get(cfg.dataset, "resnet18"))
    for name in ("epochs", "batch_size"):
        if getattr(out, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(out, name)}")
    if out.lr <= 0 or out.lam < 0:
        raise ValueError(f"lr must be > 0 and lam >= 0, got lr={out.lr}, lam={out.lam}")
    return out


def lr_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The recipe's learning rate at a global step, a pure function so resuming needs no scheduler state."""
    total = cfg.epochs * steps_per_epoch
    if RECIPES[cfg.recipe]["schedule"] == "multistep-50-75":
        return cfg.lr * (0.1 ** ((step >= total * 0.5) + (step >= total * 0.75)))
    warm = steps_per_epoch
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def fgsm_rs(model, x, y, eps: float, norm: str, generator) -> torch.Tensor:
    """FGSM with random start (Wong et al. 2020): one PGD step of size 1.25 eps from a random point."""
    return pgd(model, x, y, eps, norm=norm, steps=1, step_size=1.25 * eps, generator=generator)


def step_loss(cfg: TrainConfig, model, target, x, y, idx, generator, attacked=None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The method's training loss for one augmented batch: (loss, logits, logged parts).

    `attacked` is the unwrapped model that adversarial training attacks: attacking through
    DDP would leave its reducer waiting for a parameter backward that never comes.
    """
    if cfg.method == "adv":
        attacked = attacked or model
        if cfg.adv_attack == "fgsm":
            x = fgsm_rs(attacked, x, y, cfg.adv_eps, cfg.adv_norm, generator)
        else:
            x = pgd(attacked, x, y, cfg.adv_eps, norm=cfg.adv_norm, steps=cfg.adv_steps,
                    step_size=2.5 * cfg.adv_eps / cfg.adv_steps, generator=generator)
        model.train()
    if target is None:
        logits = model(x)
        return F.cross_entropy(logits, y), logits.detach(), {}
    loss, parts = pag_loss(model, x, y, target(x, y, idx), cfg.lam, cfg.grad_of, cfg.pag_impl)
    return loss, parts.pop("logits"), {"ce": parts["ce"].item(), "cos": parts["cos"].item()}


def make_target(cfg: TrainConfig, train: Dataset, device: torch.device):
    """The g(x, t) realization for the method, on the training device (None for vanilla and adv)."""
    if cfg.method in TARGETS:
        return build_target(cfg.method, train.images, train.labels, len(train.classes), seed=cfg.seed, k=cfg.nn_k).to(device)
    if cfg.method == "rigd":
        return TeacherGradientTarget(load_checkpoint(cfg.teacher, device), cfg.grad_of, name=str(cfg.teacher))
    return None


def save_state(out: Path, model, opt, epoch: int, step: int, elapsed: float) -> None:
    """Full fp32 training state, written to a temporary folder then swapped in (never half-written)."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    for i, group in enumerate(opt.param_groups):
        for j, p in enumerate(group["params"]):
            buf = opt.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                tensors[f"opt.{i}.{j}"] = buf
    tmp = out / f".{STATE_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_torch_state_dict(tensors, tmp, max_shard_size="15MB")
    write_json(tmp / "progress.json", {"epoch": epoch, "step": step, "elapsed_s": elapsed})
    old = out / f".{STATE_DIR}.old"
    shutil.rmtree(old, ignore_errors=True)
    if (out / STATE_DIR).exists():
        os.replace(out / STATE_DIR, old)
    os.replace(tmp, out / STATE_DIR)
    shutil.rmtree(old, ignore_errors=True)


def load_state(out: Path, model, opt) -> tuple[int, int, float]:
    """Restore a saved state; returns (epochs done, global step, seconds trained so far)."""
    folder = out / STATE_DIR
    progress = json.loads((folder / "progress.json").read_text())
    tensors = {}
    for f in sorted(n for n in shard_names(folder) if n.endswith(".safetensors")):
        tensors.update(load_file(folder / f))
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    for i, group in enumerate(opt.param_groups):
        for j, p in enumerate(group["params"]):
            if f"opt.{i}.{j}" in tensors:
                opt.state[p]["momentum_buffer"] = tensors[f"opt.{i}.{j}"].to(p.device)
    return progress["epoch"], progress["step"], progress["elapsed_s"]


def check_resumable(out: Path, cfg: TrainConfig) -> None:
    """Resuming with other settings would silently mix two runs: refuse and name what differs."""
    saved = json.loads((out / "config.json").read_text()).get("run", {}) if (out / STATE_DIR).exists() else {}
    ignore = {"device", "monitor_limit", "monitor_robust", "keep_state", "data_dir", "amp"}  # amp: resolved per device
    differ = [f"{k}: {saved[k]!r} -> {v!r}" for k, v in asdict(cfg).items() if k in saved and k not in ignore and saved[k] != v]
    if differ:
        raise ValueError(f"{out} holds an unfinished run with other settings ({'; '.join(differ)}); "
                         "rerun it with the same flags, or choose another --out")


def setup_distributed(device: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device) under torchrun; (0, 1, device) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device)
    if world == 1:
        return 0, 1, dev
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    return dist.get_rank(), world, dev


def monitor(cfg: TrainConfig, model, test: Dataset | None, device: torch.device) -> dict:
    """The per-epoch check: clean accuracy on a fixed test subset and the authors' L2 PGD-7."""
    if test is None:
        return {}
    x, y = test.float(), test.labels
    clean, _ = robust_accuracy(model, x, y, None, 0.0, device=device, progress=False)
    out = {"test_acc": clean, "test_n": len(x)}
    if cfg.monitor_robust:
        n = cfg.monitor_robust  # clean and robust on the same images, so robust <= clean in the log
        out["test_robust_n"] = len(x[:n])
        out["test_acc_robust_subset"], out["test_l2_pgd7"] = robust_accuracy(
            model, x[:n], y[:n], "l2", 0.5, steps=7, device=device, progress=False)
    return out


def train(cfg: TrainConfig, command: str = "", progress: bool = True) -> Path:
    """Train (or resume) a run; returns the checkpoint folder. See the module docstring."""
    cfg = resolve(cfg)
    rank, world, device = setup_distributed(cfg.device)
    if cfg.batch_size % world:
        raise ValueError(f"batch size {cfg.batch_size} must divide evenly over {world} processes")
    out = Path(cfg.out)
    if (out / "config.json").exists() and not (out / STATE_DIR).exists():
        raise ValueError(f"{out} already holds a finished run; choose another --out (or delete that folder)")
    check_resumable(out, cfg)
    torch.manual_seed(cfg.seed)
    trainset = load_dataset(cfg.dataset, "train", data_dir=cfg.data_dir, limit=cfg.limit, seed=cfg.seed)
    testset = (load_dataset(cfg.dataset, "test", data_dir=cfg.data_dir, limit=cfg.monitor_limit, seed=0)
               if cfg.monitor_limit and rank == 0 else None)
    out.mkdir(parents=True, exist_ok=True)
    model = PAGClassifier(cfg.arch, len(trainset.classes), trainset.classes).to(device)
    amp = cfg.amp if cfg.amp is not None else (cfg.recipe == "fast" and device.type == "cuda")
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=RECIPES[cfg.recipe]["nesterov"])
    start_epoch, step, elapsed = load_state(out, model, opt) if (out / STATE_DIR).exists() else (0, 0, 0.0)
    target = make_target(cfg, trainset, device)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    steps_per_epoch = len(trainset) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(trainset)} training images are fewer than one batch of {cfg.batch_size}")
    run = {**asdict(cfg), "target_info": target.describe() if hasattr(target, "describe") else None,
           "data_source": trainset.source, "train_size": len(trainset), "amp": amp, "world_size": world,
           "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "command": command, "commit": git_commit(), "torch": torch.__version__}
    for epoch in range(start_epoch, cfg.epochs):
        t0, stats = time.time(), {"loss": 0.0, "correct": 0, "seen": 0}
        gen = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + epoch)
        shuffle_gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        model.train()
        bar = tqdm(batches(trainset, cfg.batch_size // world, True, shuffle_gen, device, drop_last=True, rank=rank,
                           world_size=world),
                   total=steps_per_epoch, desc=f"{cfg.method} epoch {epoch + 1}/{cfg.epochs}", disable=not progress or rank)
        for x, y, idx in bar:
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, step, steps_per_epoch)
            x = augment(x, gen)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss, logits, parts = step_loss(cfg, net, target, x, y, idx, gen, attacked=model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            stats["loss"] += loss.item() * len(y)
            stats["correct"] += (logits.argmax(1) == y).sum().item()
            stats["seen"] += len(y)
            for k, v in parts.items():
                stats[k] = stats.get(k, 0.0) + v * len(y)
            bar.set_postfix(loss=f"{stats['loss'] / stats['seen']:.3f}", acc=f"{stats['correct'] / stats['seen']:.3f}", **{
                k: f"{v:.3f}" for k, v in parts.items()})
        elapsed += time.time() - t0
        if rank == 0:
            log = {"epoch": epoch + 1, "loss": stats["loss"] / stats["seen"], "train_acc": stats["correct"] / stats["seen"],
                   **{k: stats[k] / stats["seen"] for k in ("ce", "cos") if k in stats},
                   "lr": lr_at(cfg, step - 1, steps_per_epoch), "epoch_s": round(time.time() - t0, 2),
                   "img_per_s": round(stats["seen"] * world / (time.time() - t0), 1), "date": now(),
                   **monitor(cfg, model, testset, device)}
            with open(out / "train_log.jsonl", "a") as f:
                f.write(json.dumps(log) + "\n")
            save_checkpoint(model, out, {**run, "epochs_done": epoch + 1, "train_time_s": round(elapsed, 1), "date": now()})
            save_state(out, model, opt, epoch + 1, step, elapsed)
            if progress:
                tqdm.write(" | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in log.items()))
        if world > 1:
            dist.barrier()
    if rank == 0 and not cfg.keep_state:
        shutil.rmtree(out / STATE_DIR, ignore_errors=True)
    if world > 1:
        dist.destroy_process_group()
    return out

