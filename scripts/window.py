"""One GPU window, one prepared command per device call (issue 17).

A window is 15 minutes of device time, the machine's start included; the working tree that
travels is at most 64 MiB per call, and at most 8 files of 16 MiB (64 MiB together) come back.
This script turns scripts/queue.json into that sequence of calls:

  here:   python scripts/window.py stage              # copies data, init checkpoints, the commit into .stage/;
                                                      # prints every device call (command + carry list)
  call 1: python3 scripts/window.py start --deadline-s 600   # carries train-0 + test; starts the runner (setsid)
  call 2: python3 scripts/window.py poll --set-deadline-s N  # carries train-1 (+ init); N from the lease left
  call 3: python3 scripts/window.py poll --wait-s 500        # carries train-2: training starts once it is checked
  ...     python3 scripts/window.py poll --wait-s 540        # until every job is done or cut at the deadline
  then:   python3 scripts/window.py collect                  # repeated: each call brings the next parcel back
  here:   python scripts/window.py unpack <files_at> --into runs/window-<date>   # after each collect call

The runner (`run`, in the background) waits for the data and checks its SHA-256, then starts
the queue's jobs in order, concurrently on the one GPU while the estimated work left fits before
the deadline, evaluates each finished job that asks for it (PGD-20, both norms, full test set),
and stops whatever still runs at the deadline (a training keeps its last finished epoch and its
train_state/, which comes back so the next window can resume it). `--dry` runs the same cycle
on the CPU with synthetic data and tiny models; tests/test_window.py does that.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # pagdemo from the checkout (not installed on the GPU machine)
QUEUE = Path("scripts/queue.json")
STAGE = Path(".stage")
MAX_FILES, MAX_FILE, MAX_TOTAL = 8, 16 * 2**20, 64 * 2**20  # what comes back from one call
MAX_TREE = 64 * 2**20  # what travels to the machine in one call
EVAL_RESERVE_S = 25  # seconds the two full-test-set PGD-20 evaluations of one job take on an H100
DRY_TRAIN = ["--dataset", "synthetic", "--limit", "128", "--batch-size", "32", "--arch", "tinycnn", "--device", "cpu",
             "--monitor-limit", "32", "--monitor-robust", "8"]
DRY_EVAL = ["--dataset", "synthetic", "--limit", "32", "--device", "cpu"]


def _read(path: Path, default=None):
    return json.loads(path.read_text()) if path.exists() else default


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _log(runs: Path, text: str) -> None:
    """One line to the window's session log (and stdout), stamped with seconds since the start."""
    plan = _read(runs / "plan.json", {})
    line = f"[+{time.time() - plan.get('t0', time.time()):6.1f}s] {text}"
    print(line, flush=True)
    with open(runs / "session.log", "a") as f:
        f.write(line + "\n")


# ----------------------------------------------------------------------------- here: stage and plan

