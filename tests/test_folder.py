"""Your own data: an ImageFolder tree the test builds (mixed sizes and formats, a corrupt file, grayscale,
RGBA), trained, evaluated, attacked and served by the app; and every bad tree refused in one line, exit code
2, with nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pagdemo import cli
from pagdemo.data import folder
from pagdemo.data.datasets import load_dataset
from pagdemo.records.checkpoints import load_checkpoint
from pagdemo.train.config import TrainConfig, for_data, resolve

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["cat", "dog", "fox"]
COLOURS = {"cat": (200, 60, 40), "dog": (40, 160, 60), "fox": (50, 70, 200)}
SIZES = [(24, 24), (24, 24), (40, 30), (30, 52), (24, 24)]  # mostly 24: the default side
FORMATS = [("png", "PNG"), ("jpg", "JPEG"), ("webp", "WEBP"), ("bmp", "BMP"), ("png", "PNG")]


def _picture(colour: tuple[int, int, int], size: tuple[int, int], seed: int) -> Image.Image:
    """A class colour with noise, so a tiny model can learn the classes in an epoch."""
    rng = np.random.default_rng(seed)
    a = np.clip(np.array(colour) + rng.normal(0, 25, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(a, "RGB")


def make_tree(root: Path, per_class: int = 10, test_per_class: int = 4) -> Path:
    """DIR/train/<class>/ and DIR/test/<class>/: mixed sizes and formats, one corrupt, one grayscale, one RGBA
    file."""
    for split, n in (("train", per_class), ("test", test_per_class)):
        for c, name in enumerate(CLASSES):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                ext, fmt = FORMATS[i % len(FORMATS)]
                img = _picture(COLOURS[name], SIZES[i % len(SIZES)], 100 * c + i + (split == "test") * 50)
                if split == "train" and name == "cat" and i == 1:
                    img = img.convert("L")  # grayscale
                if split == "train" and name == "dog" and i == 1:
                    img = img.convert("RGBA")
                    ext, fmt = "png", "PNG"
                img.save(d / f"{name}{i}.{ext}", fmt)
    (root / "train" / "fox" / "broken.jpg").write_bytes(b"this is not a jpeg")
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("pets") / "pets")


def _pagdemo(*args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "pagdemo", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_tree_decodes_to_one_side_with_the_bad_file_skipped(tree):
    ds = load_dataset("folder", "train", data_dir=tree)
    assert (
        ds.classes == CLASSES and ds.side == 24 and ds.images.shape == (30, 3, 24, 24)
    )  # 31 files, 1 unreadable
    assert len(ds.skipped) == 1 and "broken.jpg" in ds.skipped[0] and "skipped" in ds.source
    assert np.bincount(ds.labels.numpy()).tolist() == [10, 10, 10]
    grey = ds.images[1]  # cat1, saved grayscale: three equal channels
    assert (grey[0] == grey[1]).all() and (grey[1] == grey[2]).all()
    mean, std = ds.stats
    assert len(mean) == 3 and all(0 < m < 1 for m in mean) and all(0 < s < 1 for s in std)
    test = load_dataset("folder", "test", data_dir=tree, image_size=40)
    assert test.images.shape == (12, 3, 40, 40) and test.stats is None


def test_decoding_happens_once_until_the_tree_changes(tree, monkeypatch):
    load_dataset("folder", "test", data_dir=tree, image_size=32)  # fills the cache
    monkeypatch.setattr(folder, "read_image", lambda *a: pytest.fail("decoded again: the cache was not used"))
    assert len(load_dataset("folder", "test", data_dir=tree, image_size=32)) == 12
    extra = tree / "test" / "cat" / "new.png"
    _picture(COLOURS["cat"], (24, 24), 7).save(extra)
    try:
        with pytest.raises(BaseException, match="decoded again"):
            load_dataset("folder", "test", data_dir=tree, image_size=32)
    finally:
        extra.unlink()


def test_the_model_adapts_to_the_side_and_records_classes_size_and_stats(tree, tmp_path):
    out = tmp_path / "vanilla"
    proc = _pagdemo(
        "train",
        "--dataset",
        "folder",
        "--data-dir",
        str(tree),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--monitor-limit",
        "6",
        "--monitor-robust",
        "3",
        "--device",
        "cpu",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "skipped 1 unreadable training file" in proc.stdout + proc.stderr
    config = json.loads((out / "config.json").read_text())
    assert (config["arch"], config["classes"], config["image_size"]) == ("resnet18", CLASSES, 24)
    assert config["mean"] == load_dataset("folder", "train", data_dir=tree).stats[0]
    assert config["run"]["skipped_files"] == 1 and config["run"]["image_size"] == 24
    big = for_data(resolve(TrainConfig(out="x", dataset="folder", method="adv", adv_norm="l2")), 96)
    assert big.arch == "resnet18_stl" and big.adv_eps == pytest.approx(1.5)


@pytest.fixture(scope="module")
def runs(tree, tmp_path_factory) -> dict[str, Path]:
    """A teacher, then vanilla and every PAG target (tinycnn, one epoch) on the tree."""
    root = tmp_path_factory.mktemp("runs")
    common = dict(
        dataset="folder",
        data_dir=str(tree),
        epochs=1,
        batch_size=8,
        arch="tinycnn",
        monitor_limit=0,
        device="cpu",
    )
    from pagdemo.train.loop import train

    out = {
        "teacher": train(
            TrainConfig(out=str(root / "teacher"), method="adv", adv_norm="l2", adv_attack="fgsm", **common),
            progress=False,
        )
    }
    for method in ("vanilla", "oi", "cm", "nn", "rigd"):
        extra = (
            {"teacher": str(out["teacher"])} if method == "rigd" else {"nn_k": 3} if method == "nn" else {}
        )
        out[method] = train(
            TrainConfig(out=str(root / method), method=method, **extra, **common), progress=False
        )
    return out


def test_every_target_trains_evaluates_and_attacks(runs, tree, tmp_path):
    for method in ("oi", "cm", "nn", "rigd"):
        model = load_checkpoint(runs[method])
        assert (
            model.classes == CLASSES
            and model.image_size == 24
            and model.run["target_info"]["target"] == method
        )
    proc = _pagdemo(
        "eval", "--checkpoint", str(runs["cm"]), "--norm", "l2", "--device", "cpu", "--data-dir", str(tree)
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (
        "l2 eps=0.375" in proc.stdout and "n=12" in proc.stdout
    )  # the radius scales with the side: 0.5 at 32
    image = tree / "test" / "dog" / "dog0.png"
    proc = _pagdemo(
        "attack",
        "--checkpoint",
        str(runs["vanilla"]),
        str(runs["nn"]),
        "--image",
        str(image),
        "--steps",
        "2",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "grid.png"),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert Image.open(tmp_path / "grid.png").size[0] > 4 * 96  # the input and three class columns


def test_the_app_serves_the_trees_classes_and_gallery(runs, tree, tmp_path):
    pytest.importorskip("gradio_client")
    from gradio_client import Client, handle_file
    from test_app import _free_port

    from pagdemo.app.ui import build_demo, launch_options

    shelf = tmp_path / "shelf"
    shelf.mkdir()
    for name in ("vanilla", "cm"):
        os.symlink(runs[name], shelf / name)
    demo = build_demo(shelf, "cpu", data_dir=str(tree))
    port = _free_port()
    demo.launch(prevent_thread_lock=True, quiet=True, **launch_options("127.0.0.1", port, demo))
    try:
        assert sorted(p.name for p in demo.lab.gallery.glob("*.png"))[:3] == [
            "cat_0.png",
            "cat_1.png",
            "cat_2.png",
        ]
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        picked = str(demo.lab.gallery / "fox_0.png")
        image, notes = client.predict(handle_file(picked), api_name="/preview")
        assert "true class **fox**" in notes and np.asarray(Image.open(image)).shape[:2] == (240, 240)
        _, probs, status = client.predict(
            handle_file(picked), ["vanilla", "cm"], "all classes", "l2", 1.0, 2, api_name="/pag_grid"
        )
        assert probs["headers"] == ["model"] + CLASSES and "done" in status
        _, table, _ = client.predict(["vanilla"], "l2", 16, 2, api_name="/eps_curve")
        assert len(table["data"]) == 6  # its own test images, from --data-dir
    finally:
        demo.close()


def _empty_a_class(t: Path) -> None:
    for p in (t / "train" / "dog").iterdir():
        p.unlink()


def _leave_one_class(t: Path) -> None:
    for name in ("dog", "fox"):
        os.rename(t / "train" / name, t / "train" / f".{name}")  # hidden folders are not classes


@pytest.mark.parametrize(
    "damage, words",
    [
        (_empty_a_class, ["train/dog", "empty class"]),
        (_leave_one_class, ["1 class folder(s) (cat)", "at least 2"]),
        (lambda t: os.rename(t / "test" / "fox", t / "test" / "wolf"), ["different classes", "fox", "wolf"]),
        (lambda t: os.rename(t / "test", t / "holdout"), ["no test/ (or val/) folder"]),
    ],
)
def test_a_bad_tree_is_refused_in_one_line_with_nothing_written(tmp_path, damage, words):
    t = make_tree(tmp_path / "t", per_class=3, test_per_class=2)
    damage(t)
    out = tmp_path / "run"
    proc = _pagdemo(
        "train",
        "--dataset",
        "folder",
        "--data-dir",
        str(t),
        "--epochs",
        "1",
        "--arch",
        "tinycnn",
        "--out",
        str(out),
    )
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert all(w in lines[0] for w in words), lines[0]
    assert not out.exists() and not (t / ".pagdemo-cache").exists()


def test_a_bad_file_stops_the_run_when_asked_and_a_huge_tree_is_refused_before_decoding(
    tree, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"
    args = [
        "train",
        "--dataset",
        "folder",
        "--data-dir",
        str(tree),
        "--epochs",
        "1",
        "--arch",
        "tinycnn",
        "--out",
        str(out),
    ]
    assert cli.main(args + ["--on-bad-image", "stop"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.jpg" in err[0] and "--on-bad-image skip" in err[0] and not out.exists()
    monkeypatch.setattr(
        folder, "available_bytes", lambda: 2 * 31 * 3 * 512 * 512 - 1
    )  # 31 files at 512: just too many
    monkeypatch.setattr(folder, "read_image", lambda *a: pytest.fail("decoded before the memory estimate"))
    assert cli.main(args + ["--image-size", "512"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        "31 images at 512x512 need" in err and "smaller --image-size or --limit" in err and not out.exists()
    )
    assert cli.main(args + ["--image-size", "4"]) == 2 and "outside 8..512" in capsys.readouterr().err
    assert cli.main(["train", "--dataset", "cifar10", "--image-size", "64", "--out", str(out)]) == 2
    assert "--image-size is for --dataset folder" in capsys.readouterr().err
