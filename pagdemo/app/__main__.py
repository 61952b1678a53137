"""`python -m pagdemo.app [--checkpoints DIR] [--port N] ...` is `pagdemo app ...` (`pagdemo app --help`)."""

import sys

from pagdemo.cli import main

raise SystemExit(main(["app", *sys.argv[1:]]))