def tree_bytes() -> int:
    """Bytes of the working tree that travels without carry: tracked and untracked-not-ignored files, no weights."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], capture_output=True,
                         text=True, check=True).stdout.split("\n")
    return sum(Path(f).stat().st_size for f in out if f and Path(f).is_file() and not f.endswith(".safetensors"))


def plan_calls(queue: dict, tree: int, sizes: dict[str, int]) -> list[dict]:
    """The device calls: staging data and carried folders within 64 MiB each, then polls and collects."""
    data = [f"{queue['data']['dir']}/{name}" for name in queue["data"]["files"]]
    first = [f"{queue['data']['dir']}/SHA256SUMS", str(STAGE / "COMMIT")]
    items = sorted(data, key=lambda p: -sizes[p]) + list(queue.get("carry", {}))  # largest first, then the rest
    calls = [{"carry": list(first), "command": "python3 scripts/window.py start --deadline-s 600"}]
    if tree + sum(sizes[p] for p in first) > MAX_TREE:
        raise SystemExit(f"the working tree is {tree / 2**20:.1f} MiB (limit 64): take the shipped weights out first")
    for item in items:  # first fit: each carried path joins the first call with room
        for call in calls:
            if tree + sum(sizes[p] for p in call["carry"]) + sizes[item] <= MAX_TREE and len(call["carry"]) < 8:
                call["carry"].append(item)
                break
        else:
            calls.append({"carry": [item], "command": "python3 scripts/window.py poll --wait-s 5"})
    if len(calls) > 1:
        calls[1]["command"] = "python3 scripts/window.py poll --set-deadline-s N --wait-s 5   # N: see the note"
        calls[-1]["command"] = calls[-1]["command"].replace("--wait-s 5", "--wait-s 500")
    calls.append({"carry": [], "command": "python3 scripts/window.py poll --wait-s 540   # repeat until all done"})
    calls.append({"carry": [], "command": "python3 scripts/window.py collect   # repeat until nothing is left"})
    return calls


def cmd_stage(args: argparse.Namespace) -> None:
    """Copy what the calls carry into .stage/ and print the calls."""
    queue = _read(Path(args.queue))
    dest, src = Path(queue["data"]["dir"]), Path(queue["data"]["source"])
    dest.mkdir(parents=True, exist_ok=True)
    for name in [*queue["data"]["files"], "SHA256SUMS"]:
        if not (dest / name).exists() or (dest / name).stat().st_size != (src / name).stat().st_size:
            shutil.copy(src / name, dest / name)
    for target, source in queue.get("carry", {}).items():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("README.md", "audit-*.json", "NOTES.md"))
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout
    (STAGE / "COMMIT").write_text(commit + ("-dirty" if dirty.strip() else "") + "\n")
    paths = [f"{queue['data']['dir']}/{n}" for n in [*queue["data"]["files"], "SHA256SUMS"]] + [str(STAGE / "COMMIT")]
    sizes = {p: Path(p).stat().st_size for p in paths}
    sizes.update({t: sum(f.stat().st_size for f in Path(t).rglob("*") if f.is_file()) for t in queue.get("carry", {})})
    tree = tree_bytes()
    print(f"working tree without weights: {tree / 2**20:.1f} MiB; take the shipped weights out for the calls:\n"
          "  rm checkpoints/*/*.safetensors        (afterwards: git checkout -- checkpoints)\n")
    for i, call in enumerate(plan_calls(queue, tree, sizes), 1):
        mib = (tree + sum(sizes.get(p, 0) for p in call["carry"])) / 2**20
        print(f"call {i}: carry {json.dumps(call['carry'])}  ({mib:.1f} MiB)\n        {call['command']}")
    print("\nN (call 2): the lease's budget_left_s after call 1, minus ~40 s per staging call still to come, minus "
          "~30 s per collect call (one per 8 files back), minus 30 s of margin.")


# ----------------------------------------------------------------------------- there: start, run, poll

def job_commands(job: dict, queue: dict, runs: Path, dry: bool) -> list[list[str]]:
    """The commands of one job: its training, then (if asked) PGD-20 in both norms on the full test set."""
    out, data_dir = runs / job["name"], queue["data"]["dir"]
    cmd = [a.replace("{runs}", str(runs)) for a in job["cmd"]]
    if job.get("init"):
        cmd += ["--init", str(runs / "dry-init") if dry else job["init"]]
    if job.get("group") == "probe":
        cmd += queue.get("probe_monitor", [])
    if dry:
        cmd = [("explicit" if a == "compiled" else a) for a in cmd]
        cmd = [a for i, a in enumerate(cmd) if not (i and cmd[i - 1] == "--epochs")]
        cmd = [a for a in cmd if a != "--epochs"] + ["--epochs", str(queue.get("dry_epochs", 1))] + DRY_TRAIN
    else:
        cmd += ["--dataset", "cifar10", "--data-dir", data_dir]
    train = [sys.executable, "-m", "pagdemo", *cmd, "--out", str(out)]
    steps = [train]
    if job.get("eval"):
        extra = DRY_EVAL if dry else ["--data-dir", data_dir, "--device", "cuda"]
        steps += [[sys.executable, "-m", "pagdemo", "eval", "--checkpoint", str(out), "--norm", n, *extra]
                  for n in ("linf", "l2")]
    return steps


def _data_ready(queue: dict, dry: bool) -> bool:
    """Every data file is there and matches SHA256SUMS (a partly copied file must not train)."""
    if dry:
        return True
    folder = Path(queue["data"]["dir"])
    sums = folder / "SHA256SUMS"
    if not sums.exists() or not all((folder / n).exists() for n in queue["data"]["files"]):
        return False
    expected = {ln.split()[1].lstrip("*"): ln.split()[0] for ln in sums.read_text().splitlines() if ln.strip()}
    return all(_sha256(folder / n) == expected[n] for n in queue["data"]["files"])


def _progress(runs: Path, job: dict) -> tuple[int, int]:
    """(epochs logged, epochs planned) of a job's training."""
    log = runs / job["name"] / "train_log.jsonl"
    done = len(log.read_text().splitlines()) if log.exists() else 0
    cmd = job["cmd"]
    planned = int(cmd[cmd.index("--epochs") + 1]) if "--epochs" in cmd else 30
    return done, planned


