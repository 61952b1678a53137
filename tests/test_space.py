"""The repository as a Hugging Face Space: README front matter, `python app.py` serving the app of `pagdemo
app`, and the model runs wrapped in spaces.GPU only where the `spaces` package is installed (ZeroGPU)."""

import functools
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

pytest.importorskip("gradio_client")
import gradio as gr  # noqa: E402
from gradio_client import Client  # noqa: E402
from test_app import EXAMPLE, _free_port, make_tiny_checkpoints  # noqa: E402
from test_browser import _wait_for_http  # noqa: E402

from pagdemo.app.ui import build_demo, launch_options, on_gpu  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _front_matter() -> dict[str, str]:
    """The README's YAML header, as the Hub reads its flat `key: value` lines."""
    text = (ROOT / "README.md").read_text()
    assert text.startswith("---\n"), "the Space's front matter must open README.md"
    header = text.split("---\n", 2)[1]
    return dict(line.split(": ", 1) for line in header.splitlines() if ": " in line)


def test_the_readme_declares_a_gradio_space_on_the_tested_gradio():
    meta = _front_matter()
    assert meta["sdk"] == "gradio" and (ROOT / meta["app_file"]).is_file()
    assert meta["sdk_version"] == gr.__version__  # the Space runs the Gradio the tests ran
    assert len(meta["short_description"]) <= 60  # the Hub's limit


def test_python_app_py_serves_the_same_endpoints_as_pagdemo_app(tmp_path):
    make_tiny_checkpoints(tmp_path)
    port = _free_port()
    env = {
        **os.environ,
        "PAGDEMO_CHECKPOINTS": str(tmp_path),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "app.py"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_for_http(f"http://127.0.0.1:{port}/", proc)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        demo = build_demo(tmp_path, "cpu")  # what `pagdemo app --checkpoints DIR` serves
        demo.launch(prevent_thread_lock=True, quiet=True, **launch_options("127.0.0.1", _free_port(), demo))
        served, expected = (
            c.view_api(print_info=False, return_format="dict")["named_endpoints"]
            for c in (client, Client(demo.local_url, verbose=False))
        )
        assert served == expected and len(served) == 7
        assert client.predict("pag-oi", api_name="/model_card").startswith("# pag-oi")
        demo.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_the_model_runs_ask_spaces_gpu_for_a_gpu_only_where_spaces_is_installed(tmp_path, monkeypatch):
    make_tiny_checkpoints(tmp_path)
    wrapped, called = [], []

    def gpu(fn):  # what `spaces.GPU` does, seen from outside: the same function, run on a lent GPU
        wrapped.append(fn.__name__)

        @functools.wraps(fn)
        def on_lent_gpu(*args):
            called.append(fn.__name__)
            return fn(*args)

        return on_lent_gpu

    plain = build_demo(tmp_path, "cpu")
    assert (
        not wrapped and on_gpu()(gpu) is gpu
    )  # `spaces` is not installed here: the handlers run as they are
    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=gpu))
    demo = build_demo(tmp_path, "cpu")
    assert sorted(wrapped) == [
        "compare",
        "eps_curve",
        "pag_grid",
    ]  # previews, cards and the toy stay on the CPU
    assert demo.get_api_info() == plain.get_api_info()  # the same endpoints and signatures
    fns = {fn.api_name: fn for fn in demo.fns.values() if fn.api_visibility == "public"}
    (panel, table, _), *_ = list(fns["compare"].fn({"path": EXAMPLE}, ["vanilla"], "l2", 0.5, 2))
    assert called == ["compare"] and list(table["model"]) == ["vanilla"]
    assert list(fns["model_card"].fn("vanilla"))[0][0].startswith("# vanilla") and called == ["compare"]
