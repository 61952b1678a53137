"""`python -m pagdemo.bench ...` is `pagdemo bench ...`."""

import sys

from pagdemo.cli import main

raise SystemExit(main(["bench", *sys.argv[1:]]))
