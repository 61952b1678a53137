"""The Hugging Face Hub both ways, offline: hf-hub: checkpoints load from a huggingface_hub cache laid out as
the library keeps downloads (models--ORG--NAME/blobs, snapshots/REV, refs/main) with HF_HUB_OFFLINE=1;
push-to-hub stages exactly a checkpoint's files with a card whose model-index huggingface_hub parses; bad
inputs are one line, exit 2. No test reaches the network: offline mode is forced and sockets refuse."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard, constants
from PIL import Image

from pagdemo import cli
from pagdemo.models import PAGClassifier
from pagdemo.records.card import render_card
from pagdemo.records.checkpoints import (
    append_metrics,
    info,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from pagdemo.records.hub import HubError, download
from pagdemo.records.push import checkpoint_files, stage
from pagdemo.records.report import to_percent

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "checkpoints"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(cache: Path, repo: str, folder: Path, revision: str = COMMIT) -> Path:
    """A checkpoint as huggingface_hub's cache keeps a download: content-named blobs, a snapshot of links to
    them, and refs/main naming the snapshot."""
    base = cache / ("models--" + repo.replace("/", "--"))
    snapshot = base / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (base / "blobs").mkdir(exist_ok=True)
    for f in sorted(p for p in folder.iterdir() if p.is_file()):
        blob = base / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copyfile(f, blob)
        (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))
    (base / "refs").mkdir(exist_ok=True)
    (base / "refs" / "main").write_text(revision)  # no newline, as huggingface_hub writes it
    return snapshot


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache, offline mode on (in this process and its children), and no sockets."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("a Hub test tried to reach the network")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    return cache


@pytest.fixture
def tiny(tmp_path) -> Path:
    """A small checkpoint of this run's making, with one recorded evaluation."""
    torch.manual_seed(0)
    folder = save_checkpoint(
        PAGClassifier("tinycnn", 3, ["cat", "dog", "fox"]),
        tmp_path / "tiny",
        {"method": "cm", "dataset": "synthetic"},
    )
    append_metrics(
        folder,
        {"attack": "pgd-20", "norm": "l2", "eps": 0.5, "steps": 20, "restarts": 1, "n": 64, "limit": 64}
        | {"clean_acc": 0.6875, "robust_acc": 0.40625},
    )
    return folder


def test_a_shipped_checkpoint_in_the_cache_loads_offline_with_identical_logits(cache):
    snapshot = hub_cache(cache, "someone/vanilla", SHIPPED / "vanilla")
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = load_checkpoint(SHIPPED / "vanilla")(x)
        for ref in ("hf-hub:someone/vanilla", f"hf-hub:someone/vanilla@{COMMIT}"):
            assert torch.equal(load_checkpoint(ref)(x), expected), ref
    assert download("hf-hub:someone/vanilla") == snapshot


def test_the_cli_reaches_the_cache_through_the_environment(cache, tiny, tmp_path):
    """The real command in a fresh process: HF_HUB_CACHE and HF_HUB_OFFLINE=1 from the environment only."""
    hub_cache(cache, "someone/tiny", tiny)
    Image.new("RGB", (32, 32), (120, 60, 30)).save(tmp_path / "cat.png")
    proc = subprocess.run(
        [sys.executable, "-m", "pagdemo", "attack", "--checkpoint", "hf-hub:someone/tiny", "--image"]
        + [str(tmp_path / "cat.png"), "--steps", "1", "--out", str(tmp_path / "grid.png")],
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "grid.png").stat().st_size > 0


def test_training_takes_its_teacher_and_start_from_the_hub(cache, tmp_path, capsys):
    small = [
        "--dataset",
        "synthetic",
        "--epochs",
        "1",
        "--limit",
        "64",
        "--monitor-limit",
        "16",
        "--monitor-robust",
        "8",
    ]
    assert cli.main(["train", *small, "--out", str(tmp_path / "base")]) == 0
    hub_cache(cache, "someone/base", tmp_path / "base")
    hub = "hf-hub:someone/base"
    argv = [
        "train",
        *small,
        "--method",
        "rigd",
        "--teacher",
        hub,
        "--init",
        hub,
        "--out",
        str(tmp_path / "rigd"),
    ]
    assert cli.main(argv) == 0, capsys.readouterr().err
    run = info(tmp_path / "rigd")["run"]
    assert (run["teacher"], run["init"]) == (hub, hub)


def test_the_app_lists_a_hub_checkpoint_beside_a_folder_of_them(cache, tiny, tmp_path):
    hub_cache(cache, "someone/tiny", tiny)
    found, skipped = list_checkpoints(f"hf-hub:someone/tiny,{SHIPPED}")
    names = [i["name"] for i in found]
    assert names[0] == "tiny" and set(names[1:]) == {"vanilla", "pag-cm", "adv-l2", "adv-linf"}, names
    assert Path(found[0]["path"]).parent.name == "snapshots" and not skipped
    assert [i["name"] for i in list_checkpoints(tiny)[0]] == ["tiny"]  # a checkpoint folder itself, too


def _one_line_exit_2(argv: list[str], capsys, *words: str) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert all(w in err for w in words), err
    return err


