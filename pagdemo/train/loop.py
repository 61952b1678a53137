"""Training: vanilla, PAG (Eq. 1 with the oi / cm / nn / rigd targets) and adversarial training.

One loop serves all of them; only the loss differs (`step_loss`). A run is a folder: the
checkpoint (weights, config, model card) is rewritten after every epoch, the full training
state (`pagdemo.train.state`) is saved beside it in `train_state/`, and a killed run started again
with the same `--out` resumes from the last finished epoch, also on another machine. Data
order, augmentation and attack noise are drawn from generators seeded by (seed, epoch), so a
resumed run repeats the uninterrupted one. The settings and their checks are
`pagdemo.train.config`; recipes (`--recipe`) live in `pagdemo.train.recipes`.
Multi-GPU: launch with `torchrun --nproc_per_node=N -m pagdemo train ...`; each process
trains on its shard of every batch (batch_size is the global batch) under DDP.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm.auto import tqdm

from pagdemo.attacks import nfgsm, pgd
from pagdemo.data.augment import augment, batch_crop
from pagdemo.data.datasets import Dataset, batches, check_splits, load_dataset
from pagdemo.eval.evaluate import robust_accuracy
from pagdemo.models import PAGClassifier, resolve_device
from pagdemo.pag.alignment import misalignment
from pagdemo.pag.inputgrads import train_mode_coupling
from pagdemo.pag.losses import pag_loss
from pagdemo.pag.targets import TARGETS, TeacherGradientTarget, build_target
from pagdemo.records.checkpoints import load_checkpoint, save_checkpoint
from pagdemo.records.files import read_json
from pagdemo.records.provenance import device_name, git_commit, now
from pagdemo.threat import FGSM_RS_STEP, eval_eps, strong_step
from pagdemo.train.config import TrainConfig, check_resumable, for_data, lam_at, lr_at, resolve
from pagdemo.train.recipes import Recipe, get_recipe
from pagdemo.train.state import drop_state, has_state, load_state, save_state


def adversarial_batch(cfg: TrainConfig, model, x, y, eps: float, generator) -> torch.Tensor:
    """The batch adversarial training trains on, made by the configured attack on the unwrapped model."""
    if cfg.adv_attack == "fgsm":  # FGSM with random start: one PGD step of size 1.25 eps from a random point
        return pgd(
            model, x, y, eps, norm=cfg.adv_norm, steps=1, step_size=FGSM_RS_STEP * eps, generator=generator
        )
    if cfg.adv_attack == "nfgsm":
        return nfgsm(model, x, y, eps, norm=cfg.adv_norm, generator=generator)
    return pgd(
        model,
        x,
        y,
        eps,
        norm=cfg.adv_norm,
        steps=cfg.adv_steps,
        step_size=strong_step(eps, cfg.adv_steps),
        generator=generator,
    )


def step_loss(
    cfg: TrainConfig, model, target, x, y, idx, generator, lam: float, attacked=None, adv_eps: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The method's training loss for one augmented batch: (loss, logits, logged parts).

    `attacked` is the unwrapped model that adversarial training attacks: attacking through
    DDP would leave its reducer waiting for a parameter backward that never comes.
    """
    if cfg.method == "adv":
        x = adversarial_batch(cfg, attacked or model, x, y, adv_eps, generator)
        model.train()
    if target is None:
        logits = model(x)
        return F.cross_entropy(logits, y), logits.detach(), {}
    frame = {}
    if (
        cfg.pag_frame == "authors"
    ):  # x is un-augmented: the cross-entropy and the PAG pass each get one crop of the batch
        frame = {"ce_x": batch_crop(generator)(x), "view": batch_crop(generator)}
    loss, parts = pag_loss(
        model, x, y, target(x, y, idx), lam, cfg.grad_of, cfg.pag_impl, cfg.bn_coupling, **frame
    )
    return loss, parts.pop("logits"), {"ce": parts["ce"].item(), "cos": parts["cos"].item()}


