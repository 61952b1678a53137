"""The GPU machine's side of a window (maintainer/window.py is the command): start the runner, run the queue
against a deadline, and keep the machine with polls (maintainer/window_parcels.py hands the results back).

The runner (`run`, in the background) waits for the data and checks its SHA-256, then starts the
queue's jobs in order, concurrently on the one GPU while the estimated work left fits before the
deadline, evaluates each finished job that asks for it (PGD-20, both norms, full test set), and
stops whatever still runs at the deadline: every job is sent SIGINT at once (training finishes the
save it is in, keeps its last epoch and its train_state/), then SIGKILL after a shared grace.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from maintainer.window_parcels import STAGE, carry_map, collect_calls, complete, log, read_plan
from pagdemo.records.files import read_json as read
from pagdemo.records.files import read_sha256sums, sha256
from pagdemo.records.files import write_json as write

EVAL_RESERVE_S = 25  # seconds the two full-test-set PGD-20 evaluations of one job take on an H100
WARM_RESERVE_S = 20  # GPU seconds a compile warm-up still running is counted for
STOP_GRACE_S = 15  # after SIGINT, how long every job together has to finish its save
STAGING_CALL_S, COLLECT_CALL_S, MARGIN_S = 40, 30, 30  # what the deadline leaves for the calls still to come
DRY_TRAIN = [
    "--dataset",
    "synthetic",
    "--limit",
    "128",
    "--batch-size",
    "32",
    "--arch",
    "tinycnn",
    "--device",
    "cpu",
    "--monitor-limit",
    "32",
    "--monitor-robust",
    "8",
]
DRY_EVAL = ["--dataset", "synthetic", "--limit", "32", "--device", "cpu"]


# ----------------------------------------------------------------------------- the jobs


def job_commands(job: dict, queue: dict, runs: Path, dry: bool) -> list[list[str]]:
    """The commands of one job: its training, then (if asked) PGD-20 in both norms on the full test set."""
    out, data_dir = runs / job["name"], queue["data"]["dir"]
    cmd = [a.replace("{runs}", str(runs)) for a in job["cmd"]]
    for key in ("init", "teacher"):  # carried checkpoints (the dry run's stand-in: a one-epoch tinycnn)
        if job.get(key):
            cmd += [f"--{key}", str(runs / "dry-init") if dry else job[key]]
    cmd += queue.get("monitor", [])
    if dry:
        cmd = [("explicit" if a == "compiled" else a) for a in cmd]
        cmd = [a for i, a in enumerate(cmd) if not (i and cmd[i - 1] == "--epochs")]
        cmd = [a for a in cmd if a != "--epochs"] + ["--epochs", str(queue.get("dry_epochs", 1))] + DRY_TRAIN
        if "nn" in cmd and "--nn-k" not in cmd:  # the dry data has a dozen images a class, not K = 100
            cmd += ["--nn-k", "4"]
    else:
        cmd += ["--dataset", "cifar10", "--data-dir", data_dir]
    steps = [[sys.executable, "-m", "pagdemo", *cmd, "--out", str(out)]]
    if job.get("eval"):
        extra = DRY_EVAL if dry else ["--data-dir", data_dir, "--device", "cuda"]
        steps += [
            [sys.executable, "-m", "pagdemo", "eval", "--checkpoint", str(out), "--norm", n, *extra]
            for n in ("linf", "l2")
        ]
    return steps


def data_ready(queue: dict, dry: bool) -> bool:
    """Every data file is there and matches SHA256SUMS, every carried folder is complete (a partly copied file
    must not train)."""
    if dry:
        return True
    if not all(complete(Path(t)) for t in carry_map(queue)):
        return False
    folder = Path(queue["data"]["dir"])
    sums = folder / "SHA256SUMS"
    if not sums.exists() or not all((folder / n).exists() for n in queue["data"]["files"]):
        return False
    expected = read_sha256sums(sums)
    return all(n in expected and sha256(folder / n) == expected[n] for n in queue["data"]["files"])


def progress(runs: Path, job: dict) -> tuple[int, int]:
    """(epochs logged, epochs planned) of a job's training."""
    train_log = runs / job["name"] / "train_log.jsonl"
    done = len(train_log.read_text().splitlines()) if train_log.exists() else 0
    cmd = job["cmd"]
    return done, int(cmd[cmd.index("--epochs") + 1]) if "--epochs" in cmd else 30


def job_left(runs: Path, job: dict) -> float:
    """A job's estimated GPU seconds still to go (a resumed job has done part of its epochs already)."""
    done, planned = progress(runs, job)
    return job["est_s"] * (1 - min(done, planned) / max(planned, 1)) + (
        EVAL_RESERVE_S if job.get("eval") else 0
    )