def _work_left(runs: Path, jobs: list[dict], running: dict) -> float:
    """Estimated GPU seconds the running jobs still need (the GPU is time-shared, so they add up)."""
    left = 0.0
    for job in jobs:
        if job["name"] in running:
            done, planned = _progress(runs, job)
            left += job["est_s"] * (1 - done / max(planned, 1)) + (EVAL_RESERVE_S if job.get("eval") else 0)
    return left


def _launch(job: dict, queue: dict, runs: Path, dry: bool) -> subprocess.Popen:
    """Run a job's commands in a shell of its own (a new session, so a stop at the deadline reaches all of it).

    The evaluations run after a training that failed too (they then fail at once); the job's exit
    code is the training's.
    """
    train, *evals = [shlex.join(step) for step in job_commands(job, queue, runs, dry)]
    script = "; ".join([f"{train}", "rc=$?", *evals, "exit $rc"])
    env = {**os.environ, "TQDM_DISABLE": "1"}  # the logs keep one line per epoch, not every redraw of a bar
    with open(runs / f"{job['name']}.log", "w") as log:
        return subprocess.Popen(["bash", "-c", script], stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env=env)


def _stop(proc: subprocess.Popen) -> None:
    """SIGINT first (training saves nothing half-way and keeps its state), then SIGKILL."""
    for sig, wait in ((signal.SIGINT, 20), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
            return
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue


def run(runs: Path, queue: dict, dry: bool, max_parallel: int = 7) -> dict:
    """The window's scheduler: returns the final status (also written to runs/status.json as it goes)."""
    jobs, status = queue["jobs"], {"jobs": {j["name"]: {"state": "pending"} for j in queue["jobs"]}}
    running: dict[str, subprocess.Popen] = {}
    _log(runs, f"runner up: {len(jobs)} jobs, dry={dry}")
    while not _data_ready(queue, dry):
        if time.time() > _deadline(runs) - 60:
            _log(runs, "the data never arrived complete; nothing trained")
            return _finish(runs, status)
        time.sleep(3)
    _log(runs, "data complete, SHA-256 checked")
    if dry:
        _dry_init(runs)
    while True:
        now, deadline = time.time(), _deadline(runs)
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                status["jobs"][name].update(state="done" if proc.returncode == 0 else "failed", rc=proc.returncode,
                                            ended_s=round(now - _t0(runs), 1))
                _log(runs, f"{name}: {status['jobs'][name]['state']} (rc {proc.returncode})")
                del running[name]
        for job in jobs:
            st = status["jobs"][job["name"]]
            if st["state"] != "pending" or len(running) >= max_parallel:
                continue
            needs = [status["jobs"][n]["state"] for n in job.get("needs", [])]
            if any(s in ("failed", "skipped", "cut") for s in needs):
                st.update(state="skipped", why="a job it needs did not finish")
            elif all(s == "done" for s in needs) and \
                    _work_left(runs, jobs, running) + job["est_s"] + EVAL_RESERVE_S * job.get("eval", 0) <= deadline - now:
                running[job["name"]] = _launch(job, queue, runs, dry)
                st.update(state="running", started_s=round(now - _t0(runs), 1))
                _log(runs, f"{job['name']}: started")
        if now > deadline:
            for name, proc in running.items():
                _stop(proc)
                status["jobs"][name].update(state="cut", rc=proc.returncode, ended_s=round(time.time() - _t0(runs), 1))
                _log(runs, f"{name}: cut at the deadline")
            running.clear()
        for job in jobs:
            status["jobs"][job["name"]]["epochs"] = "%d/%d" % _progress(runs, job)
        _write(runs / "status.json", {**status, "t_s": round(now - _t0(runs), 1), "deadline_s": round(deadline - _t0(runs), 1)})
        if not running:  # nothing left that fits (time only shrinks) or whose needs can still be met
            break
        time.sleep(0.5 if dry else 3)
    for job in jobs:
        if status["jobs"][job["name"]]["state"] == "pending":
            status["jobs"][job["name"]].update(state="skipped", why="did not fit before the deadline")
    return _finish(runs, status)


def _finish(runs: Path, status: dict) -> dict:
    status.update(finished=True, t_s=round(time.time() - _t0(runs), 1), deadline_s=round(_deadline(runs) - _t0(runs), 1))
    _write(runs / "status.json", status)
    _log(runs, "runner done: " + ", ".join(f"{n} {s['state']}" for n, s in status["jobs"].items()))
    return status


def _dry_init(runs: Path) -> None:
    """The dry run's stand-in for a carried vanilla checkpoint: a one-epoch tinycnn on the synthetic data."""
    if not (runs / "dry-init" / "config.json").exists():
        subprocess.run([sys.executable, "-m", "pagdemo", "train", "--epochs", "1", *DRY_TRAIN, "--monitor-limit", "0",
                        "--out", str(runs / "dry-init")], check=True, capture_output=True)


def _t0(runs: Path) -> float:
    return _read(runs / "plan.json")["t0"]


def _deadline(runs: Path) -> float:
    return _read(runs / "plan.json")["deadline"]


def cmd_start(args: argparse.Namespace) -> None:
    """Call 1: note the deadline and start the runner in a session of its own, so it outlives the call."""
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    _write(runs / "plan.json", {"t0": t0, "deadline": t0 + args.deadline_s, "dry": args.dry, "queue": args.queue})
    commit = STAGE / "COMMIT"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **({"PAGDEMO_COMMIT": commit.read_text().strip()} if commit.exists() else {})}
    cmd = [sys.executable, __file__, "run", "--runs", str(runs), "--queue", args.queue] + (["--dry"] if args.dry else [])
    if args.foreground:
        os.environ.update(env)
        run(runs, _read(Path(args.queue)), args.dry)
        return
    with open(runs / "runner.log", "a") as log:
        subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    _log(runs, f"started the runner; training must end {args.deadline_s:.0f} s from now")
    if not args.dry:
        _warm_compile(runs, _read(Path(args.queue)), env)
    _environment(runs)


