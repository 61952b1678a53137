"""The pagdemo web app: `pagdemo app`, `python -m pagdemo.app`, or the Space's `python app.py` (settings from
the environment); `build_demo` makes the gr.Blocks, `serve` runs it."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from pagdemo.options import flag

__all__ = ["AppConfig", "build_demo", "launch_options", "serve"]


@dataclass(frozen=True)
class AppConfig:
    """`pagdemo app`: which checkpoints, where to listen, where the models run."""

    checkpoints: str = flag(
        help="folder of checkpoint folders, a checkpoint, hf-hub:ORG/NAME[@REVISION], or a comma list of "
        "these (default: $PAGDEMO_CHECKPOINTS or ./checkpoints)",
        factory=lambda: os.environ.get("PAGDEMO_CHECKPOINTS", "checkpoints"),
    )
    host: str = flag(
        help="address to listen on, 0.0.0.0 to serve a network (default: $GRADIO_SERVER_NAME or 127.0.0.1)",
        factory=lambda: os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
    )
    port: int = flag(
        help="port (default: $GRADIO_SERVER_PORT or 7860)",
        factory=lambda: int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
    )
    device: str = flag("auto", "auto (GPU if any), cpu or cuda")
    concurrency: int = flag(1, "model runs at once; more visitors wait in the queue", read="count")
    data_dir: str | None = flag(
        None,
        "test data for the accuracy-vs-eps curve and the example gallery (default: the "
        "checkpoints' own, else pagdemo's default location)",
    )
    toy_dir: str = flag("docs/toy", "where `pagdemo toy` saved the results the Toy tab shows")


def serve(cfg: AppConfig, command: str = "") -> None:
    """Build the app and serve it (`pagdemo app`; a server records no command line)."""
    from pagdemo.app.ui import build_demo, launch_options

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # notice a closed page within seconds, and stop its run
    os.environ.setdefault("GRADIO_HEARTBEAT_INTERVAL", "2")
    demo = build_demo(
        cfg.checkpoints, cfg.device, data_dir=cfg.data_dir, concurrency=cfg.concurrency, toy_dir=cfg.toy_dir
    )
    print(demo.lab.notice().replace("**", ""))
    demo.launch(**launch_options(cfg.host, cfg.port, demo))


def __getattr__(name: str):
    """Load gradio only when the app is built, so `pagdemo train` runs where gradio is not installed."""
    if name in ("build_demo", "launch_options"):
        from pagdemo.app import ui

        return getattr(ui, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
