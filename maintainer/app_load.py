"""The app under a visitor's load, measured (issue 20): memory over 50 mixed requests, and how soon a run
whose page was closed without cancelling stops and frees the worker. Not a test: its numbers go to a JSON that
docs/app.md prints (python -m maintainer.docs).

    python -m maintainer.app_load [--checkpoints checkpoints] [--json docs/app-load.json]

It starts `python -m pagdemo.app` in a subprocess on the CPU, reads the server's resident memory (VmRSS)
between requests, and talks to it through gradio_client like any API user.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from gradio_client import Client, handle_file
from PIL import Image

from pagdemo.records.files import write_json
from pagdemo.records.provenance import cpu_name
from pagdemo.threat import LINF_EPS

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "pagdemo" / "app" / "examples").glob("*.png"))


def _free_port() -> int:
    """A port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of a process, in MiB (Linux)."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def _wait(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until the app answers at url (or exits, or the timeout passes)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"the app exited with code {proc.returncode} (see its log beside the JSON)")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit("the app did not start")


def _odd_images(folder: Path) -> list[Path]:
    """Uploads a visitor sends besides test images: a photo-sized one, a tiny one, a sliver."""
    paths = []
    for name, size in (("photo.jpg", (1600, 1200)), ("tiny.png", (3, 3)), ("sliver.png", (2000, 12))):
        Image.effect_noise(size, 60).convert("RGB").save(folder / name)
        paths.append(folder / name)
    return paths


def requests(client: Client, names: list[str], odd: list[Path]) -> list[tuple[str, callable]]:
    """50 mixed requests: uploads, grids, compares, curves, toy runs, cards."""
    todo = []
    for i in range(50):
        kind = (
            "preview",
            "pag_grid",
            "preview",
            "compare",
            "eps_curve",
            "preview",
            "pag_grid",
            "model_card",
            "toy",
            "robustness",
        )[i % 10]
        image = str(EXAMPLES[i % len(EXAMPLES)] if i % 3 else odd[i % len(odd)])
        calls = {
            "preview": lambda image=image: client.predict(handle_file(image), api_name="/preview"),
            "pag_grid": lambda image=image: client.predict(
                handle_file(image), names[:3], "all classes", "l2", 4.0, 10, api_name="/pag_grid"
            ),
            "compare": lambda image=image: client.predict(
                handle_file(image), names[:3], "linf", LINF_EPS, 10, api_name="/compare"
            ),
            "eps_curve": lambda i=i: client.predict(
                names[:2], ("linf", "l2")[i % 2], 16 + 16 * (i % 3), 3, api_name="/eps_curve"
            ),
            "model_card": lambda: client.predict(names[0], api_name="/model_card"),
            "toy": lambda i=i: client.predict(1.0, i % 4, api_name="/toy"),
            "robustness": lambda: client.predict(api_name="/robustness"),
        }
        todo.append((kind, calls[kind]))
    return todo


def abandoned_run(url: str, names: list[str]) -> dict:
    """Start a long grid, drop the connection without cancelling, and time a quick request that comes next."""
    code = (
        f"from gradio_client import Client, handle_file; c = Client({url!r}, verbose=False); "
        f"j = c.submit(handle_file({str(EXAMPLES[0])!r}), {names!r}, 'all classes', 'l2', 4.0, 100, "
        "api_name='/pag_grid'); import time; time.sleep(4); import os; os._exit(0)"
    )
    # the visitor closes the page mid-run
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    start = time.perf_counter()
    Client(url, verbose=False).predict(
        handle_file(str(EXAMPLES[1])), names[:1], "l2", 0.5, 2, api_name="/compare"
    )
    return {
        "next_request_s": round(time.perf_counter() - start, 1),
        "abandoned": f"pag_grid, {len(names)} models, 100 steps, dropped after 4 s",
    }


def refusals(client: Client, names: list[str], folder: Path) -> int:
    """Three user mistakes through the API (a bad radius, an unknown model, a text file as an image)."""
    bad = folder / "notes.png"
    bad.write_bytes(b"not a picture")
    calls = [
        lambda: client.predict(
            handle_file(str(EXAMPLES[0])), names[:1], "all classes", "linf", 5.0, 2, api_name="/pag_grid"
        ),
        lambda: client.predict(handle_file(str(EXAMPLES[0])), ["nope"], "l2", 0.5, 2, api_name="/compare"),
        lambda: client.predict(handle_file(str(bad)), api_name="/preview"),
    ]
    refused = 0
    for call in calls:
        try:
            call()
        except Exception:  # noqa: BLE001 - each must be refused
            refused += 1
    return refused


def main() -> None:
    """Start the app, send the requests, write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoints", default="checkpoints")
    p.add_argument("--json", default="docs/app-load.json")
    args = p.parse_args()
    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    log = open(Path(args.json).with_suffix(".server.log"), "w")  # read afterwards: a line per refused request
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pagdemo.app",
            "--checkpoints",
            args.checkpoints,
            "--port",
            str(port),
            "--device",
            "cpu",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait(url, proc)
        client = Client(url, verbose=False)
        from pagdemo.records.checkpoints import list_checkpoints
        from pagdemo.records.report import display_order

        names = [i["name"] for i in sorted(list_checkpoints(ROOT / args.checkpoints)[0], key=display_order)]
        odd = _odd_images(Path(os.environ.get("TMPDIR", "/tmp")))
        trace = [{"after": 0, "kind": "start", "rss_mb": round(rss_mb(proc.pid), 1), "s": 0.0}]
        t0 = time.perf_counter()
        for n, (kind, call) in enumerate(requests(client, names, odd), 1):
            call()
            trace.append(
                {
                    "after": n,
                    "kind": kind,
                    "rss_mb": round(rss_mb(proc.pid), 1),
                    "s": round(time.perf_counter() - t0, 1),
                }
            )
            print(trace[-1], flush=True)
        refused = refusals(client, names, Path(os.environ.get("TMPDIR", "/tmp")))
        time.sleep(1)
        server_log = Path(args.json).with_suffix(".server.log").read_text()
        result = {
            "checkpoints": names,
            "trace": trace,
            "abandoned_run": abandoned_run(url, names),
            "user_mistakes": {
                "sent": 3,
                "refused": refused,
                "log_lines": sum("refused:" in line for line in server_log.splitlines()),
                "tracebacks": server_log.count("Traceback"),
            },
            "rss_after_abandoned_mb": round(rss_mb(proc.pid), 1),
            "date": time.strftime("%Y-%m-%d"),
            "cpu": cpu_name(),
        }
        write_json(args.json, result)
        print(json.dumps({k: v for k, v in result.items() if k != "trace"}, indent=1))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


if __name__ == "__main__":
    main()
