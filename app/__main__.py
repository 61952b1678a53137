"""`python -m app [--checkpoints DIR] [--port N]`: serve the pagdemo app on the GPU if there is one, else the CPU."""
from __future__ import annotations

import argparse
import logging
import os

from app.handlers import EXAMPLES_DIR
from app.ui import build_demo

MAX_UPLOAD = "10mb"  # uploads beyond this are refused by Gradio before any handler runs
CSS = """
.pixels img, [id^=examples-] img { image-rendering: pixelated; }
.upload img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
"""  # 32x32 images are shown enlarged pixel for pixel, never smoothed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m app", description="Serve the pagdemo Gradio app.")
    p.add_argument("--checkpoints", default=os.environ.get("PAGDEMO_CHECKPOINTS", "checkpoints"),
                   help="folder of checkpoint folders (default: $PAGDEMO_CHECKPOINTS or ./checkpoints)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 to serve a network)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    p.add_argument("--device", default="auto", help="auto (GPU if any), cpu or cuda")
    p.add_argument("--concurrency", type=int, default=1, help="model runs at once; more visitors wait in the queue")
    p.add_argument("--data-dir", help="test data for the accuracy-vs-eps curve (default: pagdemo's)")
    return p.parse_args(argv)


def launch_options(host: str, port: int) -> dict:
    """The launch settings, shared with the tests so they serve exactly what users get."""
    return {"server_name": host, "server_port": port, "max_file_size": MAX_UPLOAD, "allowed_paths": [str(EXAMPLES_DIR)],
            "footer_links": ["api", "gradio"], "show_error": False, "css": CSS}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    demo = build_demo(args.checkpoints, args.device, data_dir=args.data_dir, concurrency=args.concurrency)
    print(demo.lab.notice().replace("**", ""))
    demo.launch(**launch_options(args.host, args.port))


if __name__ == "__main__":
    main()
