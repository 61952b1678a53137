"""pagdemo: Perceptually Aligned Gradients (Ganz, Kawar, Elad, ICML 2023), trained, attacked and shown.

From Python: `pagdemo.load` a checkpoint (a folder, a shipped name or hf-hub:ORG/NAME), attack it with
`pagdemo.PGD`, look at `pagdemo.input_gradients`, train with `pagdemo.PAGLoss` in any loop (`pagdemo.api`).
"""

import importlib

__version__ = "0.1.0"
_PUBLIC = {
    "load": "api",
    "load_image": "api",
    "PGD": "api",
    "input_gradients": "api",
    "PAGLoss": "pag.losses",
}
__all__ = list(_PUBLIC)


def __getattr__(name: str):
    """The public API, loaded on first use: `import pagdemo` alone stays light (the CLI starts fast)."""
    if name in _PUBLIC:
        return getattr(importlib.import_module(f"pagdemo.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module 'pagdemo' has no attribute {name!r}")