def make_target(cfg: TrainConfig, train: Dataset, device: torch.device):
    """The g(x, t) realization for the method, on the training device (None for vanilla and adv)."""
    if cfg.method in TARGETS:
        return build_target(
            cfg.method,
            train.images,
            train.labels,
            len(train.classes),
            seed=cfg.seed,
            k=cfg.nn_k,
            cm_scaling=cfg.cm_scaling,
        ).to(device)
    if cfg.method == "rigd":
        teacher = load_checkpoint(cfg.teacher, device)
        if list(teacher.classes) != list(train.classes) or teacher.image_size != train.side:
            raise ValueError(
                f"teacher {cfg.teacher} knows {teacher.classes} at {teacher.image_size}x{teacher.image_size}, "
                f"the training data {train.classes} at {train.side}x{train.side}: choose a teacher of this data"
            )
        return TeacherGradientTarget(teacher, cfg.grad_of, name=str(cfg.teacher))
    return None


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
    """The per-epoch check on a fixed test subset: clean accuracy, then the chosen robustness check."""
    if test is None:
        return {}
    x, y = test.inputs(), test.labels
    clean, _ = robust_accuracy(model, x, y, None, 0.0, device=device, progress=False)
    out = {"test_acc": clean, "test_n": len(x)}
    n = cfg.monitor_robust  # clean and robust on the same images, so robust <= clean in the log
    if not n:
        return out
    out["test_robust_n"] = len(x[:n])
    if (
        cfg.monitor_pgd == "l2-pgd7"
    ):  # the authors' check: eps 0.5 on CIFAR-10, the dataset's l2 radius elsewhere
        out["test_acc_robust_subset"], out["test_l2_pgd7"] = robust_accuracy(
            model,
            x[:n],
            y[:n],
            "l2",
            eval_eps("l2", test.name, model.image_size),
            steps=7,
            device=device,
            progress=False,
        )
        return out
    for norm in ("linf", "l2"):
        _, out[f"test_{norm}_pgd20"] = robust_accuracy(
            model,
            x[:n],
            y[:n],
            norm,
            eval_eps(norm, test.name, model.image_size),
            steps=20,
            device=device,
            progress=False,
        )
    return out


def monitor_alignment(
    cfg: TrainConfig, model, target, train: Dataset, device: torch.device, batch: int
) -> dict:
    """The PAG term on fixed training images in the run's train-mode coupling and in eval mode: training can fit
    the first through BatchNorm's batch statistics, while attacks and the app see the second (docs/training.md)."""
    n = min(cfg.monitor_cos, len(train)) if target is not None else 0
    if not n:
        return {}
    # random order, as training's batches: the packed files are sorted by class, and train-mode BatchNorm's
    # coupling depends on which classes share a batch
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))[:n]
    x, y = train.inputs(idx).to(device), train.labels[idx].to(device)
    targets = target(x, y, idx.to(device))
    coupling = train_mode_coupling(cfg.bn_coupling)
    return {
        "cos_train": misalignment(model, x, targets, cfg.grad_of, coupling, batch_size=min(n, batch)),
        "cos_train_coupling": coupling,
        "cos_eval": misalignment(model, x, targets, cfg.grad_of, "eval"),
        "cos_n": n,
    }


@dataclass
class _Run:
    """Everything one training run holds while it goes: the loop's state, built by `_start`."""

    cfg: TrainConfig
    rank: int
    world: int
    device: torch.device
    out: Path
    trainset: Dataset
    testset: Dataset | None
    model: PAGClassifier
    net: torch.nn.Module  # the model, or its DDP wrapper
    opt: torch.optim.Optimizer
    target: Any
    amp: bool
    adv_eps: float
    steps_per_epoch: int
    start_epoch: int
    step: int
    elapsed: float
    record: dict  # the run's settings and provenance for config.json


def _new_model(cfg: TrainConfig, trainset: Dataset) -> PAGClassifier:
    """The untrained (or --init) model, initialized from the seed without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = PAGClassifier(
            cfg.arch,
            len(trainset.classes),
            trainset.classes,
            image_size=trainset.side,
            **(dict(zip(("mean", "std"), trainset.stats)) if trainset.stats else {}),
        )
    if cfg.init:
        init = load_checkpoint(cfg.init)
        differ = [
            f"{k} {v!r} (this run: {model.config()[k]!r})"
            for k, v in init.config().items()
            if v != model.config()[k]
        ]
        if differ:
            raise ValueError(f"--init {cfg.init} is not this run's model: its {'; '.join(differ)}")
        model.load_state_dict(init.state_dict())
    return model


def _init_record(cfg: TrainConfig) -> dict:
    """What the run started from, and what that cost: a fine-tuned model's price includes its start."""
    if not cfg.init:
        return {}
    run = (read_json(Path(cfg.init) / "config.json", {}) or {}).get("run", {})
    return {
        "init_commit": run.get("commit"),
        "init_train_time_s": run.get("train_time_s"),
        "init_device": run.get("device"),
    }


