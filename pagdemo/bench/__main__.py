"""`python -m pagdemo.bench ...` is `pagdemo bench ...`."""

from pagdemo.cli import bench_main

raise SystemExit(bench_main())
