"""RobustBench's zoo in pagdemo, offline: a RobustBench-format file of the paper's linf teacher's architecture
(Engstrom2019Robustness, a ResNet-50) with random weights, where robustbench's load_model looks, is imported
and used like any trained checkpoint; bad files, names and set-ups are one line each. Nothing touches the
network."""

from __future__ import annotations

import argparse
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from pagdemo import cli
from pagdemo.models import CIFAR10_CLASSES
from pagdemo.records.checkpoints import load_checkpoint
from pagdemo.zoo import robustbench

NAME = "Engstrom2019Robustness"
EXAMPLE = "pagdemo/app/examples/cat_3543.png"


def _zoo_model(threat: str = "Linf") -> torch.nn.Module:
    """RobustBench's own model of NAME, random weights, from its model definitions."""
    from pagdemo.zoo import build_zoo_model

    torch.manual_seed(0)
    return build_zoo_model(f"robustbench:cifar10/{threat}/{NAME}").eval()


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """(model_dir with DIR/cifar10/Linf/NAME.pt, its RobustBench model, the imported checkpoint folder)."""
    root = tmp_path_factory.mktemp("zoo")
    model_dir = root / "models"
    (model_dir / "cifar10" / "Linf").mkdir(parents=True)
    model = _zoo_model()
    torch.save(
        model.state_dict(), model_dir / "cifar10" / "Linf" / f"{NAME}.pt"
    )  # the format load_model reads
    (model_dir / "cifar10" / "Linf" / f"{NAME}.json").write_text(
        json.dumps(
            {
                "name": "Robustness library",
                "authors": "Logan Engstrom, Andrew Ilyas, Shibani Santurkar, Dimitris Tsipras",
                "venue": "GitHub,<br>Oct 2019",
                "link": "https://github.com/MadryLab/robustness",
            }
        )
    )  # as in model_info/
    out = root / "checkpoints" / "engstrom-linf"
    assert (
        cli.main(
            [
                "import-robustbench",
                NAME,
                "--threat",
                "Linf",
                "--model-dir",
                str(model_dir),
                "--out",
                str(out),
                "--no-download",
            ]
        )
        == 0
    )
    return model_dir, model, out


def _cifar_dir(tmp_path, n: int = 16):
    """A tiny CIFAR-10 test split in the packed format of shared/data (random images, real class names)."""
    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, format="PNG")
        blobs.append(np.frombuffer(buf.getvalue(), dtype=np.uint8))
    np.savez(
        tmp_path / "test.npz",
        encoded=np.concatenate(blobs),
        offsets=np.cumsum([0] + [len(b) for b in blobs]),
        labels=(np.arange(n) % 10).astype(np.uint8),
        classes=np.array(CIFAR10_CLASSES),
    )
    return tmp_path


def test_the_import_gives_robustbenchs_own_logits_at_its_input_convention(zoo):
    model_dir, model, out = zoo
    robustbench()
    from robustbench.utils import load_model

    theirs = load_model(NAME, model_dir=str(model_dir), dataset="cifar10", threat_model="Linf").eval()
    theirs.load_state_dict(
        {k: v.half().float() if v.is_floating_point() else v for k, v in theirs.state_dict().items()}
    )
    ours = load_checkpoint(out)  # rebuilt from config.json alone, weights stored as fp16
    x = torch.rand(4, 3, 32, 32)  # pixels in [0, 1]: both normalize inside (Engstrom's mu and sigma buffers)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-4)
    assert ours.arch == f"robustbench:cifar10/Linf/{NAME}" and ours.classes == CIFAR10_CLASSES
    assert not (out / "metrics.json").exists()  # no numbers until pagdemo eval runs


def test_the_card_names_the_source_its_citation_and_licence(zoo):
    _, _, out = zoo
    card = (out / "README.md").read_text()
    assert f"RobustBench 1.1.1: cifar10 Linf {NAME}" in card
    assert "Logan Engstrom" in card and "Croce, Andriushchenko" in card and "| licence | `MIT" in card
    assert next(ln for ln in card.splitlines() if ln.startswith("# ")).endswith(
        "imported (trained elsewhere)"
    )
    run = json.loads((out / "config.json").read_text())["run"]
    assert (run["method"], run["adv_norm"], run["adv_eps"]) == ("import", "linf", 8 / 255) and len(
        run["file_sha256"]
    ) == 64


def test_eval_and_attack_run_on_it_unchanged(zoo, tmp_path, capsys):
    _, _, out = zoo
    data = _cifar_dir(tmp_path)
    assert (
        cli.main(["eval", "--checkpoint", str(out), "--limit", "16", "--steps", "2", "--data-dir", str(data)])
        == 0
    )
    record = json.loads((out / "metrics.json").read_text())["evaluations"][-1]
    assert (record["n"], record["norm"], record["eps"]) == (16, "linf", 8 / 255)
    assert (
        cli.main(
            [
                "attack",
                "--checkpoint",
                str(out),
                "--image",
                EXAMPLE,
                "--target",
                "cat",
                "--steps",
                "2",
                "--out",
                str(tmp_path / "grid.png"),
            ]
        )
        == 0
    )
    assert Image.open(tmp_path / "grid.png").size[0] > 96
    assert "grid written" in capsys.readouterr().out


