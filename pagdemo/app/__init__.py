"""The pagdemo web app: `pagdemo app` or `python -m pagdemo.app`; `build_demo` makes the gr.Blocks, `serve` runs it."""
from __future__ import annotations

import logging
import os

from pagdemo.app.ui import build_demo, launch_options

__all__ = ["build_demo", "launch_options", "serve"]


def serve(checkpoints: str = "checkpoints", host: str = "127.0.0.1", port: int = 7860, device: str = "auto",
          concurrency: int = 1, data_dir: str | None = None, toy_dir: str = "docs/toy") -> None:
    """Build the app for a checkpoints folder and serve it on the GPU if there is one, else the CPU."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("GRADIO_HEARTBEAT_INTERVAL", "2")  # notice a closed page within seconds, and stop its run
    demo = build_demo(checkpoints, device, data_dir=data_dir, concurrency=concurrency, toy_dir=toy_dir)
    print(demo.lab.notice().replace("**", ""))
    demo.launch(**launch_options(host, port, demo))
