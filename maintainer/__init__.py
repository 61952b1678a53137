"""Maintainer tools, outside the installed package: they rewrite README.md and docs/ from the records, and run
the GPU windows. Run them from the repository root as `python -m maintainer.<tool>` (python -m puts the root
on the path, so they import pagdemo from the checkout where it is not installed, as on the GPU machine)."""