def test_rigd_trains_a_student_from_the_imported_teacher(zoo, tmp_path):
    _, _, out = zoo
    data = _cifar_dir(tmp_path)
    (data / "test.npz").rename(data / "train-0.npz")
    student = tmp_path / "rigd"
    assert (
        cli.main(
            [
                "train",
                "--method",
                "rigd",
                "--teacher",
                str(out),
                "--data-dir",
                str(data),
                "--arch",
                "tinycnn",
                "--limit",
                "16",
                "--batch-size",
                "8",
                "--epochs",
                "1",
                "--monitor-limit",
                "0",
                "--monitor-cos",
                "0",
                "--out",
                str(student),
            ]
        )
        == 0
    )
    run = json.loads((student / "config.json").read_text())["run"]
    assert run["teacher"] == str(out) and run["target_info"]["target"] == "rigd"
    assert json.loads((student / "train_log.jsonl").read_text().splitlines()[0])["cos"] > 0
    assert (
        cli.main(
            [
                "train",
                "--method",
                "rigd",
                "--teacher",
                str(out),
                "--dataset",
                "synthetic",
                "--limit",
                "16",
                "--out",
                str(tmp_path / "wrong"),
            ]
        )
        == 2
    )  # a CIFAR-10 teacher cannot guide another dataset's classes


def test_the_app_lists_it_with_its_source_and_draws_its_grid(zoo):
    from gradio_client import Client, handle_file
    from test_app import _free_port

    from pagdemo.app.ui import build_demo, launch_options

    _, _, out = zoo
    demo = build_demo(out.parent, "cpu")
    port = _free_port()
    demo.launch(prevent_thread_lock=True, quiet=True, **launch_options("127.0.0.1", port, demo))
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        assert "RobustBench 1.1.1" in client.predict(out.name, api_name="/model_card")
        grid, probs, status = client.predict(
            handle_file(EXAMPLE), [out.name], "dog", "l2", 1.0, 2, api_name="/pag_grid"
        )
        assert "done" in status.lower() and len(probs["data"]) == 1
    finally:
        demo.close()


def _one_line(capsys, *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert all(w in err for w in words), err
    return err


def test_a_file_holding_other_python_objects_is_refused(zoo, tmp_path, capsys):
    model_dir = tmp_path / "models"
    (model_dir / "cifar10" / "Linf").mkdir(parents=True)
    torch.save(
        {"state_dict": _zoo_model().state_dict(), "args": argparse.Namespace(lr=0.1)},
        model_dir / "cifar10" / "Linf" / f"{NAME}.pt",
    )
    argv = [
        "import-robustbench",
        NAME,
        "--model-dir",
        str(model_dir),
        "--out",
        str(tmp_path / "out"),
        "--no-download",
    ]
    assert cli.main(argv) == 2
    _one_line(capsys, "holds Python objects other than tensors")
    assert not (tmp_path / "out").exists()


def test_a_download_is_checked_before_robustbench_reads_it(tmp_path, capsys, monkeypatch):
    """What a download brings is opened tensors-only first (the download itself is faked: no network in
    tests)."""
    robustbench()
    import robustbench.utils as rb_utils

    fetched = []

    def fake_download(gdrive_id, path, payload=None):
        if payload is None:
            payload = {"args": argparse.Namespace(lr=0.1)}
        fetched.append(gdrive_id)
        torch.save(payload, path)

    monkeypatch.setattr(rb_utils, "download_gdrive_new", fake_download)
    monkeypatch.setattr(rb_utils, "load_model", lambda *a, **k: pytest.fail("read before the check"))
    argv = [
        "import-robustbench",
        NAME,
        "--model-dir",
        str(tmp_path / "models"),
        "--out",
        str(tmp_path / "out"),
    ]
    assert cli.main(argv) == 2 and len(fetched) == 1
    _one_line(capsys, "holds Python objects other than tensors")


def test_missing_file_unknown_name_and_missing_extra_are_one_line(tmp_path, capsys, monkeypatch):
    base = ["--model-dir", str(tmp_path / "models"), "--out", str(tmp_path / "out"), "--no-download"]
    assert cli.main(["import-robustbench", NAME, *base]) == 2
    _one_line(capsys, str(tmp_path / "models" / "cifar10" / "Linf" / f"{NAME}.pt"), "put RobustBench's")
    assert cli.main(["import-robustbench", "Engstrom2019Robust", "--threat", "L2", *base]) == 2
    _one_line(capsys, "no cifar10 L2 model 'Engstrom2019Robust'", f"did you mean {NAME}")
    monkeypatch.setitem(
        __import__("sys").modules, "robustbench", None
    )  # as if the [zoo] extra were not installed
    assert cli.main(["import-robustbench", NAME, *base]) == 2
    _one_line(capsys, "pip install -e '.[zoo]'")
    assert not (tmp_path / "out").exists()
