"""maintainer/window.py, dry-run on the CPU: the GPU window's runner trains, evaluates, stops at the deadline,
and brings everything back within the device tool's limits, in a form the next window resumes from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from maintainer import window
from pagdemo.records.checkpoints import load_checkpoint
from pagdemo.train.loop import TrainConfig, train
from pagdemo.train.state import load_state

REPO = Path(__file__).resolve().parents[1]

JOBS = [
    {
        "name": "vanilla",
        "est_s": 1,
        "eval": True,
        "ship": True,
        "cmd": ["train", "--method", "vanilla", "--epochs", "30"],
    },
    {
        "name": "probe-cm",
        "group": "probe",
        "est_s": 1,
        "cmd": [
            "train",
            "--method",
            "cm",
            "--recipe",
            "fast-lr01",
            "--pag-impl",
            "compiled",
            "--epochs",
            "8",
        ],
    },
    {"name": "student", "est_s": 1, "needs": ["teacher"], "cmd": ["train", "--method", "vanilla"]},
    {
        "name": "teacher",
        "est_s": 1,
        "cmd": ["adv-train", "--attack", "nope"],
    },  # fails: its student is skipped
]
DRY_FOREVER = 100_000  # dry epochs no machine finishes before a test's deadline


def _queue(tmp_path: Path, jobs: list[dict], **extra) -> Path:
    queue = {
        "data": {"dir": str(tmp_path / "data"), "files": []},
        "jobs": jobs,
        "monitor": ["--monitor-pgd", "pgd20"],
        **extra,
    }
    path = tmp_path / "queue.json"
    path.write_text(json.dumps(queue))
    return path


def _start(tmp_path: Path, queue: Path, deadline_s: float) -> Path:
    runs = tmp_path / "runs"
    window.main(
        [
            "start",
            "--dry",
            "--foreground",
            "--runs",
            str(runs),
            "--queue",
            str(queue),
            "--deadline-s",
            str(deadline_s),
        ]
    )
    return runs


def _collect_all(runs: Path, tmp_path: Path) -> list[Path]:
    parcels = []
    for i in range(10):
        out = tmp_path / f"out{i}"
        out.mkdir()
        window.main(["collect", "--runs", str(runs), "--out", str(out)])
        files = [f for f in out.rglob("*") if f.is_file()]
        if not files:
            return parcels
        assert len(files) <= window.MAX_FILES and sum(f.stat().st_size for f in files) <= window.MAX_TOTAL
        assert all(len(f.relative_to(out).parts) <= 3 for f in files)  # $OUT/a/b/file at most
        parcels.append(out)
    raise AssertionError("collect never ran out of files")


def test_dry_window_trains_evaluates_skips_and_brings_everything_back(tmp_path):
    runs = _start(tmp_path, _queue(tmp_path, JOBS), deadline_s=600)
    status = json.loads((runs / "status.json").read_text())["jobs"]
    assert {n: s["state"] for n, s in status.items()} == {
        "vanilla": "done",
        "probe-cm": "done",
        "teacher": "failed",
        "student": "skipped",
    }
    evals = json.loads((runs / "vanilla" / "metrics.json").read_text())["evaluations"]
    assert [e["norm"] for e in evals] == ["linf", "l2"]
    probe_log = json.loads((runs / "probe-cm" / "train_log.jsonl").read_text().splitlines()[-1])
    assert {"test_linf_pgd20", "test_l2_pgd20"} <= probe_log.keys()  # every job's monitor came from the queue
    here = tmp_path / "here"
    for parcel in _collect_all(runs, tmp_path):
        window.main(["unpack", str(parcel), "--into", str(here)])
    assert load_checkpoint(here / "vanilla").arch == "tinycnn"  # shipped: weights came back
    assert not list((here / "probe-cm").glob("*.safetensors"))  # a probe brings back its records, not weights
    assert "runner done" in (here / "session.log").read_text()
    summary = {r["job"]: r for r in window.window_summary(here)["jobs"]}
    assert set(summary) == {"probe-cm", "vanilla"} and summary["probe-cm"]["recipe"] == "fast-lr01"
    assert summary["vanilla"]["state"] == "done" and summary["probe-cm"]["method"] == "cm"
    assert summary["probe-cm"]["trajectory"][0]["test_l2_pgd20"] is not None


def test_a_job_cut_at_the_deadline_comes_back_resumable(tmp_path):
    """A long row that cannot finish in one window starts anyway when it may fill the window (fill_min_s)."""
    jobs = [
        {"name": "big", "est_s": 10_000, "ship": True, "cmd": ["train", "--method", "vanilla"]},
        {
            "name": "long",
            "est_s": 10_000,
            "fill_min_s": 5,
            "ship": True,
            "cmd": ["train", "--method", "vanilla"],
        },
    ]
    # 30 s: the dry init and the job's own start (importing torch) took over 15 s on a loaded 2-core CPU;
    # the job plans more epochs than any machine finishes in 30 s (400 once finished on an idle one)
    runs = _start(tmp_path, _queue(tmp_path, jobs, dry_epochs=DRY_FOREVER), deadline_s=30)
    status = json.loads((runs / "status.json").read_text())["jobs"]
    assert status["big"]["state"] == "skipped" and status["long"]["state"] == "cut", status
    assert (runs / "long" / "train_log.jsonl").exists(), (runs / "session.log").read_text()
    here = tmp_path / "here"
    for parcel in _collect_all(runs, tmp_path):
        window.main(["unpack", str(parcel), "--into", str(here)])
    done = len((here / "long" / "train_log.jsonl").read_text().splitlines())
    assert 0 < done < DRY_FOREVER and (here / "long" / "train_state" / "progress.json").exists()
    model = load_checkpoint(here / "long")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    assert load_state(here / "long", model, opt)[0] == done  # every shard of the state came back
    cfg = json.loads((here / "long" / "config.json").read_text())["run"]
    other = TrainConfig(
        **{k: cfg[k] for k in ("method", "dataset", "limit", "batch_size", "arch", "recipe", "seed")},
        epochs=done + 1,
        out=str(here / "long"),
        monitor_limit=0,
    )
    with pytest.raises(
        ValueError, match=f"epochs: {DRY_FOREVER} -> "
    ):  # it resumes only under the same command
        train(other, progress=False)


def test_the_calls_run_as_python_m_from_the_repository_root(tmp_path):
    """As on the GPU machine, where pagdemo is not installed: the checkout at the working directory is all the
    calls need, and `start` puts the runner in the background the same way, for a poll to wait on."""
    runs, env = tmp_path / "runs", {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def call(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "maintainer.window", *args, "--runs", str(runs)]
        return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

    started = call("start", "--dry", "--queue", str(_queue(tmp_path, [])), "--deadline-s", "300")
    assert started.returncode == 0, started.stderr
    polled = call("poll", "--wait-s", "240")
    assert polled.returncode == 0 and "the runner has died" not in polled.stdout, (
        polled.stdout + polled.stderr
    )
    log = (runs / "session.log").read_text()
    assert "runner up: 0 jobs, dry=True" in log and "runner done" in log, log


def test_parcels_respect_the_return_limits(tmp_path):
    files = []
    for i in range(10):
        f = tmp_path / f"shard{i}"
        with open(f, "wb") as fh:
            fh.truncate(15_000_000)  # a 15 MB shard, sparse
        files.append((f, f"job/shard{i}"))
    first = window.parcel(files, set())
    assert len(first) == 4  # 4 x 15 MB = 60 MB; a fifth would pass 64 MiB
    second = window.parcel(files, {n for _, n in first})
    assert [n for _, n in second] == [f"job/shard{i}" for i in range(4, 8)]
    many = [(tmp_path / "small", f"s{i}") for i in range(20)]
    (tmp_path / "small").write_bytes(b"x")
    assert len(window.parcel(many, set())) == window.MAX_FILES


def test_plan_carries_the_lossless_data_in_three_calls_under_64_mib(tmp_path):
    queue = {
        "data": {"dir": ".stage/cifar10", "files": ["test.npz", "train-0.npz", "train-1.npz", "train-2.npz"]},
        "carry": {".stage/init/vanilla": "checkpoints/vanilla"},
    }
    sizes = {
        ".stage/cifar10/test.npz": 22_697_348,
        ".stage/cifar10/train-0.npz": 37_811_771,
        ".stage/cifar10/train-1.npz": 37_860_723,
        ".stage/cifar10/train-2.npz": 37_804_069,
        ".stage/cifar10/SHA256SUMS": 309,
        ".stage/COMMIT": 41,
        ".stage/init/vanilla": 22_400_000,
    }
    tree = 3_000_000
    calls = window.plan_calls(queue, tree, sizes)
    staging = [c for c in calls if c["carry"]]
    assert len(staging) == 3 and staging[0]["command"].startswith("python3 -m maintainer.window start")
    assert sorted(p for c in staging for p in c["carry"]) == sorted(sizes)
    for c in staging:
        assert tree + sum(sizes[p] for p in c["carry"]) <= window.MAX_TREE and len(c["carry"]) <= 8
    with pytest.raises(SystemExit, match="take the shipped weights out"):
        window.plan_calls(queue, 90_000_000, sizes)


def test_every_command_of_the_real_queue_and_its_warm_ups_is_a_valid_run():
    """What the next window runs is checked here first: flags parse and settings resolve (nothing trains)."""
    from pagdemo.cli import parse
    from pagdemo.train.config import TrainConfig, resolve

    queue = json.loads((REPO / "maintainer" / "queue.json").read_text())
    runs = Path("runs")
    commands = [
        step[3:] for job in queue["jobs"] for step in window.runner.job_commands(job, queue, runs, dry=False)
    ]
    for batch, flags in window.runner.compiled_steps(queue):
        commands.append(
            [
                "train",
                "--method",
                "cm",
                "--dataset",
                "synthetic",
                "--batch-size",
                str(batch),
                "--pag-impl",
                "compiled",
                "--out",
                "x",
                *flags,
            ]
        )
    for cmd in commands:
        _, cfg = parse(cmd)
        if isinstance(cfg, TrainConfig):
            resolve(cfg)
    # issue 32's rows, in its order, all with the authors' step: one compiled step to warm up for all of them
    assert window.runner.compiled_steps(queue) == [
        (256, ("--bn-coupling", "batch", "--pag-frame", "authors"))
    ]
    names = [
        "oi-authors",
        "nn-authors",
        "cm-authors",
        "cm-centred-authors",
        "rigd-linf-authors",
        "rigd-l2-authors",
    ]
    assert [j["name"] for j in queue["jobs"]] == names and all(j["eval"] and j["ship"] for j in queue["jobs"])
    assert [j["name"] for j in queue["jobs"] if "fill_min_s" in j] == ["nn-authors", "cm-authors"]
    assert queue["collapse"] == {"after_epochs": 3, "max_test_acc": 0.15} and "pgd20" in queue["monitor"]


@pytest.fixture(autouse=True)
def _cwd(monkeypatch):
    monkeypatch.chdir(
        REPO
    )  # the runner starts `python -m pagdemo` from the repository root, as on the GPU machine
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    os.environ.pop("PAGDEMO_COMMIT", None)


def test_jobs_take_the_staged_commit_when_they_start_not_when_the_runner_did(tmp_path, monkeypatch):
    """A machine restarted mid-window gets .stage/COMMIT only with a later call: the jobs must still record
    it."""
    monkeypatch.setattr(window.runner, "STAGE", tmp_path)
    monkeypatch.delenv("PAGDEMO_COMMIT", raising=False)
    started = []
    monkeypatch.setattr(window.runner.subprocess, "Popen", lambda cmd, **kw: started.append(kw["env"]))
    job, queue = {"name": "j", "eval": False, "cmd": ["train", "--method", "vanilla"]}, {"data": {"dir": "d"}}
    window.runner.launch(job, queue, tmp_path, dry=False)
    (tmp_path / "COMMIT").write_text("abc123\n")  # arrives after the runner started
    window.runner.launch(job, queue, tmp_path, dry=False)
    assert "PAGDEMO_COMMIT" not in started[0]
    assert started[1]["PAGDEMO_COMMIT"] == "abc123"


def test_preflight_trains_every_job_with_its_own_step_and_names_the_ones_that_fail(tmp_path, capsys):
    queue = {
        "data": {"dir": "d"},
        "jobs": [
            {
                "name": "ok",
                "group": "probe",
                "cmd": ["train", "--method", "cm", "--pag-impl", "explicit", "--epochs", "9"],
            },
            {
                "name": "bad",
                "cmd": ["train", "--method", "cm", "--pag-impl", "loop", "--bn-coupling", "batch"],
            },
        ],
    }
    (tmp_path / "queue.json").write_text(json.dumps(queue))
    with pytest.raises(SystemExit, match="1 job.*: bad$"):
        window.main(["preflight", "--queue", str(tmp_path / "queue.json")])
    out = capsys.readouterr().out
    assert "ok: trains" in out and "bad: FAILED: " in out and "batch" in out.split("bad: FAILED: ")[1]


def test_a_collapsed_row_is_stopped_and_neither_shipped_nor_resumed_and_rigd_gets_its_teacher(tmp_path):
    """A run at chance after its first epochs gives its GPU share to the next job (issue 32's rule, here at a
    threshold every dry run meets); a RIGD row gets its carried teacher (the dry run's stand-in)."""
    rigd = [
        "train",
        "--method",
        "rigd",
        "--pag-impl",
        "explicit",
        "--bn-coupling",
        "batch",
        "--pag-frame",
        "authors",
    ]
    jobs = [
        {"name": "chance", "est_s": 1, "ship": True, "cmd": ["train", "--method", "oi"]},
        {"name": "rigd", "est_s": 1, "ship": True, "teacher": ".stage/teachers/adv-linf", "cmd": rigd},
    ]
    queue = _queue(tmp_path, jobs, dry_epochs=DRY_FOREVER, collapse={"after_epochs": 1, "max_test_acc": 1.0})
    runs = _start(tmp_path, queue, deadline_s=240)
    status = json.loads((runs / "status.json").read_text())["jobs"]
    assert {n: s["state"] for n, s in status.items()} == {"chance": "collapsed", "rigd": "collapsed"}, status
    assert (
        "after 1 epochs" in status["chance"]["why"]
        and "collapsed, stopped" in (runs / "session.log").read_text()
    )
    teacher = json.loads((runs / "rigd" / "config.json").read_text())["run"]["teacher"]
    assert teacher == str(runs / "dry-init") and not window.parcels.to_send(runs)[1:]  # no weights, no state


def test_a_row_that_cannot_finish_starts_only_on_an_idle_gpu(tmp_path, monkeypatch):
    """A fill row beside one that fits would share the GPU and keep that one from finishing."""
    runs = tmp_path / "runs"
    runs.mkdir()
    cmd = ["train", "--epochs", "30"]
    fits = {"name": "fits", "est_s": 100, "cmd": cmd}
    fill = {"name": "fill", "est_s": 1000, "fill_min_s": 60, "cmd": cmd}
    window_queue = {"jobs": [fits, fill]}
    (runs / "plan.json").write_text(json.dumps({"t0": 0, "deadline": 1e12, "warmups": []}))
    monkeypatch.setattr(window.runner.time, "time", lambda: 1e12 - 400)  # 400 s left
    assert window.runner._fits(runs, window_queue, {}, fill)  # an idle GPU: it fills the window
    beside = {"fits": object()}  # a row that fits is running: the fill row waits
    assert not window.runner._fits(runs, window_queue, beside, fill)


def test_a_resumed_row_travels_file_by_file_within_the_call_limits(tmp_path):
    queue = {
        "data": {"dir": ".stage/cifar10", "files": ["test.npz"]},
        "jobs": [{"name": "oi", "resume": "x"}],
    }
    assert window.parcels.carry_map({**queue, "carry": {"a": "b"}}) == {"a": "b", "runs/window/oi": "x"}
    sizes = {".stage/cifar10/test.npz": 22_697_348, ".stage/cifar10/SHA256SUMS": 309, ".stage/COMMIT": 41}
    state = {f"runs/window/oi/train_state/model-{i}.safetensors": 15_000_000 for i in range(6)}
    sizes |= state | {"runs/window/oi/model-00001-of-00002.safetensors": 15_000_000}  # 112 MB in all
    calls = [c for c in window.plan_calls(queue, 3_000_000, sizes) if c["carry"]]
    assert sorted(p for c in calls for p in c["carry"]) == sorted(sizes) and len(calls) == 3
    assert all(3_000_000 + sum(sizes[p] for p in c["carry"]) <= window.MAX_TREE for c in calls)


def test_a_carried_folder_is_complete_only_when_every_listed_file_arrived_whole(tmp_path):
    run = tmp_path / "oi"
    (run / "train_state").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "train_state" / "model-0.safetensors").write_bytes(b"x" * 10)
    window.parcels.write_manifest(run)
    assert window.parcels.complete(run)
    (run / "train_state" / "model-0.safetensors").write_bytes(b"x" * 4)  # half copied
    assert not window.parcels.complete(run)
    (run / "train_state" / "model-0.safetensors").unlink()
    assert not window.parcels.complete(run) and not window.parcels.complete(tmp_path / "nothing")