def work_left(runs: Path, jobs: list[dict], running: dict) -> float:
    """GPU seconds the running jobs and live compile warm-ups still need (the GPU is time-shared: they add
    up)."""
    warm = sum(_alive(pid) for pid in read_plan(runs).get("warmups", []))
    return sum(job_left(runs, j) for j in jobs if j["name"] in running) + WARM_RESERVE_S * warm


def _alive(pid: int) -> bool:
    """Whether a process still runs (and is not a zombie we already reaped)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def staged_commit() -> dict[str, str]:
    """PAGDEMO_COMMIT from the staged commit, read when a job starts: a machine restarted mid-window gets the
    file only with a later call (the device's own .git can be the session's first commit, and says nothing
    true)."""
    commit = STAGE / "COMMIT"
    return {"PAGDEMO_COMMIT": commit.read_text().strip()} if commit.exists() else {}


def launch(job: dict, queue: dict, runs: Path, dry: bool) -> subprocess.Popen:
    """Run a job's commands in a shell of its own (a new session, so a stop at the deadline reaches all of
    it).

    The evaluations run only after a training that finished its schedule: a cut or failed run's
    exit code ends the shell before them.
    """
    train, *evals = [shlex.join(step) for step in job_commands(job, queue, runs, dry)]
    script = " && ".join([train, *evals])
    env = {
        **os.environ,
        "TQDM_DISABLE": "1",
        **staged_commit(),
    }  # one line per epoch in the logs, not every redraw
    with open(runs / f"{job['name']}.log", "w") as out:
        return subprocess.Popen(
            ["bash", "-c", script], stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )


def stop_all(procs: list[subprocess.Popen], pids: list[int] = ()) -> None:
    """SIGINT to every job at once (each finishes the save it is in), one shared grace, then SIGKILL what is
    left."""
    groups = [p.pid for p in procs] + list(pids)
    for pid in groups:
        try:
            os.killpg(pid, signal.SIGINT)
        except ProcessLookupError:
            pass
    end = time.time() + STOP_GRACE_S
    for p in procs:
        try:
            p.wait(timeout=max(0.1, end - time.time()))
        except subprocess.TimeoutExpired:
            pass
    for pid in groups:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for p in procs:
        p.wait()


def _reap(runs: Path, running: dict, status: dict) -> None:
    """Record the jobs that ended since the last look."""
    for name, proc in list(running.items()):
        if proc.poll() is not None:
            status["jobs"][name].update(
                state="done" if proc.returncode == 0 else "failed",
                rc=proc.returncode,
                ended_s=round(time.time() - read_plan(runs)["t0"], 1),
            )
            log(runs, f"{name}: {status['jobs'][name]['state']} (rc {proc.returncode})")
            del running[name]


def _fits(runs: Path, queue: dict, running: dict, job: dict) -> bool:
    """Whether a job's work fits before the deadline; a `fill_min_s` job (a long row resumed window after
    window) starts on an idle GPU whenever that much room is left, and is cut at the deadline with its state
    (started beside a row that fits, it would share the GPU and keep that row from finishing)."""
    room = read_plan(runs)["deadline"] - time.time() - work_left(runs, queue["jobs"], running)
    return job_left(runs, job) <= room or ("fill_min_s" in job and not running and room >= job["fill_min_s"])


def collapsed(runs: Path, job: dict, rule: dict | None) -> str | None:
    """Why a running job is no longer worth its GPU share: clean accuracy at chance after `after_epochs`
    epochs."""
    if not rule:
        return None
    train_log = runs / job["name"] / "train_log.jsonl"
    lines = train_log.read_text().splitlines() if train_log.exists() else []
    last = json.loads(lines[-1]) if len(lines) >= rule["after_epochs"] else {}
    acc = last.get("test_acc")
    if acc is not None and acc <= rule["max_test_acc"]:
        limit = f"{100 * rule['max_test_acc']:.0f}%"
        return f"clean {100 * acc:.1f}% after {len(lines)} epochs (collapse: <= {limit})"
    return None


def _stop_collapsed(runs: Path, queue: dict, running: dict, status: dict) -> None:
    """Stop each running job whose monitor shows collapse; its GPU share goes to the next job."""
    for job in queue["jobs"]:
        why = collapsed(runs, job, queue.get("collapse")) if job["name"] in running else None
        if why:
            stop_all([running.pop(job["name"])])
            status["jobs"][job["name"]].update(state="collapsed", why=why)
            log(runs, f"{job['name']}: collapsed, stopped: {why}")


def _start_fitting(
    runs: Path, queue: dict, running: dict, status: dict, dry: bool, max_parallel: int
) -> None:
    """Start, in queue order, each pending job whose needs are met and whose work fits before the deadline."""
    for job in queue["jobs"]:
        st = status["jobs"][job["name"]]
        if st["state"] != "pending" or len(running) >= max_parallel:
            continue
        needs = [status["jobs"][n]["state"] for n in job.get("needs", [])]
        if any(s in ("failed", "skipped", "cut") for s in needs):
            st.update(state="skipped", why="a job it needs did not finish")
        elif all(s == "done" for s in needs) and _fits(runs, queue, running, job):
            running[job["name"]] = launch(job, queue, runs, dry)
            st.update(state="running", started_s=round(time.time() - read_plan(runs)["t0"], 1))
            log(runs, f"{job['name']}: started")


def _wait_for_data(runs: Path, queue: dict, dry: bool) -> bool:
    """Until the data is complete and the deadline has been set (or a provisional one nears its end)."""
    while not data_ready(queue, dry):
        if time.time() > read_plan(runs)["deadline"] - 60:
            return False
        time.sleep(3)
    log(runs, "data complete, SHA-256 checked")
    while (
        not dry
        and not read_plan(runs).get("deadline_set")
        and time.time() < read_plan(runs)["deadline"] - 300
    ):
        time.sleep(1)  # the call that sets the deadline may still be on its way
    return True


def run(runs: Path, queue: dict, dry: bool, max_parallel: int = 7) -> dict:
    """The window's scheduler: returns the final status (also written to runs/status.json as it goes)."""
    status = {"jobs": {j["name"]: {"state": "pending"} for j in queue["jobs"]}}
    running: dict[str, subprocess.Popen] = {}
    log(runs, f"runner up: {len(queue['jobs'])} jobs, dry={dry}")
    if not _wait_for_data(runs, queue, dry):
        log(runs, "the data never arrived complete; nothing trained")
        return _finish(runs, status)
    if dry:
        _dry_init(runs)
    while True:
        _reap(runs, running, status)
        _stop_collapsed(runs, queue, running, status)
        _start_fitting(runs, queue, running, status, dry, max_parallel)
        if time.time() > read_plan(runs)["deadline"]:
            log(runs, "deadline: stopping " + (", ".join(running) or "nothing"))
            stop_all(list(running.values()), [p for p in read_plan(runs).get("warmups", []) if _alive(p)])
            for name, proc in running.items():
                status["jobs"][name].update(
                    state="cut", rc=proc.returncode, ended_s=round(time.time() - read_plan(runs)["t0"], 1)
                )
            running.clear()
        for job in queue["jobs"]:
            status["jobs"][job["name"]]["epochs"] = "{}/{}".format(*progress(runs, job))
        write(
            runs / "status.json",
            {
                **status,
                "t_s": round(time.time() - read_plan(runs)["t0"], 1),
                "deadline_s": round(read_plan(runs)["deadline"] - read_plan(runs)["t0"], 1),
            },
        )
        if not running:  # nothing left that fits (time only shrinks) or whose needs can still be met
            break
        time.sleep(0.5 if dry else 3)
    for st in status["jobs"].values():
        if st["state"] == "pending":
            st.update(state="skipped", why="did not fit before the deadline")
    return _finish(runs, status)


