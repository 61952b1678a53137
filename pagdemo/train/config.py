"""What a training run is asked to do: `TrainConfig`, its defaults from the recipe and the paper, and the checks
that refuse impossible settings before anything is loaded (`pagdemo.train.loop` runs it)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from pagdemo.data.datasets import DATASET_NAMES
from pagdemo.records.files import read_json
from pagdemo.data.folder import ON_BAD
from pagdemo.pag.inputgrads import check_coupling, check_grad_of, default_coupling
from pagdemo.pag.losses import PAG_IMPLS
from pagdemo.models import MODELS
from pagdemo.paper import LAMBDAS as PAPER_LAMBDAS
from pagdemo.train.recipes import get_recipe
from pagdemo.train.recipes import lam_at as recipe_lam_at
from pagdemo.train.recipes import lr_at as recipe_lr_at
from pagdemo.train.state import has_state
from pagdemo.pag.targets import CM_SCALINGS
from pagdemo.threat import DATASET_SIDES, check_norm, eval_eps

METHODS = ("vanilla", "oi", "cm", "nn", "rigd", "adv")
ADV_ATTACKS = ("pgd", "fgsm", "nfgsm")
PAG_FRAMES = ("augmented", "authors")  # where the PAG term lives: the per-image augmented image / the authors' frame
MONITORS = ("l2-pgd7", "pgd20")  # the authors' per-epoch check / the paper's evaluation in both norms
PAPER_ROWS = {"oi": "One Image", "cm": "Class Mean", "nn": "Nearest Neighbor", "rigd": "RIGD linf"}
LAMBDA = {ds: {m: PAPER_LAMBDAS[ds][row] for m, row in PAPER_ROWS.items()} for ds in PAPER_LAMBDAS}  # Table 3
DEFAULT_ARCH = {"stl10": "resnet18_stl", "synthetic": "tinycnn"}  # synthetic data is for trying things on a CPU
SMALL_SIDE = 64  # an image folder of at most this side trains the CIFAR ResNet-18; larger sides, the strided stem
RESUME_IGNORES = {"out", "device", "monitor_limit", "monitor_robust", "monitor_pgd", "monitor_cos", "keep_state", "data_dir",
                  "amp"}


@dataclass(frozen=True)
class TrainConfig:
    out: str  # run folder: checkpoint, train_log.jsonl, train_state/
    method: str = "vanilla"  # one of METHODS; "adv" is adversarial training (pagdemo adv-train)
    lam: float | None = None  # PAG weight; None: the paper's Table 3 value for method and dataset
    grad_of: str = "logsoftmax"  # input gradient of the class "logit" (Eq. 1) or its "logsoftmax" (authors' code)
    pag_impl: str = "batched"  # a key of losses.PAG_IMPLS; "loop" is the reference, "compiled" the fastest exact
    bn_coupling: str | None = None  # BatchNorm in the PAG pass: classes | batch | eval; None: pag_impl's own
    pag_frame: str = "augmented"  # augmented: a crop per image, targets for it; authors: one crop per batch, un-augmented
    cm_scaling: str = "image-norm"  # Class Mean: rescaled to the class's mean image norm, or "none" (the raw mean)
    nn_k: int = 100  # Nearest Neighbor: sampled images per class
    teacher: str | None = None  # RIGD: checkpoint folder of the robust teacher
    init: str | None = None  # start from this checkpoint's weights (the finetune recipe needs one)
    dataset: str = "cifar10"  # cifar10, stl10, synthetic or folder (an ImageFolder tree: pagdemo.data.folder)
    data_dir: str | None = None  # None: the dataset's default location
    image_size: int | None = None  # folder: the side images are resized to; None: the tree's most common size
    on_bad_image: str = "skip"  # folder: a file that cannot be read is skipped and counted ("skip") or stops the run
    limit: int | None = None  # train on a fixed class-balanced subset of this size
    arch: str | None = None  # None: resnet18 (resnet18_stl for stl10, tinycnn for synthetic)
    recipe: str = "paper"  # a key of recipes.RECIPES
    epochs: int | None = None  # None: the recipe's
    batch_size: int | None = None  # global batch; None: the recipe's (paper: 32 on stl10)
    lr: float | None = None  # None: the recipe's
    momentum: float = 0.9
    weight_decay: float = 1e-4
    amp: bool | None = None  # bf16 autocast; None: the recipe's, on a GPU only
    adv_norm: str = "linf"  # adversarial training threat model
    adv_eps: float | None = None  # in [0, 1] pixel units; None: the dataset's evaluation radius
    adv_attack: str = "pgd"  # pgd (PGD-AT, Madry et al.), fgsm (FGSM-RS, Wong et al. 2020), nfgsm (de Jorge et al. 2022)
    adv_steps: int = 10  # PGD-AT steps (step size 2.5 * eps / steps)
    seed: int = 0
    device: str = "auto"
    monitor_limit: int = 1000  # test images for the per-epoch clean accuracy (0: off)
    monitor_robust: int = 200  # of those, how many get the per-epoch robustness check (0: off)
    monitor_pgd: str = "l2-pgd7"  # l2-pgd7: the authors' L2 PGD-7 (eps 0.5 at 32x32); pgd20: PGD-20 in both norms
    keep_state: bool = False  # keep train_state/ after the last epoch (it is 2x the fp32 weights)
    monitor_cos: int = 256  # PAG: training images whose misalignment is logged per epoch in train and eval mode (0: off)


def _check_choices(cfg: TrainConfig) -> None:
    """Every named setting against its registry, before anything is loaded."""
    for name, value, choices in (("method", cfg.method, METHODS), ("PAG implementation", cfg.pag_impl, PAG_IMPLS),
                                 ("adversarial attack", cfg.adv_attack, ADV_ATTACKS), ("monitor", cfg.monitor_pgd, MONITORS),
                                 ("dataset", cfg.dataset, DATASET_NAMES), ("--on-bad-image", cfg.on_bad_image, ON_BAD),
                                 ("--pag-frame", cfg.pag_frame, PAG_FRAMES), ("--cm-scaling", cfg.cm_scaling, CM_SCALINGS)):
        if value not in choices:
            raise ValueError(f"unknown {name} {value!r}; choose one of {sorted(choices)}")
    if cfg.image_size is not None and cfg.dataset != "folder":
        raise ValueError(f"--image-size is for --dataset folder; {cfg.dataset} images have their own size")
    if cfg.arch is not None and cfg.arch not in MODELS:
        raise ValueError(f"unknown model {cfg.arch!r}; choose one of {sorted(MODELS)}")
    check_grad_of(cfg.grad_of)
    if cfg.bn_coupling is not None:
        check_coupling(cfg.pag_impl, cfg.bn_coupling)
    check_norm(cfg.adv_norm)
    if cfg.method not in PAPER_ROWS and (cfg.bn_coupling is not None or cfg.pag_frame != "augmented"):
        raise ValueError(f"--bn-coupling and --pag-frame shape the PAG term: use them with --method {'|'.join(PAPER_ROWS)}")
    if cfg.method != "cm" and cfg.cm_scaling != "image-norm":
        raise ValueError("--cm-scaling is for --method cm (the Class Mean target)")
    if cfg.method == "rigd" and not cfg.teacher:
        raise ValueError("method rigd needs --teacher DIR (an adversarially trained checkpoint, see pagdemo adv-train)")


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Fill recipe and paper defaults, and refuse impossible settings with a clear message."""
    _check_choices(cfg)
    r = get_recipe(cfg.recipe)
    if r.needs_init and not cfg.init:
        raise ValueError(f"recipe {cfg.recipe!r} fine-tunes a trained model: give --init DIR (e.g. a vanilla checkpoint)")
    batch = cfg.batch_size
    if batch is None:
        batch = 32 if cfg.dataset == "stl10" and cfg.recipe == "paper" else r.batch_size
    lam = cfg.lam
    if lam is None:
        lam = 0.0 if cfg.method in ("vanilla", "adv") else LAMBDA.get(cfg.dataset, LAMBDA["cifar10"])[cfg.method]
    pag = cfg.method in PAPER_ROWS
    out = replace(cfg, lam=lam, epochs=r.epochs if cfg.epochs is None else cfg.epochs, batch_size=batch,
                  lr=r.lr if cfg.lr is None else cfg.lr,
                  bn_coupling=(cfg.bn_coupling or default_coupling(cfg.pag_impl)) if pag else None)
    if cfg.dataset != "folder":  # an image folder's side, known once it is read, settles these (`for_data`)
        out = for_data(out, DATASET_SIDES.get(cfg.dataset, 32))
    for name in ("epochs", "batch_size"):
        if getattr(out, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(out, name)}")
    if out.lr <= 0 or out.lam < 0:
        raise ValueError(f"lr must be > 0 and lam >= 0, got lr={out.lr}, lam={out.lam}")
    return out


