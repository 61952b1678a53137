"""`pagdemo attack`: the paper's PAG picture (Fig. 1) of one image file, for one or more checkpoints (PNG)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from pagdemo.data.images import load_image
from pagdemo.models import resolve_device
from pagdemo.options import flag
from pagdemo.records.checkpoints import load_checkpoint
from pagdemo.threat import NORMS, picture_eps
from pagdemo.viz.grid import GridSpec, pag_grid_steps


@dataclass(frozen=True)
class PictureConfig:
    """Large-eps targeted PGD from one image toward every class (or one), a row per checkpoint."""

    checkpoint: tuple[str, ...] = flag(help="one or more checkpoint folders or hf-hub:ORG/NAME[@REVISION]")
    image: str = flag(help="any image file; it is cropped to a square and resized")
    out: str = flag(help="PNG file for the grid")
    target: str = flag("all", "'all', a class name or a class index")
    norm: str = flag("l2", "threat model of the targeted attack", choices=NORMS)
    eps: float | None = flag(
        None,
        f"radius in [0, 1] pixel units (default: l2 {picture_eps('l2')} at 32x32, scaled "
        "with the image side; linf 16/255: large on purpose)",
        read="eps",
    )
    steps: int = flag(40, "PGD steps", read="count")
    device: str = flag("auto", "auto (GPU if any), cpu or cuda")


def target_classes(target: str, classes: list[str]) -> list[int]:
    """'all', a class name or an index, as class indices; anything else is a user error naming the choices."""
    if target == "all":
        return list(range(len(classes)))
    if target in classes:
        return [classes.index(target)]
    if target.isdigit() and int(target) < len(classes):
        return [int(target)]
    raise ValueError(
        f"unknown target {target!r}; choose 'all', one of {classes} or an index below {len(classes)}"
    )


def render_picture(cfg: PictureConfig) -> Path:
    """Attack, draw the last frame of the grid, write the PNG; returns its path."""
    device = resolve_device(cfg.device)
    models = [load_checkpoint(c, device) for c in cfg.checkpoint]
    classes, size = models[0].classes, models[0].image_size
    if any(m.classes != classes or m.image_size != size for m in models):
        raise ValueError(
            "the checkpoints do not share their classes and image size: give ones of one dataset"
        )
    targets = target_classes(cfg.target, classes)
    eps = cfg.eps if cfg.eps is not None else picture_eps(cfg.norm, size)
    spec = GridSpec(
        [Path(c).name for c in cfg.checkpoint],
        classes,
        targets,
        f"targeted PGD-{cfg.steps}, {cfg.norm} eps={eps:.4g}",
        scale=max(1, 96 // size),
    )
    x = load_image(cfg.image, size)
    # with no time between frames, only the clean grid and the last step's come: the last is the picture
    *_, frame = pag_grid_steps(models, x, spec, cfg.norm, eps, cfg.steps, min_interval=float("inf"))
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frame.image).save(out)
    return out


def picture_command(cfg: PictureConfig, command: str) -> str:
    """`pagdemo attack`: draw the grid, say where it went."""
    return f"grid written to {render_picture(cfg)}"