def test_a_dry_nearest_neighbor_job_samples_what_the_dry_data_holds(tmp_path):
    """The preflight trains every job on a dozen images a class: K = 100 candidates would refuse to start."""
    queue = json.loads((REPO / "maintainer" / "queue.json").read_text())
    job = next(j for j in queue["jobs"] if "nn" in j["cmd"])
    dry = window.runner.job_commands(job, queue, tmp_path, dry=True)[0]
    real = window.runner.job_commands(job, queue, tmp_path, dry=False)[0]
    assert dry[dry.index("--nn-k") + 1] == "4" and "--nn-k" not in real


def test_the_preflight_checks_a_resumed_row_against_its_state(tmp_path):
    """A cut row's command edited between windows would be refused on the GPU in its first second."""
    tiny = {"method": "vanilla", "dataset": "synthetic", "limit": 32, "batch_size": 16, "arch": "tinycnn"}
    run = tmp_path / "cut"
    train(TrainConfig(out=str(run), **tiny, monitor_limit=0, epochs=2, keep_state=True), progress=False)
    cmd = ["train", *[a for k, v in tiny.items() for a in (f"--{k.replace('_', '-')}", str(v))]]
    cmd += ["--monitor-limit", "0", "--epochs", "2", "--out", "x"]
    job = {"name": "cut", "resume": str(run)}
    assert window.resume_problem(cmd, job) is None
    assert "epochs: 2 -> 3" in window.resume_problem([*cmd[:-3], "3", "--out", "x"], job)
    assert "no train_state/" in window.resume_problem(cmd, {"name": "cut", "resume": str(tmp_path)})
    runs = Path(window.parcels.RUNS)  # the resumed folder lands where the runner's job trains
    queue = {"data": {"dir": "d"}}
    out = window.runner.job_commands({"name": "cut", "cmd": ["train"]}, queue, runs, False)[0][-1]
    assert window.parcels.carry_map({"jobs": [{"name": "cut", "resume": "x"}]}) == {out: "x"}
