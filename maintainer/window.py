"""One GPU window, one prepared command per device call (issue 17).

A window is 15 minutes of device time, the machine's start included; the working tree that
travels is at most 64 MiB per call, and at most 8 files of 16 MiB (64 MiB together) come back.
This tool turns maintainer/queue.json into that sequence of calls (run from the repository root: python -m
puts it on the path, so pagdemo comes from the checkout, which the GPU machine does not install):

  here:   python -m maintainer.window preflight    # one CPU epoch of every job, compiled steps too
  here:   python -m maintainer.window stage        # copies data, checkpoints and the commit into .stage/;
                                                   # prints every call and its carry
  call 1: python3 -m maintainer.window start       # carries data; starts the runner (setsid)
  call 2: python3 -m maintainer.window poll --budget-left-s B --wait-s 5   # B: budget_left_s after call 1
  call 3: python3 -m maintainer.window poll --wait-s 500   # the last data: training starts once it checks out
  ...     python3 -m maintainer.window poll --wait-s 540   # until every job is done or cut at the deadline
  then:   python3 -m maintainer.window collect     # repeated: each call brings the next parcel back
  here:   python -m maintainer.window unpack <files_at> --into runs/window-<date>   # in the next call's batch

The calls follow each other without a pause: the machine goes back after 30 s idle. What runs on
the GPU machine is maintainer/window_runner.py (the runner and the polls) with maintainer/window_parcels.py
(the shared files and the parcels that come back); `--dry` runs the same cycle on the CPU with
synthetic data and tiny models (tests/test_window.py does).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

from maintainer import window_parcels as parcels
from maintainer import window_runner as runner
from maintainer.window_parcels import MAX_FILES, MAX_TOTAL, STAGE, parcel, read, write  # noqa: F401 (the tests use them)
from pagdemo.records.files import read_jsonl  # stdlib only: the GPU side's calls load no torch

QUEUE = Path("maintainer/queue.json")
MAX_TREE = 64 * 2**20  # what travels to the machine in one call


# ----------------------------------------------------------------------------- here: stage and plan


def tree_bytes() -> int:
    """Bytes of the working tree that travels without carry: tracked and untracked-not-ignored files, no
    weights."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    return sum(
        Path(f).stat().st_size for f in out if f and Path(f).is_file() and not f.endswith(".safetensors")
    )


def plan_calls(queue: dict, tree: int, sizes: dict[str, int]) -> list[dict]:
    """The device calls: staging data and carried folders within 64 MiB each, then polls and collects."""
    data = [f"{queue['data']['dir']}/{name}" for name in queue["data"]["files"]]
    first = [f"{queue['data']['dir']}/SHA256SUMS", str(STAGE / "COMMIT")]
    carried = [
        p for p in sizes if p not in data and p not in first
    ]  # checkpoints, resumed runs: file by file
    items = sorted(data, key=lambda p: -sizes[p]) + carried  # the data largest first, then the rest
    calls = [{"carry": list(first), "command": "python3 -m maintainer.window start"}]
    if tree + sum(sizes[p] for p in first) > MAX_TREE:
        raise SystemExit(
            f"the working tree is {tree / 2**20:.1f} MiB (limit 64): take the shipped weights out first"
        )
    for item in items:  # first fit: each carried path joins the first call with room
        for call in calls:
            if (
                tree + sum(sizes[p] for p in call["carry"]) + sizes[item] <= MAX_TREE
                and len(call["carry"]) < 8
            ):
                call["carry"].append(item)
                break
        else:
            calls.append({"carry": [item], "command": "python3 -m maintainer.window poll --wait-s 5"})
    if len(calls) > 1:
        left = len(calls) - 2  # staging calls after the one that sets the deadline
        calls[1]["command"] = (
            f"python3 -m maintainer.window poll --budget-left-s B --staging-left {left} --wait-s 5"
        )
        calls[-1]["command"] = calls[-1]["command"].replace("--wait-s 5", "--wait-s 500")
    calls.append(
        {"carry": [], "command": "python3 -m maintainer.window poll --wait-s 540   # repeat until all done"}
    )
    calls.append(
        {"carry": [], "command": "python3 -m maintainer.window collect   # repeat until nothing is left"}
    )
    return calls


