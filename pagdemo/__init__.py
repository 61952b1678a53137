"""pagdemo: Perceptually Aligned Gradients (Ganz, Kawar, Elad, ICML 2023), trained, attacked and shown."""

__version__ = "0.1.0"
