"""`python -m pagdemo` is the `pagdemo` command (and what torchrun launches)."""

import sys

from pagdemo.cli import main

sys.exit(main())