def compiled_shapes(queue: dict) -> list[tuple[str, int]]:
    """(arch, batch) of every job that trains with the compiled PAG step: what the warm-up compiles."""
    from pagdemo.recipes import get_recipe

    shapes = []
    for job in queue["jobs"]:
        cmd = job["cmd"]
        if "compiled" not in cmd:
            continue
        arch = cmd[cmd.index("--arch") + 1] if "--arch" in cmd else "resnet18"
        recipe = get_recipe(cmd[cmd.index("--recipe") + 1] if "--recipe" in cmd else "paper")
        batch = int(cmd[cmd.index("--batch-size") + 1]) if "--batch-size" in cmd else recipe.batch_size
        shapes.append((arch, batch))
    return sorted(set(shapes))


def _warm_compile(runs: Path, queue: dict, env: dict) -> None:
    """While the data is still on its way: compile the PAG step of each (arch, batch) on synthetic images of the
    same shape, so the real jobs find torch.compile's caches (/tmp/torchinductor_*) warm."""
    for arch, batch in compiled_shapes(queue):
        out = runs / f"warm-{arch}-{batch}"
        cmd = [sys.executable, "-m", "pagdemo", "train", "--method", "cm", "--dataset", "synthetic", "--arch", arch,
               "--limit", str(2 * batch), "--batch-size", str(batch), "--epochs", "1", "--recipe", "fast",
               "--pag-impl", "compiled", "--monitor-limit", "0", "--out", str(out)]
        with open(runs / f"warm-{arch}-{batch}.log", "w") as log:
            subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**env, "TQDM_DISABLE": "1"},
                             start_new_session=True)
        _log(runs, f"warming the compiled step: {arch} at batch {batch}")


