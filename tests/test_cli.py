"""pagdemo.cli: help, one-line errors without tracebacks, eps parsing, and the issue's train -> eval flow."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pagdemo import cli

REPO = Path(__file__).resolve().parents[1]


def pagdemo(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real command, as a user types it (python -m pagdemo is what the `pagdemo` script runs)."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "pagdemo", *args],
        cwd=cwd or REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "args, flags",
    [
        (
            [],
            [
                "train",
                "adv-train",
                "eval",
                "toy",
                "attack",
                "audit",
                "push-to-hub",
                "--nproc_per_node",
                "pagdemo eval --checkpoint",
            ],
        ),
        (
            ["train"],
            [
                "--method",
                "--lam",
                "--grad-of",
                "--pag-impl",
                "--teacher",
                "--out",
                "--dataset",
                "--recipe",
                "--epochs",
                "--batch-size",
                "--limit",
                "--keep-state",
                "Class Mean",
            ],
        ),
        (["adv-train"], ["--norm", "--eps", "--attack", "--adv-steps", "--out", "--recipe"]),
        (
            ["eval"],
            [
                "--checkpoint",
                "--attack",
                "autoattack",
                "--norm",
                "--eps",
                "--steps",
                "--restarts",
                "--limit",
                "--json",
                "--no-record",
                "2*eps/k",
            ],
        ),
        (["toy"], ["--seeds", "--lam", "--out"]),
        (["attack"], ["--checkpoint", "--image", "--target", "--norm", "--eps", "--steps", "--out"]),
        (
            ["audit"],
            ["--checkpoint", "--norm", "--eps", "--vanilla", "--judge", "--autoattack", "--limit", "--json"],
        ),
        (
            ["push-to-hub"],
            [
                "FOLDER",
                "--repo",
                "--revision",
                "--private",
                "--dry-run",
                "model-index",
                "hf-hub:ORG/NAME",
            ],
        ),
    ],
    ids=["pagdemo", "train", "adv-train", "eval", "toy", "attack", "audit", "push-to-hub"],
)
def test_help_exits_0_and_names_the_key_flags(args, flags):
    proc = pagdemo(*args, "--help")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())  # argparse wraps lines wherever it likes
    missing = [f for f in flags if f not in text]
    assert not missing, f"pagdemo {' '.join(args)} --help does not mention {missing}"


def _assert_one_line_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{proc.stderr}"
    assert lines[0].startswith("pagdemo") and "error" in lines[0]
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]


def test_missing_data_dir_is_one_line(tmp_path):
    proc = pagdemo(
        "train",
        "--dataset",
        "cifar10",
        "--data-dir",
        str(tmp_path / "nodata"),
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "run"),
    )
    _assert_one_line_error(proc, "nodata")
    assert proc.returncode == 2


def test_missing_checkpoint_is_one_line(tmp_path):
    proc = pagdemo("eval", "--checkpoint", str(tmp_path / "no-such-run"))
    _assert_one_line_error(proc, "no-such-run", "no checkpoint folder")
    assert proc.returncode == 2


@pytest.mark.parametrize(
    "args, words",
    [
        (["eval", "--checkpoint", "x", "--eps", "abc"], ["'abc'", "8/255"]),
        (["train", "--out", "x", "--epochs", "0"], ["--epochs", "0"]),
        (["train", "--out", "x", "--method", "magic"], ["'magic'", "cm"]),
        (
            [
                "train",
                "--out",
                "x",
                "--method",
                "cm",
                "--pag-impl",
                "loop",
                "--bn-coupling",
                "batch",
                "--dataset",
                "synthetic",
            ],
            ["loop", "'batch'", "explicit"],
        ),
    ],
    ids=["eps-abc", "epochs-0", "unknown-method", "coupling-impl"],
)
def test_bad_arguments_are_one_line(args, words):
    proc = pagdemo(*args)
    _assert_one_line_error(proc, *words)
    assert proc.returncode == 2


def test_eps_value_accepts_fractions_and_refuses_nonsense():
    assert cli.eps_value("8/255") == 8 / 255
    assert cli.eps_value("0.5") == 0.5 and cli.eps_value("1e-2") == 0.01 and cli.eps_value("0") == 0.0
    for bad in ("abc", "1/0", "-0.1", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            cli.eps_value(bad)


def test_positive_int():
    assert cli.positive_int("3") == 3
    for bad in ("0", "-2", "1.5", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli.positive_int(bad)


def test_flags_map_to_each_commands_config():
    """Every command's flags land in its config dataclass, the `none` word and the defaults included."""
    from pagdemo.eval.audit import AuditConfig
    from pagdemo.eval.autoattack import AutoAttackConfig
    from pagdemo.eval.evaluate import EvalConfig
    from pagdemo.toy.experiment import ToyConfig
    from pagdemo.train.config import TrainConfig

    cmd, cfg = cli.parse(
        [
            "adv-train",
            "--out",
            "o",
            "--eps",
            "8/255",
            "--attack",
            "fgsm",
            "--no-amp",
            "--dataset",
            "synthetic",
        ]
    )
    assert cmd == "adv-train" and cfg == TrainConfig(
        out="o", method="adv", adv_eps=8 / 255, adv_attack="fgsm", amp=False, dataset="synthetic"
    )
    _, cfg = cli.parse(
        [
            "train",
            "--out",
            "o",
            "--method",
            "cm",
            "--pag-impl",
            "explicit",
            "--bn-coupling",
            "batch",
            "--pag-frame",
            "authors",
            "--cm-scaling",
            "none",
            "--nn-k",
            "7",
        ]
    )
    assert (cfg.method, cfg.pag_impl, cfg.bn_coupling, cfg.pag_frame, cfg.cm_scaling, cfg.nn_k) == (
        "cm",
        "explicit",
        "batch",
        "authors",
        "none",
        7,
    )
    _, cfg = cli.parse(["eval", "--checkpoint", "c", "--no-random-start", "--no-record", "--steps", "7"])
    assert (cfg.random_start, cfg.record, cfg.steps, cfg.restarts) == (False, False, 7, 1)
    _, cfg = cli.parse(
        ["eval", "--checkpoint", "c", "--attack", "autoattack", "--norm", "l2", "--aa-version", "lite"]
    )
    assert (cfg.attack, cfg.narrowed(AutoAttackConfig)) == (
        "autoattack",
        AutoAttackConfig(checkpoint="c", norm="l2", version="lite"),  # AutoAttack's own --limit 1000
    )
    _, cfg = cli.parse(["eval", "--checkpoint", "c", "--attack", "autoattack", "--limit", "64"])
    assert cfg.narrowed(AutoAttackConfig).limit == 64
    assert cli.parse(["eval", "--checkpoint", "c", "--norm", "none"])[1].narrowed(EvalConfig) == EvalConfig(
        checkpoint="c", norm=None
    )
    _, cfg = cli.parse(
        [
            "audit",
            "--checkpoint",
            "c",
            "--norm",
            "l2",
            "--judge",
            "j",
            "--autoattack",
            "standard",
            "--aa-backend",
            "torchattacks",
            "--pag-eps",
            "2",
            "--resume",
        ]
    )
    assert cfg == AuditConfig(
        checkpoint="c",
        norm="l2",
        judge="j",
        autoattack="standard",
        autoattack_backend="torchattacks",
        pag_eps=2.0,
        resume=True,
    )
    _, cfg = cli.parse(["toy", "--seeds", "3", "--sweep", "0,0.5", "--workers", "2", "--dtype", "float32"])
    assert cfg == ToyConfig(seeds=3, sweep_lams=(0.0, 0.5), workers=2, dtype="float32", out="runs/toy")
    _, cfg = cli.parse(
        ["attack", "--checkpoint", "a", "b", "--image", "i.png", "--out", "g.png", "--eps", "16/255"]
    )
    assert (cfg.checkpoint, cfg.eps, cfg.norm, cfg.steps) == (("a", "b"), 16 / 255, "l2", 40)
    _, cfg = cli.parse(["bench", "--small", "--repeats", "5", "--device", "cpu"])
    assert (cfg.repeats, cfg.warmup, cfg.batch_sizes, cfg.device) == (
        5,
        1,
        (8, 16),
        "cpu",
    )  # --small under the flags
    _, cfg = cli.parse(["push-to-hub", "ckpt", "--repo", "me/m", "--private", "--revision", "v1"])
    assert (cfg.folder, cfg.repo, cfg.private, cfg.revision, cfg.dry_run) == (
        "ckpt",
        "me/m",
        True,
        "v1",
        False,
    )