def _start(cfg: TrainConfig, command: str) -> _Run:
    """Resolve the settings, load the data, build (or restore) the model and optimizer."""
    cfg = resolve(cfg)
    rank, world, device = setup_distributed(cfg.device)
    if cfg.batch_size % world:
        raise ValueError(f"batch size {cfg.batch_size} must divide evenly over {world} processes")
    out = Path(cfg.out)
    if (out / "config.json").exists() and not has_state(out):
        raise ValueError(f"{out} already holds a finished run; choose another --out (or delete that folder)")
    check_splits(cfg.dataset, cfg.data_dir, ("train", "test") if cfg.monitor_limit else ("train",))
    trainset = load_dataset(
        cfg.dataset,
        "train",
        data_dir=cfg.data_dir,
        limit=cfg.limit,
        seed=cfg.seed,
        image_size=cfg.image_size,
        on_bad_image=cfg.on_bad_image,
        progress=rank == 0,
    )
    cfg = for_data(cfg, trainset.side)
    check_resumable(out, cfg)
    testset = (
        load_dataset(
            cfg.dataset,
            "test",
            data_dir=cfg.data_dir,
            limit=cfg.monitor_limit,
            seed=0,
            image_size=trainset.side,
            on_bad_image=cfg.on_bad_image,
            progress=False,
        )
        if cfg.monitor_limit and rank == 0
        else None
    )
    if trainset.skipped and rank == 0:
        tqdm.write(f"skipped {len(trainset.skipped)} unreadable training file(s), e.g. {trainset.skipped[0]}")
    steps_per_epoch = len(trainset) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(trainset)} training images are fewer than one batch of {cfg.batch_size}")
    recipe: Recipe = get_recipe(cfg.recipe)
    amp = (cfg.amp if cfg.amp is not None else recipe.amp) and device.type == "cuda"
    model = _new_model(cfg, trainset).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        nesterov=recipe.nesterov,
    )
    out.mkdir(parents=True, exist_ok=True)
    start_epoch, step, elapsed = load_state(out, model, opt) if has_state(out) else (0, 0, 0.0)
    _trim_log(out / "train_log.jsonl", start_epoch)
    target = make_target(cfg, trainset, device)
    record = {
        **asdict(cfg),
        "target_info": target.describe() if hasattr(target, "describe") else None,
        "recipe_settings": recipe.settings(),
        **_init_record(cfg),
        "data_source": trainset.source,
        "train_size": len(trainset),
        "skipped_files": len(trainset.skipped),
        "amp": amp,
        "world_size": world,
        "device": device_name(device),
        "command": command,
        "commit": git_commit(),
        "torch": torch.__version__,
    }
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    return _Run(
        cfg,
        rank,
        world,
        device,
        out,
        trainset,
        testset,
        model,
        net,
        opt,
        target,
        amp,
        cfg.adv_eps,
        steps_per_epoch,
        start_epoch,
        step,
        elapsed,
        record,
    )


