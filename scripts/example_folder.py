"""A small image folder to try `--dataset folder` on (a stand-in for your own photos): coloured gratings of a
few classes, as PNG and JPEG files of mixed sizes, in the ImageFolder layout DIR/train/<class>/,
DIR/test/<class>/.

    python scripts/example_folder.py data/gratings [--classes 4] [--train 80] [--test 20]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from PIL import Image

NAMES = ["red", "green", "blue", "yellow", "cyan", "magenta", "orange", "purple"]
COLOURS = [
    (230, 30, 30),
    (30, 200, 30),
    (30, 50, 230),
    (230, 230, 30),
    (30, 230, 230),
    (230, 30, 230),
    (240, 140, 30),
    (130, 30, 180),
]
SIZES = [(32, 32), (48, 40), (64, 64), (40, 56)]


def grating(label: int, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A class colour times a class-oriented grating of random phase, plus noise."""
    w, h = size
    theta = label * math.pi / len(NAMES)
    rows, cols = np.mgrid[0:h, 0:w] * (32 / max(w, h))
    wave = np.sin(
        2 * math.pi / 8 * (cols * math.cos(theta) + rows * math.sin(theta)) + rng.uniform(0, 2 * math.pi)
    )
    img = np.array(COLOURS[label])[None, None] * (0.55 + 0.35 * wave[..., None]) + rng.normal(
        0, 20, (h, w, 3)
    )
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def main() -> None:
    """Write the folder."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="the folder to write (DIR/train/<class>/..., DIR/test/<class>/...)")
    p.add_argument("--classes", type=int, default=4, help=f"2 to {len(NAMES)}")
    p.add_argument("--train", type=int, default=80, help="training images per class")
    p.add_argument("--test", type=int, default=20, help="test images per class")
    args = p.parse_args()
    if not 2 <= args.classes <= len(NAMES):
        raise SystemExit(f"error: --classes must be 2 to {len(NAMES)}, got {args.classes}")
    rng = np.random.default_rng(0)
    for split, n in (("train", args.train), ("test", args.test)):
        for label in range(args.classes):
            folder = Path(args.out) / split / NAMES[label]
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                ext = "jpg" if i % 3 == 0 else "png"
                grating(label, SIZES[i % len(SIZES)], rng).save(folder / f"{i:04d}.{ext}")
    print(f"wrote {args.classes} classes x ({args.train} train + {args.test} test) images to {args.out}")


if __name__ == "__main__":
    main()