def test_autoattack_without_a_norm_is_one_line(capsys):
    assert cli.main(["eval", "--checkpoint", "c", "--attack", "autoattack", "--norm", "none"]) == 2
    assert (
        capsys.readouterr().err.strip() == "pagdemo eval: error: --attack autoattack needs --norm linf or l2"
    )


def test_interrupt_tells_how_to_resume(monkeypatch, capsys):
    import pagdemo.train

    def interrupted(args, command):
        raise KeyboardInterrupt

    monkeypatch.setattr(pagdemo.train, "train_command", interrupted)
    assert cli.main(["train", "--out", "x"]) == 130
    assert "resume" in capsys.readouterr().err


def test_value_errors_become_exit_2_in_process(tmp_path, capsys):
    assert cli.main(["eval", "--checkpoint", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pagdemo eval: error: no checkpoint folder")


def test_the_issue_flow_train_then_eval(tmp_path, monkeypatch, capsys):
    """`pagdemo train --method cm --dataset synthetic --epochs 1 --out runs/cm`, then the README's eval."""
    monkeypatch.chdir(tmp_path)
    assert (
        cli.main(
            [
                "train",
                "--method",
                "cm",
                "--dataset",
                "synthetic",
                "--epochs",
                "1",
                "--out",
                "runs/cm",
                "--limit",
                "128",
                "--monitor-limit",
                "64",
                "--monitor-robust",
                "16",
            ]
        )
        == 0
    )
    assert "pagdemo eval --checkpoint runs/cm" in capsys.readouterr().out
    run_dir = tmp_path / "runs" / "cm"
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["arch"], config["run"]["method"], config["run"]["lam"], config["run"]["epochs"]) == (
        "tinycnn",
        "cm",
        0.4,
        1,
    )
    assert config["run"]["command"].startswith("pagdemo train --method cm")

    assert (
        cli.main(
            [
                "eval",
                "--checkpoint",
                "runs/cm",
                "--norm",
                "l2",
                "--eps",
                "0.5",
                "--limit",
                "64",
                "--json",
                "runs/cm.json",
            ]
        )
        == 0
    )
    line = capsys.readouterr().out.strip()
    assert line.startswith("clean ") and "PGD-20 l2 eps=0.5" in line and "n=64" in line
    record = json.loads((tmp_path / "runs" / "cm.json").read_text())
    assert (record["norm"], record["eps"], record["steps"], record["step_size"], record["n"]) == (
        "l2",
        0.5,
        20,
        0.05,
        64,
    )
    assert json.loads((run_dir / "metrics.json").read_text())["evaluations"] == [record]
    card = (run_dir / "README.md").read_text()
    assert "| method | `cm` |" in card and "| lambda | `0.4` |" in card and "| l2 | 0.5 | 20 | 0.05 |" in card
    assert {"config.json", "metrics.json", "README.md", "model.safetensors", "train_log.jsonl"} <= {
        p.name for p in run_dir.iterdir()
    }
