"""What a training run is asked to do: `TrainConfig`, its defaults from the recipe and the paper, and the
checks that refuse impossible settings before anything is loaded (`pagdemo.train.loop` runs it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from pagdemo.data.datasets import DATASET_NAMES
from pagdemo.data.folder import DATA_DIR_HELP, FOLDER_HELP, ON_BAD, ON_BAD_HELP, SIDE_LIMITS
from pagdemo.methods import PAG_METHODS, TRAIN_METHODS, default_lambda
from pagdemo.methods import help_text as methods_help
from pagdemo.models import MODELS
from pagdemo.options import flag
from pagdemo.pag.inputgrads import COUPLINGS, GRAD_OF
from pagdemo.pag.losses import IMPLS, PAGStep
from pagdemo.pag.targets import CM_SCALINGS
from pagdemo.records.files import read_json
from pagdemo.threat import DATASET_SIDES, NORMS, check_norm, eval_eps
from pagdemo.train.recipes import RECIPES, get_recipe, help_text
from pagdemo.train.recipes import lam_at as recipe_lam_at
from pagdemo.train.recipes import lr_at as recipe_lr_at
from pagdemo.train.state import has_state

ADV_ATTACKS = ("pgd", "fgsm", "nfgsm")
# where the PAG term lives: each image's augmented copy / the authors' frame
PAG_FRAMES = ("augmented", "authors")
MONITORS = ("l2-pgd7", "pgd20")  # the authors' per-epoch check / the paper's evaluation in both norms
# synthetic data is for trying things on a CPU
DEFAULT_ARCH = {"stl10": "resnet18_stl", "synthetic": "tinycnn"}
# an image folder of at most this side trains the CIFAR ResNet-18; larger sides, the strided stem
SMALL_SIDE = 64
# settings a resumed run may change: where it runs and what it logs
RESUME_IGNORES = {"out", "device", "data_dir", "amp", "keep_state"}
RESUME_IGNORES |= {"monitor_limit", "monitor_robust", "monitor_pgd", "monitor_cos"}


@dataclass(frozen=True)
class TrainConfig:
    """One training run (`pagdemo train` and `adv-train`: their flags are these fields)."""

    out: str = flag(help="run folder (checkpoint + log); rerun the same command to resume")
    method: str = flag("vanilla", methods_help(), choices=TRAIN_METHODS, group="pag")
    lam: float | None = flag(None, "PAG weight lambda (default: the paper's Table 3 value)", group="pag")
    grad_of: str = flag(
        "logsoftmax",
        "take the input gradient of the class logit (Eq. 1 as written) or of its "
        "log-softmax (the authors' code; default)",
        choices=GRAD_OF,
        group="pag",
    )
    pag_impl: str = flag(
        "batched",
        "how the C input gradients are computed: loop (reference), batched (the authors' repeated batch), "
        "vmap / explicit (exact, faster), compiled (explicit under torch.compile: the fastest on a GPU)",
        choices=sorted(IMPLS),
        group="pag",
    )
    bn_coupling: str | None = flag(
        None,
        "BatchNorm while the input gradients are taken: classes (train mode, each class coupled over the "
        "batch), batch (statistics over the C*B repeated copies: the authors'), eval (per-image, as attacks "
        "see them), detached (the batch's statistics held constant). Default: what --pag-impl computes "
        "(docs/training.md)",
        choices=COUPLINGS,
        group="pag",
    )
    pag_frame: str = flag(
        "augmented",
        "augmented: a crop and flip per image, targets for the augmented image; authors: one crop per batch "
        "(another for the cross-entropy), gradients and targets in the un-augmented frame (TRAIN_CIFAR10.py)",
        choices=PAG_FRAMES,
        group="pag",
    )
    cm_scaling: str = flag(
        "image-norm",
        "cm: each class mean scaled to the class's image norm about black (image-norm), or about grey as in "
        "the authors' [-1, 1] space (centred), or none (the raw mean)",
        choices=CM_SCALINGS,
        group="pag",
    )
    nn_k: int = flag(100, "nn: sampled training images per class", read="count", group="pag")
    teacher: str | None = flag(
        None, "rigd: an adversarially trained teacher (a checkpoint folder or hf-hub:ORG/NAME)", group="pag"
    )
    init: str | None = flag(
        None,
        "start from this checkpoint's weights (a folder or hf-hub:ORG/NAME; same arch and classes; "
        "the finetune recipe)",
    )
    dataset: str = flag(
        "cifar10",
        "training data (default cifar10; synthetic is generated in code, for trying things out; "
        f"{FOLDER_HELP})",
        choices=sorted(DATASET_NAMES),
    )
    data_dir: str | None = flag(None, DATA_DIR_HELP)
    image_size: int | None = flag(
        None,
        f"folder: the side images are resized to, {SIDE_LIMITS[0]}-{SIDE_LIMITS[1]} "
        "(default: the most common shorter side in the tree); up to 64 trains the CIFAR "
        "ResNet-18, larger sides the strided-stem resnet18_stl",
        read="count",
    )
    on_bad_image: str = flag("skip", ON_BAD_HELP, choices=ON_BAD)
    limit: int | None = flag(None, "train on a fixed class-balanced subset of N images", read="count")
    arch: str | None = flag(
        None,
        "default resnet18 (resnet18_stl on stl10, tinycnn, a CNN for CPU trials, on synthetic); "
        "resnet18_gelu deviates from the paper with a smooth activation",
        choices=sorted(m for m in MODELS if m != "mlp"),
    )
    recipe: str = flag("paper", help_text(), choices=tuple(RECIPES))
    epochs: int | None = flag(None, "override the recipe's epochs", read="count")
    batch_size: int | None = flag(
        None, "global batch size (override the recipe's; paper: 32 on stl10)", read="count"
    )
    lr: float | None = flag(None, "peak learning rate (override the recipe's)")
    momentum: float = 0.9
    weight_decay: float = flag(1e-4, "SGD weight decay")
    amp: bool | None = flag(None, "bf16 autocast (default: the recipe's, on a GPU only)")
    adv_norm: str = flag(
        "linf", "threat model of adversarial training", choices=NORMS, name="--norm", group="adv"
    )
    adv_eps: float | None = flag(
        None,
        "radius in [0, 1] pixel units (default: the dataset's evaluation radius, 8/255 "
        "linf, 0.5 l2 on CIFAR-10)",
        read="eps",
        name="--eps",
        group="adv",
    )
    adv_attack: str = flag(
        "pgd",
        "pgd: PGD-AT with --adv-steps steps of 2.5*eps/steps; fgsm: FGSM-RS (Wong et al. "
        "2020), one step of 1.25 eps; nfgsm: N-FGSM (de Jorge et al. 2022), one step of eps from "
        "2-eps noise",
        choices=ADV_ATTACKS,
        name="--attack",
        group="adv",
    )
    adv_steps: int = flag(10, "PGD-AT steps", read="count", group="adv")
    seed: int = flag(0, "seed of the initialization, the data order and the augmentation")
    device: str = flag("auto", "auto (GPU if any), cpu or cuda")
    monitor_limit: int = flag(1000, "test images checked after each epoch (0: off)")
    monitor_robust: int = flag(200, "of those, images given the per-epoch robustness check (0: off)")
    monitor_pgd: str = flag(
        "l2-pgd7",
        "the per-epoch check: the authors' L2 PGD-7 (eps 0.5), or the paper's PGD-20 in both norms",
        choices=MONITORS,
    )
    keep_state: bool = flag(False, "keep train_state/ (optimizer state) after the last epoch")
    monitor_cos: int = flag(
        256,
        "PAG: training images whose summed misalignment is logged after each epoch in the "
        "run's train-mode coupling (cos_train) and in eval mode (cos_eval, what attacks see; 0: off)",
        group="pag",
    )


def _check_choices(cfg: TrainConfig) -> None:
    """Every named setting against its registry, before anything is loaded."""
    for name, value, choices in (
        ("method", cfg.method, (*TRAIN_METHODS, "adv")),
        ("adversarial attack", cfg.adv_attack, ADV_ATTACKS),
        ("monitor", cfg.monitor_pgd, MONITORS),
        ("dataset", cfg.dataset, DATASET_NAMES),
        ("--on-bad-image", cfg.on_bad_image, ON_BAD),
        ("--pag-frame", cfg.pag_frame, PAG_FRAMES),
        ("--cm-scaling", cfg.cm_scaling, CM_SCALINGS),
    ):
        if value not in choices:
            raise ValueError(f"unknown {name} {value!r}; choose one of {sorted(choices)}")
    if cfg.image_size is not None and cfg.dataset != "folder":
        raise ValueError(f"--image-size is for --dataset folder; {cfg.dataset} images have their own size")
    if cfg.arch is not None and cfg.arch not in MODELS:
        raise ValueError(f"unknown model {cfg.arch!r}; choose one of {sorted(MODELS)}")
    check_norm(cfg.adv_norm)
    if cfg.method not in PAG_METHODS and (cfg.bn_coupling is not None or cfg.pag_frame != "augmented"):
        raise ValueError(
            "--bn-coupling and --pag-frame shape the PAG term: use them with --method "
            f"{'|'.join(PAG_METHODS)}"
        )
    if cfg.method != "cm" and cfg.cm_scaling != "image-norm":
        raise ValueError("--cm-scaling is for --method cm (the Class Mean target)")
    if cfg.method == "rigd" and not cfg.teacher:
        raise ValueError(
            "method rigd needs --teacher DIR (an adversarially trained checkpoint, see pagdemo adv-train)"
        )


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Fill recipe and paper defaults, and refuse impossible settings with a clear message."""
    _check_choices(cfg)
    r = get_recipe(cfg.recipe)
    if r.needs_init and not cfg.init:
        raise ValueError(
            f"recipe {cfg.recipe!r} fine-tunes a trained model: give --init DIR (e.g. a vanilla checkpoint)"
        )
    batch = cfg.batch_size
    if batch is None:
        batch = 32 if cfg.dataset == "stl10" and cfg.recipe == "paper" else r.batch_size
    lam = default_lambda(cfg.method, cfg.dataset) if cfg.lam is None else cfg.lam
    pag = cfg.method in PAG_METHODS  # the step is checked here, once, before anything is loaded
    out = replace(
        cfg,
        lam=lam,
        epochs=r.epochs if cfg.epochs is None else cfg.epochs,
        batch_size=batch,
        lr=r.lr if cfg.lr is None else cfg.lr,
        bn_coupling=PAGStep(cfg.pag_impl, cfg.bn_coupling, cfg.grad_of).coupling if pag else None,
    )
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
    side = side if cfg.dataset == "folder" else None  # a folder's side, whether given or found
    return replace(cfg, arch=cfg.arch or default_arch, adv_eps=adv_eps, image_size=side)


def lr_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The run's learning rate at a global step (resolved config)."""
    return recipe_lr_at(get_recipe(cfg.recipe), cfg.lr, step, cfg.epochs * steps_per_epoch, steps_per_epoch)


def lam_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The run's PAG weight at a global step (resolved config)."""
    return recipe_lam_at(get_recipe(cfg.recipe), cfg.lam, step, cfg.epochs * steps_per_epoch)


def check_resumable(out: Path, cfg: TrainConfig) -> None:
    """Resuming with other settings would silently mix two runs: refuse and name what differs."""
    saved = (read_json(out / "config.json", {}) or {}).get("run", {}) if has_state(out) else {}
    differ = [
        f"{k}: {saved[k]!r} -> {v!r}"
        for k, v in asdict(cfg).items()
        if k in saved and k not in RESUME_IGNORES and saved[k] != v
    ]
    if differ:
        raise ValueError(
            f"{out} holds an unfinished run with other settings ({'; '.join(differ)}); "
            "rerun it with the same flags, or choose another --out"
        )
