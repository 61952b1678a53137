"""The files a window's calls share (the plan, the status, the session log, all JSON written atomically) and
the parcels that bring the results back: at most 8 files of 16 MiB, 64 MiB together, per call.

Both sides use it: maintainer/window_runner.py on the GPU machine, maintainer/window.py here. JSON goes
through pagdemo.records.files (atomic writes: the runner and the polls read these files while they change).
"""

from __future__ import annotations

import math
import shutil
import tarfile
import time
from pathlib import Path

from pagdemo.records.files import read_json as read
from pagdemo.records.files import write_json as write

STAGE = Path(".stage")
MAX_FILES, MAX_FILE, MAX_TOTAL = (8, 16 * 2**20, 64 * 2**20)  # what comes back from one call


def log(runs: Path, text: str) -> None:
    """One line to the window's session log (and stdout), stamped with seconds since the start."""
    plan = read(runs / "plan.json", {})
    line = f"[+{time.time() - plan.get('t0', time.time()):6.1f}s] {text}"
    print(line, flush=True)
    with open(runs / "session.log", "a") as f:
        f.write(line + "\n")


def read_plan(runs: Path) -> dict:
    """The window's plan.json: start time, deadline, queue, process ids."""
    return read(runs / "plan.json")


RUNS = "runs/window"  # the runner's folder on the GPU machine: every job trains into RUNS/<name>
MANIFEST = "MANIFEST.json"  # in every carried folder: its files and sizes, so the runner knows it is complete


def carry_map(queue: dict) -> dict[str, str]:
    """Where each carried folder goes on the GPU machine -> where it is here: the queue's checkpoints, and
    every resumed row's unpacked run folder (its weights, log and train_state/) into the runner's
    runs/window/."""
    resumed = {f"{RUNS}/{j['name']}": j["resume"] for j in queue["jobs"] if j.get("resume")}
    return {**queue.get("carry", {}), **resumed}


def write_manifest(folder: Path) -> None:
    """Here, when staging: list the folder's files (it travels file by file, over several calls)."""
    files = {str(f.relative_to(folder)): f.stat().st_size for f in sorted(folder.rglob("*")) if f.is_file()}
    write(folder / MANIFEST, {k: v for k, v in files.items() if k != MANIFEST})


def complete(folder: Path) -> bool:
    """There: every file of a carried folder has arrived whole (a run must not start on half a checkpoint)."""
    files = read(folder / MANIFEST, None)
    return files is not None and all(
        (folder / k).is_file() and (folder / k).stat().st_size == v for k, v in files.items()
    )


# ----------------------------------------------------------------------------- the parcels


def collect_calls(queue: dict) -> int:
    """How many collect calls a window's results need: the archive and shipped weights, a cut job's state
    beside."""
    ship = sum(bool(j.get("ship")) for j in queue["jobs"])
    return math.ceil((1 + 2 * ship) / MAX_FILES) + 1


def to_send(runs: Path) -> list[tuple[Path, str]]:
    """(file, name under $OUT) in priority order: the results archive, shipped weights, then the training
    states of shipped jobs cut at the deadline (the next window resumes them; a probe or a collapsed row is
    not)."""
    states = read(runs / "status.json", {}).get("jobs", {})  # a collapsed run is neither shipped nor resumed
    jobs = read(Path(read_plan(runs)["queue"]))["jobs"]
    ship = [
        j["name"] for j in jobs if j.get("ship") and states.get(j["name"], {}).get("state") != "collapsed"
    ]
    files = [(runs / "results.tgz", "results.tgz")]
    for name in ship:
        files += [(f, f"{name}/{f.name}") for f in sorted((runs / name).glob("model*.safetensors"))]
    for name in ship:
        files += [
            (f, f"{name}/train_state/{f.name}")
            for f in sorted((runs / name).glob("train_state/*.safetensors"))
        ]
    return files


def parcel(files: list[tuple[Path, str]], sent: set[str]) -> list[tuple[Path, str]]:
    """The next files that fit one call's return: at most 8, each at most 16 MiB, 64 MiB together.

    Raises:
        ValueError: a file is over 16 MiB, so it could never come back.
    """
    big = [name for path, name in files if path.stat().st_size > MAX_FILE]
    if big:
        raise ValueError(f"over 16 MiB, cannot come back: {big}")
    out, total = [], 0
    for path, name in files:
        if name in sent:
            continue
        if len(out) == MAX_FILES or total + path.stat().st_size > MAX_TOTAL:
            break
        out.append((path, name))
        total += path.stat().st_size
    return out


def collect(runs: Path, out: Path, force: bool = False) -> None:
    """One call's parcel into $OUT; the first also packs every small file (logs, configs, metrics) into
    results.tgz."""
    if not read(runs / "status.json", {}).get("finished") and not force:
        raise SystemExit("the runner is still working: poll until it is done (or collect --force)")
    sent_file = runs / "sent.json"
    sent = set(read(sent_file, []))
    if not sent:
        with tarfile.open(runs / "results.tgz", "w:gz") as tar:
            for f in sorted(runs.rglob("*")):
                if (
                    f.is_file()
                    and f.suffix != ".safetensors"
                    and f.name not in ("results.tgz", "sent.json")
                    and "dry-init" not in f.parts
                ):
                    tar.add(f, arcname=str(f.relative_to(runs)))
    batch = parcel(to_send(runs), sent)
    for path, name in batch:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, out / name)
    sent |= {name for _, name in batch}
    write(sent_file, sorted(sent))
    left = [n for _, n in to_send(runs) if n not in sent]
    print(
        f"parcel: {len(batch)} files, {sum(p.stat().st_size for p, _ in batch) / 2**20:.1f} MiB; "
        f"{len(left)} files left" + (f" (next: {left[0]})" if left else " - all collected")
    )