@pytest.mark.parametrize(
    "ref, words",
    [
        (
            "hf-hub:someone/absent",
            ["hf-hub:someone/absent", "not in the Hugging Face cache", "HF_HUB_OFFLINE"],
        ),
        ("hf-hub:someone/tiny@v2", ["hf-hub:someone/tiny@v2", "not in the Hugging Face cache"]),
        ("hf-hub:no-org", ["'no-org' is not a Hub repo", "ORG/NAME"]),
    ],
    ids=["missing-repo", "missing-revision", "not-org-name"],
)
def test_a_checkpoint_the_cache_cannot_give_is_one_line(cache, tiny, tmp_path, capsys, ref, words):
    hub_cache(cache, "someone/tiny", tiny)
    Image.new("RGB", (32, 32)).save(tmp_path / "cat.png")
    _one_line_exit_2(
        ["attack", "--checkpoint", ref, "--image", str(tmp_path / "cat.png"), "--out", "g.png"],
        capsys,
        *words,
    )
    with pytest.raises(HubError):
        download(ref)


def test_eval_of_a_hub_checkpoint_does_not_write_into_the_cache(cache, tiny, capsys):
    hub_cache(cache, "someone/tiny", tiny)
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("*")}
    _one_line_exit_2(["eval", "--checkpoint", "hf-hub:someone/tiny"], capsys, "--no-record", "--json")
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*")} == before


def test_the_card_carries_a_model_index_that_huggingface_hub_parses(tiny):
    data = ModelCard((tiny / "README.md").read_text()).data
    assert data.library_name == "pagdemo" and data.model_name == "tiny" and data.datasets == ["synthetic"]
    clean, pgd = data.eval_results
    assert (clean.metric_type, clean.metric_value, clean.dataset_split) == ("accuracy", 68.75, "test")
    assert (pgd.metric_type, pgd.metric_value, pgd.metric_config) == ("robust_accuracy", 40.62, "l2")
    assert (
        pgd.metric_name == "PGD-20 robust accuracy (%), l2 eps=0.5, 64 test images"
    )  # not the full test set
    assert pgd.metric_args == {"n": 64, "norm": "l2", "eps": 0.5, "steps": 20, "restarts": 1}


@pytest.mark.parametrize("name", ["vanilla", "pag-cm", "adv-l2", "adv-linf"])
def test_the_shipped_cards_are_rendered_from_their_records_with_their_results(name):
    folder = SHIPPED / name
    card = (folder / "README.md").read_text()
    assert card == render_card(info(folder)), f"checkpoints/{name}/README.md is stale: rerender it"
    results = {
        (r.metric_name.split(" (%)")[0], r.metric_config): r for r in ModelCard(card).data.eval_results
    }
    full = [e for e in info(folder)["evaluations"] if e.get("attack") == "pgd-20" and e["limit"] is None]
    for norm in ("linf", "l2"):
        record = [e for e in full if e["norm"] == norm][-1]  # the full test set, as recorded
        pgd = results[("PGD-20 robust accuracy", norm)]
        assert (pgd.metric_value, pgd.metric_args["n"]) == (to_percent(record["robust_acc"]), 10000)
    assert results[("clean accuracy", None)].metric_value == to_percent(full[-1]["clean_acc"])
    aa = [r for (label, _), r in results.items() if label.startswith("AutoAttack")]
    assert all("test images" in r.metric_name for r in aa)  # AutoAttack ran on a subset: the name says so


def test_staging_copies_exactly_the_checkpoints_files(tiny, tmp_path):
    (tiny / "audit-l2.json").write_text('{"norm": "l2", "finished": false}')
    (tiny / "train_state").mkdir()  # resume state, not part of the checkpoint
    (tiny / "train_state" / "progress.json").write_text("{}")
    (tiny / "grid.png").write_bytes(b"not a record")
    before = {p.name: p.read_bytes() for p in tiny.iterdir() if p.is_file()}
    dest = tmp_path / "staged"
    dest.mkdir()
    files = stage(tiny, dest, "my-model")
    assert files == sorted(p.name for p in dest.iterdir())
    assert files == ["README.md", "audit-l2.json", "config.json", "metrics.json", "model.safetensors"]
    assert all((dest / n).read_bytes() == (tiny / n).read_bytes() for n in files if n != "README.md")
    card = ModelCard((dest / "README.md").read_text())
    assert card.data.model_name == "my-model" and len(card.data.eval_results) == 2
    assert {
        p.name: p.read_bytes() for p in tiny.iterdir() if p.is_file()
    } == before  # the folder is left alone
    assert checkpoint_files(SHIPPED / "pag-cm") == sorted(
        ["README.md", "NOTES.md", "audit-l2.json", "audit-linf.json", "config.json", "metrics.json"]
        + [
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json",
        ]
        + ["train_log.jsonl"]
    )


def test_push_dry_run_lists_what_would_go(tiny, capsys):
    assert cli.main(["push-to-hub", str(tiny), "--repo", "me/tiny", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == "would upload to me/tiny: README.md, config.json, metrics.json, model.safetensors"


@pytest.mark.parametrize(
    "args, words",
    [
        (["--repo", "me/tiny"], ["cannot upload to me/tiny", "HF_HUB_OFFLINE", "no file was uploaded"]),
        (["--repo", "tiny"], ["'tiny' is not a Hub repo"]),
    ],
    ids=["offline", "bad-repo"],
)
def test_push_failures_are_one_line(cache, tiny, capsys, args, words):
    _one_line_exit_2(["push-to-hub", str(tiny), *args], capsys, *words)


def test_push_refuses_a_folder_that_is_not_a_checkpoint(cache, tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.md").write_text("# not a model\n")
    _one_line_exit_2(["push-to-hub", str(tmp_path / "notes"), "--repo", "me/x"], capsys, "no config.json")
    assert (tmp_path / "notes" / "README.md").read_text() == "# not a model\n"