def _train_epoch(r: _Run, epoch: int, progress: bool) -> dict:
    """One pass over the training set; returns the summed statistics of the epoch."""
    cfg, stats = r.cfg, {"loss": 0.0, "correct": 0, "seen": 0}
    gen = torch.Generator(device=r.device).manual_seed(cfg.seed * 1000 + epoch)
    shuffle_gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
    r.model.train()
    bar = tqdm(
        batches(
            r.trainset,
            cfg.batch_size // r.world,
            True,
            shuffle_gen,
            r.device,
            drop_last=True,
            rank=r.rank,
            world_size=r.world,
        ),
        total=r.steps_per_epoch,
        desc=f"{cfg.method} epoch {epoch + 1}/{cfg.epochs}",
        disable=True if not progress or r.rank else None,
    )  # None: a bar on a terminal, none in a log file
    for x, y, idx in bar:
        for group in r.opt.param_groups:
            group["lr"] = lr_at(cfg, r.step, r.steps_per_epoch)
        if cfg.pag_frame == "augmented":  # the authors' frame crops inside the step (step_loss)
            x = augment(x, gen)
        if r.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(r.device.type, dtype=torch.bfloat16, enabled=r.amp):
            loss, logits, parts = step_loss(
                cfg,
                r.net,
                r.target,
                x,
                y,
                idx,
                gen,
                lam_at(cfg, r.step, r.steps_per_epoch),
                attacked=r.model,
                adv_eps=r.adv_eps,
            )
        r.opt.zero_grad(set_to_none=True)
        loss.backward()
        r.opt.step()
        r.step += 1
        stats["loss"] += loss.item() * len(y)
        stats["correct"] += (logits.argmax(1) == y).sum().item()
        stats["seen"] += len(y)
        for k, v in parts.items():
            stats[k] = stats.get(k, 0.0) + v * len(y)
        bar.set_postfix(
            loss=f"{stats['loss'] / stats['seen']:.3f}",
            acc=f"{stats['correct'] / stats['seen']:.3f}",
            **{k: f"{v:.3f}" for k, v in parts.items()},
        )
    return stats


def _trim_log(path: Path, epochs: int) -> None:
    """Keep the log lines of the epochs the state holds (a run killed between its writes may have one more)."""
    if path.exists():
        lines = path.read_text().splitlines(keepends=True)
        if len(lines) > epochs:
            path.write_text("".join(lines[:epochs]))


@contextmanager
def _writes_before_interrupt():
    """An epoch's log line, checkpoint and state are written together: a Ctrl-C (or the GPU window's SIGINT at
    its deadline) that arrives meanwhile takes effect once they are."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda sig, frame: caught.append(sig))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def _end_epoch(r: _Run, epoch: int, stats: dict, seconds: float, progress: bool) -> None:
    """Rank 0 logs the epoch, rewrites the checkpoint and saves the full state, uninterrupted."""
    cfg = r.cfg
    log = {
        "epoch": epoch + 1,
        "loss": stats["loss"] / stats["seen"],
        "train_acc": stats["correct"] / stats["seen"],
        **{k: stats[k] / stats["seen"] for k in ("ce", "cos") if k in stats},
        "lr": lr_at(cfg, r.step - 1, r.steps_per_epoch),
        "lam": lam_at(cfg, r.step - 1, r.steps_per_epoch),
        "epoch_s": round(seconds, 2),
        "img_per_s": round(stats["seen"] * r.world / seconds, 1),
        "date": now(),
        **monitor(cfg, r.model, r.testset, r.device),
        **monitor_alignment(cfg, r.model, r.target, r.trainset, r.device, cfg.batch_size // r.world),
    }
    with _writes_before_interrupt():
        with open(r.out / "train_log.jsonl", "a") as f:
            f.write(json.dumps(log) + "\n")
        save_checkpoint(
            r.model,
            r.out,
            {**r.record, "epochs_done": epoch + 1, "train_time_s": round(r.elapsed, 1), "date": now()},
        )
        save_state(r.out, r.model, r.opt, epoch + 1, r.step, r.elapsed)
    if progress:
        tqdm.write(" | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in log.items()))


def train(cfg: TrainConfig, command: str = "", progress: bool = True) -> Path:
    """Train (or resume) a run; returns the checkpoint folder. See the module docstring."""
    r = _start(cfg, command)
    for epoch in range(r.start_epoch, r.cfg.epochs):
        t0 = time.time()
        stats = _train_epoch(r, epoch, progress)
        seconds = time.time() - t0
        r.elapsed += seconds
        if r.rank == 0:
            _end_epoch(r, epoch, stats, seconds, progress)
        if r.world > 1:
            dist.barrier()
    if r.rank == 0 and not r.cfg.keep_state:
        drop_state(r.out)
    if r.world > 1:
        dist.destroy_process_group()
    return r.out
