"""The pagdemo web app: `python -m app` (see app/__main__.py); `build_demo` makes the gr.Blocks."""
from app.ui import build_demo

__all__ = ["build_demo"]
