"""pagdemo: Perceptually Aligned Gradients (Ganz, Kawar, Elad, ICML 2023), trained, attacked and shown.

From Python: `pagdemo.load` a checkpoint (a folder, a shipped name or hf-hub:ORG/NAME), attack it with
`pagdemo.PGD`, look at `pagdemo.input_gradients`, train with `pagdemo.PAGLoss` in any loop (`pagdemo.api`).
"""

__version__ = "0.1.0"
__all__ = ["PGD", "PAGLoss", "input_gradients", "load", "load_image"]


def __getattr__(name: str):
    """The public API, loaded on first use: `import pagdemo` alone stays light (the CLI starts fast)."""
    if name in __all__:
        from pagdemo import api

        return getattr(api, name)
    raise AttributeError(f"module 'pagdemo' has no attribute {name!r}")