def cmd_stage(args: argparse.Namespace) -> None:
    """Copy what the calls carry into .stage/ and print the calls."""
    queue = read(Path(args.queue))
    dest, src = Path(queue["data"]["dir"]), Path(queue["data"]["source"])
    dest.mkdir(parents=True, exist_ok=True)
    for name in [*queue["data"]["files"], "SHA256SUMS"]:
        if not (dest / name).exists() or (dest / name).stat().st_size != (src / name).stat().st_size:
            shutil.copy(src / name, dest / name)
    for target, source in parcels.carry_map(queue).items():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(
            source, target, ignore=shutil.ignore_patterns("README.md", "audit-*.json", "NOTES.md")
        )
        parcels.write_manifest(Path(target))
    from pagdemo.records.provenance import git_commit

    (STAGE / "COMMIT").write_text(git_commit() + "\n")
    paths = [f"{queue['data']['dir']}/{n}" for n in [*queue["data"]["files"], "SHA256SUMS"]] + [
        str(STAGE / "COMMIT")
    ]
    sizes = {p: Path(p).stat().st_size for p in paths}
    files = [f for t in parcels.carry_map(queue) for f in sorted(Path(t).rglob("*")) if f.is_file()]
    sizes.update({str(f): f.stat().st_size for f in files})  # file by file: a resumed run is over 64 MiB
    tree = tree_bytes()
    print(
        f"working tree without weights: {tree / 2**20:.1f} MiB; take the shipped weights out for the calls:\n"
        "  rm checkpoints/*/*.safetensors        (afterwards: git checkout -- checkpoints)\n"
    )
    for i, call in enumerate(plan_calls(queue, tree, sizes), 1):
        mib = (tree + sum(sizes.get(p, 0) for p in call["carry"])) / 2**20
        print(f"call {i}: carry {json.dumps(call['carry'])}  ({mib:.1f} MiB)\n        {call['command']}")
    print(
        "\nB (call 2): the budget_left_s the lease reported after call 1; the runner keeps back what the "
        "calls still to come need. Make the calls back to back: the machine goes back after 30 s idle."
    )


def resume_problem(cmd: list[str], job: dict) -> str | None:
    """Why a resumed row would refuse to start on the GPU (its command differs from its state), or None."""
    from pagdemo.cli import parse
    from pagdemo.train.config import check_resumable, resolve
    from pagdemo.train.state import has_state

    if not has_state(Path(job["resume"])):
        return (
            f"{job['resume']} holds no train_state/ to resume (unpack every parcel of the window that cut it)"
        )
    try:
        check_resumable(Path(job["resume"]), resolve(parse(cmd)[1]))
    except ValueError as e:
        return str(e)
    return None