def _finish(runs: Path, status: dict) -> dict:
    """The final status, for the polls and the archive."""
    plan = read_plan(runs)
    status.update(
        finished=True,
        t_s=round(time.time() - plan["t0"], 1),
        deadline_s=round(plan["deadline"] - plan["t0"], 1),
    )
    write(runs / "status.json", status)
    log(runs, "runner done: " + ", ".join(f"{n} {s['state']}" for n, s in status["jobs"].items()))
    return status


def _dry_init(runs: Path) -> None:
    """The dry run's stand-in for a carried vanilla checkpoint: a one-epoch tinycnn on the synthetic data."""
    if not (runs / "dry-init" / "config.json").exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pagdemo",
                "train",
                "--epochs",
                "1",
                *DRY_TRAIN,
                "--monitor-limit",
                "0",
                "--out",
                str(runs / "dry-init"),
            ],
            check=True,
            capture_output=True,
        )


# ----------------------------------------------------------------------------- the calls


def start(runs: Path, queue_path: str, deadline_s: float, dry: bool, foreground: bool) -> None:
    """Call 1: note a provisional deadline, start the runner in its own session (it outlives the call)."""
    runs.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    write(
        runs / "plan.json",
        {
            "t0": t0,
            "deadline": t0 + deadline_s,
            "deadline_set": False,
            "dry": dry,
            "queue": queue_path,
            "warmups": [],
        },
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **staged_commit()}
    if foreground:
        os.environ.update(env)
        run(runs, read(Path(queue_path)), dry)
        return
    cmd = [
        sys.executable,
        "-m",
        "maintainer.window",  # from the working directory, the repository root, as this call was
        "run",
        "--runs",
        str(runs),
        "--queue",
        queue_path,
    ]
    with open(runs / "runner.log", "a") as out:
        proc = subprocess.Popen(
            cmd + (["--dry"] if dry else []),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    warmups = [] if dry else warm_compile(runs, read(Path(queue_path)), env)
    write(runs / "plan.json", {**read_plan(runs), "runner": proc.pid, "warmups": warmups})
    log(
        runs, f"started the runner; training ends {deadline_s:.0f} s from now unless a poll sets the deadline"
    )
    _environment(runs)


STEP_FLAGS = (
    "--bn-coupling",
    "--pag-frame",
    "--grad-of",
    "--arch",
)  # flags whose value changes the compiled graph


def compiled_steps(queue: dict) -> list[tuple[int, tuple[str, ...]]]:
    """(batch, graph-shaping flags) of every job that trains with the compiled PAG step: what the warm-up
    compiles."""
    from pagdemo.train.recipes import get_recipe

    steps = []
    for job in queue["jobs"]:
        cmd = job["cmd"]
        if "compiled" not in cmd:
            continue
        recipe = get_recipe(cmd[cmd.index("--recipe") + 1] if "--recipe" in cmd else "paper")
        flags = tuple(a for f in STEP_FLAGS if f in cmd for a in (f, cmd[cmd.index(f) + 1]))
        steps.append(
            (
                int(cmd[cmd.index("--batch-size") + 1]) if "--batch-size" in cmd else recipe.batch_size,
                flags + (("--no-amp",) if "--no-amp" in cmd or not recipe.amp else ()),
            )
        )
    return sorted(set(steps))


def warm_compile(runs: Path, queue: dict, env: dict) -> list[int]:
    """While the data is on its way: compile each distinct PAG step on synthetic images of the same shape, so
    the real jobs find torch.compile's caches (/tmp/torchinductor_*) warm. Returns their pids."""
    pids = []
    for i, (batch, flags) in enumerate(compiled_steps(queue)):
        name = f"warm-{i}-b{batch}"
        cmd = [
            sys.executable,
            "-m",
            "pagdemo",
            "train",
            "--method",
            "cm",
            "--dataset",
            "synthetic",
            "--arch",
            "resnet18",
            "--limit",
            str(2 * batch),
            "--batch-size",
            str(batch),
            "--epochs",
            "1",
            "--recipe",
            "fast",
            "--pag-impl",
            "compiled",
            "--monitor-limit",
            "0",
            "--monitor-cos",
            "0",
            *flags,
            "--out",
            str(runs / name),
        ]
        with open(runs / f"{name}.log", "w") as out:
            pids.append(
                subprocess.Popen(
                    cmd,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**env, "TQDM_DISABLE": "1"},
                    start_new_session=True,
                ).pid
            )
        log(runs, f"warming the compiled step: batch {batch} {' '.join(flags)}")
    return pids