def _environment(runs: Path) -> None:
    """What the machine is: torch, GPU, packages (into the session log)."""
    probe = ("import torch, sys; print(sys.version.split()[0], torch.__version__, "
             "torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    _log(runs, f"python / torch / device: {out.stdout.strip() or out.stderr.strip()[-200:]}")


def cmd_poll(args: argparse.Namespace) -> None:
    """Keep the machine while the runner works: print the status now and then, return when done or after --wait-s."""
    runs, end = Path(args.runs), time.time() + args.wait_s
    if args.set_deadline_s is not None:
        plan = _read(runs / "plan.json")
        plan["deadline"] = time.time() + args.set_deadline_s
        _write(runs / "plan.json", plan)
        _log(runs, f"deadline set: training ends {args.set_deadline_s:.0f} s from now")
    last = 0.0
    while True:
        status = _read(runs / "status.json", {})
        if time.time() - last > 30 or status.get("finished") or time.time() >= end:
            print(_status_line(status), flush=True)
            last = time.time()
        if status.get("finished") or time.time() >= end:
            return
        time.sleep(2)


def _status_line(status: dict) -> str:
    jobs = status.get("jobs", {})
    return (f"t={status.get('t_s', '?')} s (deadline {status.get('deadline_s', '?')} s): "
            + ", ".join(f"{n} {s['state']} {s.get('epochs', '')}" for n, s in jobs.items()) if jobs else "runner not ready")


# ----------------------------------------------------------------------------- there: collect; here: unpack

def _to_send(runs: Path) -> list[tuple[Path, str]]:
    """(file, name under $OUT) in priority order: the results archive, shipped weights, then the training
    states of shipped jobs cut at the deadline (the next window resumes them; a probe is not resumed)."""
    queue = _read(Path(_read(runs / "plan.json")["queue"]))
    ship = [j["name"] for j in queue["jobs"] if j.get("ship")]
    files = [(runs / "results.tgz", "results.tgz")]
    for name in ship:
        files += [(f, f"{name}/{f.name}") for f in sorted((runs / name).glob("model*.safetensors"))]
    for name in ship:
        files += [(f, f"{name}/train_state/{f.name}") for f in sorted((runs / name).glob("train_state/*.safetensors"))]
    return files


def parcel(files: list[tuple[Path, str]], sent: set[str]) -> list[tuple[Path, str]]:
    """The next files that fit one call's return: at most 8, each at most 16 MiB, 64 MiB together."""
    out, total = [], 0
    for path, name in files:
        size = path.stat().st_size
        if name in sent or size > MAX_FILE:
            continue
        if len(out) == MAX_FILES or total + size > MAX_TOTAL:
            break
        out.append((path, name))
        total += size
    return out


def cmd_collect(args: argparse.Namespace) -> None:
    """One call's parcel into $OUT; the first also packs every small file (logs, configs, metrics) into results.tgz."""
    runs, out = Path(args.runs), Path(args.out or os.environ["OUT"])
    sent_file = runs / "sent.json"
    sent = set(_read(sent_file, []))
    if not sent:
        with tarfile.open(runs / "results.tgz", "w:gz") as tar:
            for f in sorted(runs.rglob("*")):
                if f.is_file() and f.suffix != ".safetensors" and f.name not in ("results.tgz", "sent.json") \
                        and "dry-init" not in f.parts:
                    tar.add(f, arcname=str(f.relative_to(runs)))
    batch = parcel(_to_send(runs), sent)
    for path, name in batch:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, out / name)
    sent |= {name for _, name in batch}
    _write(sent_file, sorted(sent))
    left = [n for _, n in _to_send(runs) if n not in sent]
    print(f"parcel: {len(batch)} files, {sum(p.stat().st_size for p, _ in batch) / 2**20:.1f} MiB; "
          f"{len(left)} files left" + (f" (next: {left[0]})" if left else " - all collected"))


def cmd_unpack(args: argparse.Namespace) -> None:
    """Merge one returned parcel (the files_at folder of a collect call) into a local run folder."""
    src, dest = Path(args.files_at), Path(args.into)
    dest.mkdir(parents=True, exist_ok=True)
    if (src / "results.tgz").exists():
        with tarfile.open(src / "results.tgz") as tar:
            tar.extractall(dest, filter="data")
    for f in src.rglob("*.safetensors"):
        target = dest / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, target)
    missing = []
    for index in dest.rglob("model.safetensors.index.json"):
        shards = set(json.loads(index.read_text())["weight_map"].values())
        missing += [str(index.parent / s) for s in sorted(shards) if not (index.parent / s).exists()]
    print(f"unpacked into {dest}; " + (f"still missing {len(missing)} shard(s), e.g. {missing[0]}" if missing
                                       else "every indexed shard is here"))


PROBE_KEYS = ("epoch", "train_acc", "ce", "cos", "lr", "lam", "epoch_s", "test_acc", "test_linf_pgd20", "test_l2_pgd20")