def cmd_preflight(args: argparse.Namespace) -> None:
    """Here, before staging: every job's training, one epoch on the CPU (synthetic data, tinycnn) with its own
    --pag-impl; the dry run swaps `compiled` for `explicit`, and the first window lost its authors' arms to a
    step that failed only compiled. Exits 1 naming each job that did not train."""
    import tempfile

    queue, failed = read(Path(args.queue)), []
    for job in (j for j in queue["jobs"] if j.get("resume")):  # its real command against the state it resumes
        problem = resume_problem(runner.job_commands(job, queue, Path(parcels.RUNS), dry=False)[0][3:], job)
        print(
            f"{job['name']}: " + (f"FAILED: {problem}" if problem else f"resumes {job['resume']}"), flush=True
        )
        failed += [job["name"]] if problem else []
    runs = Path(tempfile.mkdtemp(prefix="preflight-"))
    runner._dry_init(runs)
    for job in queue["jobs"]:
        train = runner.job_commands(job, queue, runs, dry=True)[0]
        if "compiled" in job["cmd"]:
            train = ["compiled" if a == "explicit" else a for a in train]
        proc = subprocess.run(train, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        print(f"{job['name']}: " + ("trains" if proc.returncode == 0 else f"FAILED: {last}"), flush=True)
        failed += [job["name"]] if proc.returncode else []
    shutil.rmtree(runs, ignore_errors=True)
    if failed:
        raise SystemExit(f"{len(failed)} job(s) would fail on the GPU too: {', '.join(failed)}")


# ----------------------------------------------------------------------------- here: unpack, summary, ship


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
    from pagdemo.records.checkpoints import shard_names

    missing = [
        str(index.parent / name)
        for index in dest.rglob("model.safetensors.index.json")
        for name in sorted(shard_names(index.parent))
        if not (index.parent / name).exists()
    ]
    print(
        f"unpacked into {dest}; "
        + (
            f"still missing {len(missing)} shard(s), e.g. {missing[0]}"
            if missing
            else "every indexed shard is here"
        )
    )


PROBE_KEYS = (
    "epoch",
    "train_acc",
    "ce",
    "cos",
    "cos_train",
    "cos_train_coupling",
    "cos_eval",
    "lr",
    "lam",
    "epoch_s",
    "test_acc",
    "test_linf_pgd20",
    "test_l2_pgd20",
)


def window_summary(folder: Path) -> dict:
    """Every job of an unpacked window (rows and probes): its state, recipe and settings, per-epoch trajectory
    (the monitor: clean and PGD-20 on the fixed test subset, cos train and eval), and final subset numbers."""
    rows, states = [], read(folder / "status.json", {}).get("jobs", {})
    jobs = [
        p
        for p in folder.iterdir()
        if (p / "config.json").exists() and not p.name.startswith(("dry-", "warm-"))
    ]
    for run_dir in sorted(jobs):
        run = read(run_dir / "config.json")["run"]
        log = read_jsonl(run_dir / "train_log.jsonl")
        last = log[-1] if log else {}
        rows.append(
            {
                "job": run_dir.name,
                "state": states.get(run_dir.name, {}).get("state"),
                "method": run["method"],
                "cm_scaling": run.get("cm_scaling"),
                "recipe": run["recipe"],
                "arch": run["arch"],
                "recipe_settings": run["recipe_settings"],
                "lam": run["lam"],
                "batch_size": run["batch_size"],
                "lr": run["lr"],
                "epochs": run["epochs"],
                "pag_impl": run.get("pag_impl"),
                "bn_coupling": run.get("bn_coupling"),
                "pag_frame": run.get("pag_frame", "augmented"),
                "amp": run.get("amp"),
                "epochs_done": run.get("epochs_done"),
                "images_seen": run.get("epochs_done", 0) * run["train_size"],
                "train_time_s": run.get("train_time_s"),
                "init": run.get("init"),
                "init_train_time_s": run.get("init_train_time_s"),
                "device": run["device"],
                "commit": run["commit"],
                "subset_n": last.get("test_n"),
                "clean": last.get("test_acc"),
                "linf_pgd20": last.get("test_linf_pgd20"),
                "l2_pgd20": last.get("test_l2_pgd20"),
                "trajectory": [{k: r.get(k) for k in PROBE_KEYS} for r in log],
            }
        )
    from pagdemo.threat import eval_eps

    radii = f"linf {eval_eps('linf', 'cifar10') * 255:.0f}/255, l2 {eval_eps('l2', 'cifar10'):g}"
    return {
        "about": "A GPU window's jobs (maintainer/queue.json), trained concurrently on one GPU; clean and "
        f"PGD-20 ({radii}) on the same fixed test subset after every epoch.",
        "jobs": rows,
    }


def cmd_summary(args: argparse.Namespace) -> None:
    """Here: write the window's JSON (docs/gpu/<date>-<gpu>/window.json, which docs/training.md cites)."""
    summary = window_summary(Path(args.folder))
    write(Path(args.out), summary)
    for r in summary["jobs"]:
        print(
            f"{r['job']} ({r['state']}): {r['epochs_done']}/{r['epochs']} epochs, clean {r['clean']}, "
            f"linf {r['linf_pgd20']}, l2 {r['l2_pgd20']}"
        )


def cmd_ship(args: argparse.Namespace) -> None:
    """Here: turn an unpacked job folder into a shipped checkpoint (weights, config, metrics, log; the card
    re-rendered)."""
    from pagdemo.records.checkpoints import check_folder, write_model_card

    src, dest = check_folder(args.job), Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("model*.safetensors*"):
        old.unlink()
    for f in src.iterdir():
        if f.is_file() and (
            f.name.startswith("model") or f.name in ("config.json", "metrics.json", "train_log.jsonl")
        ):
            shutil.copy(f, dest / f.name)
    write_model_card(dest)
    print(f"shipped {src} as {dest}; add {dest}/NOTES.md for what no setting says")


def main(argv: list[str] | None = None) -> None:
    """The window's command line: here (stage, unpack, summary, ship), there (start, run, poll, collect)."""
    p = argparse.ArgumentParser(
        prog="python -m maintainer.window",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stage", help="here: copy what the calls carry into .stage/ and print the calls")
    s.add_argument("--queue", default=str(QUEUE))
    for name in ("start", "run", "poll", "collect"):
        s = sub.add_parser(name)
        s.add_argument("--runs", default=parcels.RUNS)
        s.add_argument("--queue", default=str(QUEUE))
        s.add_argument("--dry", action="store_true", help="CPU, synthetic data, tiny models")
    sub.choices["start"].add_argument(
        "--deadline-s",
        type=float,
        default=600,
        help="a provisional deadline, until a poll sets it from the budget",
    )
    sub.choices["start"].add_argument(
        "--foreground", action="store_true", help="run here, not in the background (tests)"
    )
    sub.choices["poll"].add_argument("--wait-s", type=float, default=540)
    sub.choices["poll"].add_argument(
        "--budget-left-s", type=float, help="set the deadline from the lease's budget left"
    )
    sub.choices["poll"].add_argument(
        "--staging-left", type=int, default=1, help="staging calls still to come"
    )
    sub.choices["collect"].add_argument("--out", help="default: $OUT")
    sub.choices["collect"].add_argument(
        "--force", action="store_true", help="collect while the runner still works"
    )
    s = sub.add_parser(
        "preflight", help="here: one CPU epoch of every job with its own PAG step (compiled too)"
    )
    s.add_argument("--queue", default=str(QUEUE))
    s = sub.add_parser("unpack", help="here: merge a collect call's files into a run folder")
    s.add_argument("files_at")
    s.add_argument("--into", required=True)
    s = sub.add_parser(
        "summary", help="here: the window's JSON (every job's settings and monitor) from its folder"
    )
    s.add_argument("folder")
    s.add_argument("--out", required=True)
    s = sub.add_parser("ship", help="here: copy an unpacked job into checkpoints/<name>")
    s.add_argument("job")
    s.add_argument("dest")
    args = p.parse_args(argv)
    if args.cmd == "run":
        runner.run(Path(args.runs), read(Path(args.queue)), args.dry)
    elif args.cmd == "start":
        runner.start(Path(args.runs), args.queue, args.deadline_s, args.dry, args.foreground)
    elif args.cmd == "poll":
        if args.budget_left_s is not None:
            runner.set_deadline(Path(args.runs), args.budget_left_s, args.staging_left)
        runner.poll(Path(args.runs), args.wait_s)
    elif args.cmd == "collect":
        parcels.collect(Path(args.runs), Path(args.out or os.environ["OUT"]), args.force)
    else:
        {
            "stage": cmd_stage,
            "preflight": cmd_preflight,
            "unpack": cmd_unpack,
            "summary": cmd_summary,
            "ship": cmd_ship,
        }[args.cmd](args)


if __name__ == "__main__":
    main()
