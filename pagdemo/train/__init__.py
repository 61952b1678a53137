"""Training: the settings of a run and their checks (`config`), named recipes (`recipes`), the loop for
vanilla, PAG, RIGD and adversarial training (`loop`) and the state that lets a run resume on another machine
(`state`)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pagdemo.train.config import TrainConfig


def train_command(cfg: TrainConfig, command: str) -> str | None:
    """`pagdemo train` and `adv-train`: one loop; the first process says how to evaluate the checkpoint."""
    from pagdemo.train.loop import train  # here: importing a config need not load the loop

    out = train(cfg, command=command)
    if int(os.environ.get("RANK", "0")) == 0:
        return f"checkpoint written to {out}; evaluate it with: pagdemo eval --checkpoint {out} --norm l2"
    return None
