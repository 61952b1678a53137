"""Training: vanilla, PAG (Eq. 1 with the oi / cm / nn / rigd targets) and adversarial training.

One loop serves all of them; only the loss differs (`objective`). A run is a folder, its checkpoint rewritten
and its full state (`state`) saved after every epoch: the same `--out` resumes a killed run from its last
finished epoch, on any machine, and repeats the uninterrupted one (every generator is seeded by seed and
epoch). Multi-GPU: `torchrun --nproc_per_node=N -m pagdemo train ...`, each process on its shard of the batch.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from pagdemo.data.augment import augment
from pagdemo.data.datasets import Dataset, batches, check_splits, load_dataset
from pagdemo.models import PAGClassifier, resolve_device
from pagdemo.pag.losses import PAGLoss
from pagdemo.records.checkpoints import check_folder, load_checkpoint, save_checkpoint
from pagdemo.records.files import read_json
from pagdemo.records.provenance import device_name, git_commit, now
from pagdemo.train.config import TrainConfig, check_resumable, for_data, lam_at, lr_at, resolve
from pagdemo.train.monitor import monitor, monitor_alignment
from pagdemo.train.objective import make_objective, step_loss
from pagdemo.train.recipes import get_recipe
from pagdemo.train.state import (
    drop_state,
    has_state,
    load_state,
    save_state,
    trim_log,
    writes_before_interrupt,
)

StepHook = Callable[[int, dict], None]  # (global step, the step's loss, accuracy and parts): for probes


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
    objective: PAGLoss | None  # the PAG term (None: vanilla and adv)
    gen: torch.Generator  # augmentation, crops and attack noise; reseeded by (seed, epoch)
    amp: bool
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
    run = (read_json(check_folder(cfg.init) / "config.json", {}) or {}).get("run", {})  # a folder or hf-hub:
    return {f"init_{k}": run.get(k) for k in ("commit", "train_time_s", "device")}


def _load_data(cfg: TrainConfig, rank: int) -> tuple[TrainConfig, Dataset, Dataset | None]:
    """(the settings its side completes, the training set, the monitor's fixed test subset on rank 0)."""
    check_splits(cfg.dataset, cfg.data_dir, ("train", "test") if cfg.monitor_limit else ("train",))
    common = {"data_dir": cfg.data_dir, "on_bad_image": cfg.on_bad_image}
    trainset = load_dataset(
        cfg.dataset,
        "train",
        limit=cfg.limit,
        seed=cfg.seed,
        image_size=cfg.image_size,
        progress=rank == 0,
        **common,
    )
    cfg = for_data(cfg, trainset.side)
    check_resumable(Path(cfg.out), cfg)
    testset = None
    if cfg.monitor_limit and rank == 0:
        size = trainset.side
        testset = load_dataset(
            cfg.dataset, "test", limit=cfg.monitor_limit, image_size=size, progress=False, **common
        )
    if trainset.skipped and rank == 0:
        tqdm.write(f"skipped {len(trainset.skipped)} unreadable training file(s), e.g. {trainset.skipped[0]}")
    if len(trainset) < cfg.batch_size:
        raise ValueError(f"{len(trainset)} training images are fewer than one batch of {cfg.batch_size}")
    return cfg, trainset, testset


def _record(
    cfg: TrainConfig,
    trainset: Dataset,
    objective: PAGLoss | None,
    amp: bool,
    world: int,
    device: torch.device,
    command: str,
) -> dict:
    """What config.json says of the run: its settings, target, recipe, data, machine and code."""
    return {
        **asdict(cfg),
        "target_info": objective.target.describe() if objective is not None else None,
        "recipe_settings": get_recipe(cfg.recipe).settings(),
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


def _start(cfg: TrainConfig, command: str) -> _Run:
    """Resolve the settings, load the data, build (or restore) the model, optimizer and objective."""
    cfg = resolve(cfg)
    rank, world, device = setup_distributed(cfg.device)
    if cfg.batch_size % world:
        raise ValueError(f"batch size {cfg.batch_size} must divide evenly over {world} processes")
    out = Path(cfg.out)
    if (out / "config.json").exists() and not has_state(out):
        raise ValueError(f"{out} already holds a finished run; choose another --out (or delete that folder)")
    cfg, trainset, testset = _load_data(cfg, rank)
    recipe = get_recipe(cfg.recipe)
    amp = (cfg.amp if cfg.amp is not None else recipe.amp) and device.type == "cuda"
    model = _new_model(cfg, trainset).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    sgd = {"momentum": cfg.momentum, "weight_decay": cfg.weight_decay, "nesterov": recipe.nesterov}
    opt = torch.optim.SGD(model.parameters(), cfg.lr, **sgd)
    out.mkdir(parents=True, exist_ok=True)
    start_epoch, step, elapsed = load_state(out, model, opt) if has_state(out) else (0, 0, 0.0)
    trim_log(out / "train_log.jsonl", start_epoch)
    gen = torch.Generator(device=device)
    objective = make_objective(cfg, trainset, device, gen)
    record = _record(cfg, trainset, objective, amp, world, device, command)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    steps = len(trainset) // cfg.batch_size
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
        objective,
        gen,
        amp,
        steps,
        start_epoch,
        step,
        elapsed,
        record,
    )


def _batches(r: _Run, epoch: int, progress: bool):
    """The epoch's shuffled batches (this process's shard), behind a progress bar on a terminal."""
    shuffle = torch.Generator().manual_seed(r.cfg.seed * 1000 + epoch)
    data = batches(r.trainset, r.cfg.batch_size // r.world, True, shuffle, r.device, True, r.rank, r.world)
    desc = f"{r.cfg.method} epoch {epoch + 1}/{r.cfg.epochs}"
    return tqdm(data, total=r.steps_per_epoch, desc=desc, disable=True if not progress or r.rank else None)


def _train_epoch(r: _Run, epoch: int, progress: bool, on_step: StepHook | None = None) -> dict:
    """One pass over the training set; returns the summed statistics of the epoch."""
    cfg, stats = r.cfg, {"loss": 0.0, "correct": 0, "seen": 0}
    r.gen.manual_seed(cfg.seed * 1000 + epoch)
    r.model.train()
    bar = _batches(r, epoch, progress)
    for x, y, idx in bar:
        for group in r.opt.param_groups:
            group["lr"] = lr_at(cfg, r.step, r.steps_per_epoch)
        if cfg.pag_frame == "augmented":  # the authors' frame crops inside the PAG loss (AuthorsFrame)
            x = augment(x, r.gen)
        if r.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        lam = lam_at(cfg, r.step, r.steps_per_epoch)
        with torch.autocast(r.device.type, dtype=torch.bfloat16, enabled=r.amp):
            loss, logits, parts = step_loss(
                cfg, r.net, r.objective, x, y, idx, r.gen, lam, r.model, cfg.adv_eps
            )
        r.opt.zero_grad(set_to_none=True)
        loss.backward()
        r.opt.step()
        r.step += 1
        correct = (logits.argmax(1) == y).sum().item()
        now_stats = {"loss": loss.item(), "acc": correct / len(y), **parts, "lr": r.opt.param_groups[0]["lr"]}
        for k, v in {"loss": now_stats["loss"], **parts}.items():  # sums over the epoch's images
            stats[k] = stats.get(k, 0.0) + v * len(y)
        stats["correct"] += correct
        stats["seen"] += len(y)
        if on_step is not None:
            on_step(r.step, now_stats)
        bar.set_postfix(
            {k: f"{stats[v] / stats['seen']:.3f}" for k, v in (("loss", "loss"), ("acc", "correct"))}
        )
    return stats


def _end_epoch(r: _Run, epoch: int, stats: dict, seconds: float, progress: bool) -> None:
    """Rank 0 logs the epoch, rewrites the checkpoint and saves the full state, uninterrupted."""
    cfg, target = r.cfg, r.objective.target if r.objective is not None else None
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
        **monitor_alignment(cfg, r.model, target, r.trainset, r.device, cfg.batch_size // r.world),
    }
    with writes_before_interrupt():
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


def train(
    cfg: TrainConfig, command: str = "", progress: bool = True, on_step: StepHook | None = None
) -> Path:
    """Train (or resume) a run; returns its folder. `on_step(step, stats)` sees every step (probes)."""
    r = _start(cfg, command)
    for epoch in range(r.start_epoch, r.cfg.epochs):
        t0 = time.time()
        stats = _train_epoch(r, epoch, progress, on_step)
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