def for_data(cfg: TrainConfig, side: int) -> TrainConfig:
    """The settings that depend on the images' side: the architecture and the adversarial radius."""
    default_arch = DEFAULT_ARCH.get(cfg.dataset) or ("resnet18" if side <= SMALL_SIDE else "resnet18_stl")
    adv_eps = cfg.adv_eps if cfg.adv_eps is not None else eval_eps(cfg.adv_norm, cfg.dataset, side)
    return replace(cfg, arch=cfg.arch or default_arch, adv_eps=adv_eps,
                   image_size=side if cfg.dataset == "folder" else None)  # a folder's side, whether given or found


def lr_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The run's learning rate at a global step (resolved config)."""
    return recipe_lr_at(get_recipe(cfg.recipe), cfg.lr, step, cfg.epochs * steps_per_epoch, steps_per_epoch)


def lam_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The run's PAG weight at a global step (resolved config)."""
    return recipe_lam_at(get_recipe(cfg.recipe), cfg.lam, step, cfg.epochs * steps_per_epoch)


def check_resumable(out: Path, cfg: TrainConfig) -> None:
    """Resuming with other settings would silently mix two runs: refuse and name what differs."""
    saved = (read_json(out / "config.json", {}) or {}).get("run", {}) if has_state(out) else {}
    differ = [f"{k}: {saved[k]!r} -> {v!r}" for k, v in asdict(cfg).items()
              if k in saved and k not in RESUME_IGNORES and saved[k] != v]
    if differ:
        raise ValueError(f"{out} holds an unfinished run with other settings ({'; '.join(differ)}); "
                         "rerun it with the same flags, or choose another --out")
