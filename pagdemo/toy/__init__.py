"""The paper's 2-D toy experiment (Sec. 5.1): `experiment`, `stats` over seeds, `plot`, a whole `run`."""