def _environment(runs: Path) -> None:
    """What the machine is: Python, torch, GPU (into the session log)."""
    probe = (
        "import torch, sys; print(sys.version.split()[0], torch.__version__, "
        "torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    log(runs, f"python / torch / device: {out.stdout.strip() or out.stderr.strip()[-200:]}")


def set_deadline(runs: Path, budget_left_s: float, staging_left: int) -> float:
    """The deadline from the lease's budget left: what the calls still to come need is kept back."""
    plan = read_plan(runs)
    reserve = (
        STAGING_CALL_S * staging_left + COLLECT_CALL_S * collect_calls(read(Path(plan["queue"]))) + MARGIN_S
    )
    write(
        runs / "plan.json", {**plan, "deadline": time.time() + budget_left_s - reserve, "deadline_set": True}
    )
    log(
        runs,
        f"deadline set: training ends {budget_left_s - reserve:.0f} s from now ({reserve:.0f} s kept back)",
    )
    return budget_left_s - reserve


def poll(runs: Path, wait_s: float) -> None:
    """Keep the machine while the runner works: the status now and then; back when done, dead, or after
    wait_s."""
    end, last = time.time() + wait_s, 0.0
    while True:
        status, plan = read(runs / "status.json", {}), read_plan(runs)
        dead = plan.get("runner") and not _alive(plan["runner"]) and not status.get("finished")
        if time.time() - last > 30 or status.get("finished") or dead or time.time() >= end:
            print(status_line(status), flush=True)
            last = time.time()
        if dead:
            tail = (runs / "runner.log").read_text()[-1500:] if (runs / "runner.log").exists() else ""
            print(f"the runner has died; the end of its log:\n{tail}", flush=True)
            return
        if status.get("finished") or time.time() >= end:
            return
        time.sleep(2)


def status_line(status: dict) -> str:
    """Every job's state in one line."""
    jobs = status.get("jobs", {})
    return (
        f"t={status.get('t_s', '?')} s (deadline {status.get('deadline_s', '?')} s): "
        + ", ".join(f"{n} {s['state']} {s.get('epochs', '')}" for n, s in jobs.items())
        if jobs
        else "runner not ready"
    )