def probe_summary(folder: Path) -> dict:
    """Every probe job of an unpacked window: its recipe and settings, per-epoch trajectory, and final subset numbers."""
    rows = []
    for run_dir in sorted(p for p in folder.iterdir() if p.name.startswith("probe-") and (p / "config.json").exists()):
        run = json.loads((run_dir / "config.json").read_text())["run"]
        log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines() if line.strip()]
        last = log[-1] if log else {}
        rows.append({"job": run_dir.name, "recipe": run["recipe"], "arch": run["arch"], "recipe_settings": run["recipe_settings"],
                     "lam": run["lam"], "batch_size": run["batch_size"], "lr": run["lr"], "epochs": run["epochs"],
                     "epochs_done": run.get("epochs_done"), "images_seen": run.get("epochs_done", 0) * run["train_size"],
                     "train_time_s": run.get("train_time_s"), "init": run.get("init"),
                     "init_train_time_s": run.get("init_train_time_s"), "device": run["device"], "commit": run["commit"],
                     "subset_n": last.get("test_n"), "clean": last.get("test_acc"), "linf_pgd20": last.get("test_linf_pgd20"),
                     "l2_pgd20": last.get("test_l2_pgd20"),
                     "trajectory": [{k: r.get(k) for k in PROBE_KEYS} for r in log]})
    return {"about": "Recipe probe (issue 17): Class Mean at an equal budget of epochs, trained concurrently on one GPU; "
                     "clean and PGD-20 (linf 8/255, l2 0.5) on the same fixed 1,000-image test subset after every epoch.",
            "jobs": rows}


def cmd_probe(args: argparse.Namespace) -> None:
    """Here: write the probe's JSON (the README's probe table is printed from it by pagdemo.docs)."""
    summary = probe_summary(Path(args.folder))
    _write(Path(args.out), summary)
    for r in summary["jobs"]:
        print(f"{r['job']}: {r['epochs_done']}/{r['epochs']} epochs, clean {r['clean']}, linf {r['linf_pgd20']}, "
              f"l2 {r['l2_pgd20']}")


def cmd_ship(args: argparse.Namespace) -> None:
    """Here: turn an unpacked job folder into a shipped checkpoint (weights, config, metrics, log; the card re-rendered)."""
    from pagdemo.checkpoints import check_folder, write_model_card

    src, dest = check_folder(args.job), Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("model*.safetensors*"):
        old.unlink()
    for f in src.iterdir():
        if f.is_file() and (f.name.startswith("model") or f.name in ("config.json", "metrics.json", "train_log.jsonl")):
            shutil.copy(f, dest / f.name)
    write_model_card(dest)
    print(f"shipped {src} as {dest}; add {dest}/NOTES.md for what no setting says")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="scripts/window.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stage", help="here: copy what the calls carry into .stage/ and print the calls")
    s.add_argument("--queue", default=str(QUEUE))
    for name in ("start", "run", "poll", "collect"):
        s = sub.add_parser(name)
        s.add_argument("--runs", default="runs/window")
        s.add_argument("--queue", default=str(QUEUE))
        s.add_argument("--dry", action="store_true", help="CPU, synthetic data, tiny models")
    sub.choices["start"].add_argument("--deadline-s", type=float, default=600, help="training ends this many seconds from now")
    sub.choices["start"].add_argument("--foreground", action="store_true", help="run here, not in the background (tests)")
    sub.choices["poll"].add_argument("--wait-s", type=float, default=540)
    sub.choices["poll"].add_argument("--set-deadline-s", type=float, help="move the deadline to this many seconds from now")
    sub.choices["collect"].add_argument("--out", help="default: $OUT")
    s = sub.add_parser("unpack", help="here: merge a collect call's files into a run folder")
    s.add_argument("files_at")
    s.add_argument("--into", required=True)
    s = sub.add_parser("probe", help="here: the probe's JSON from an unpacked window")
    s.add_argument("folder")
    s.add_argument("--out", required=True)
    s = sub.add_parser("ship", help="here: copy an unpacked job into checkpoints/<name>")
    s.add_argument("job")
    s.add_argument("dest")
    args = p.parse_args(argv)
    if args.cmd == "run":
        run(Path(args.runs), _read(Path(args.queue)), args.dry)
        return
    {"stage": cmd_stage, "start": cmd_start, "poll": cmd_poll, "collect": cmd_collect, "unpack": cmd_unpack,
     "probe": cmd_probe, "ship": cmd_ship}[args.cmd](args)


if __name__ == "__main__":
    main()
