"""`python -m pagdemo.app [--checkpoints DIR] [--port N] ...` is `pagdemo app ...` (`pagdemo app --help`)."""

from pagdemo.cli import app_main

raise SystemExit(app_main())
