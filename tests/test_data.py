"""pagdemo.data.datasets: loaders for every on-disk layout (built tiny in tmp_path), subsets, augmentation,
batches."""

from __future__ import annotations

import hashlib
import io
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pagdemo.data import DataError
from pagdemo.data.augment import augment
from pagdemo.data.datasets import (
    DATASETS,
    Dataset,
    batches,
    data_root,
    load_dataset,
    stratified_subset,
)
from pagdemo.models import CIFAR10_CLASSES

CLASSES = CIFAR10_CLASSES  # the one list, in pagdemo.models
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


def _images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """Random (n, 3, size, size) uint8 images: every one distinct, so a mix-up cannot go unnoticed."""
    return np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8)


def _write_npz(path: Path, images: np.ndarray, labels: np.ndarray, fmt: str = "PNG") -> None:
    """One packed file in the schema of shared/data/README.md."""
    blobs = []
    for im in images:
        buf = io.BytesIO()
        Image.fromarray(im.transpose(1, 2, 0)).save(buf, format=fmt)
        blobs.append(np.frombuffer(buf.getvalue(), dtype=np.uint8))
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    np.savez(
        path,
        encoded=np.concatenate(blobs),
        offsets=offsets,
        labels=labels.astype(np.uint8),
        classes=np.array(CLASSES),
    )


def _write_sums(folder: Path) -> None:
    lines = [f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.name}" for f in sorted(folder.glob("*.npz"))]
    (folder / "SHA256SUMS").write_text("\n".join(lines) + "\n")


@pytest.fixture
def npz_dir(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """Train split in two class-ordered files (like train-0..2.npz), a test file and SHA256SUMS."""
    images, labels = _images(40), np.repeat(np.arange(10), 4)
    first = np.isin(np.arange(40) % 4, (0, 1))
    _write_npz(tmp_path / "train-0.npz", images[first], labels[first])
    _write_npz(tmp_path / "train-1.npz", images[~first], labels[~first])
    _write_npz(tmp_path / "test.npz", images[:10], labels[:10])
    _write_sums(tmp_path)
    order = np.concatenate([np.flatnonzero(first), np.flatnonzero(~first)])
    return tmp_path, images[order], labels[order]


def test_npz_round_trip_is_lossless(npz_dir):
    root, images, labels = npz_dir
    ds = load_dataset("cifar10", "train", data_dir=root)
    assert ds.images.dtype == torch.uint8 and ds.labels.dtype == torch.int64
    assert np.array_equal(ds.images.numpy(), images) and np.array_equal(ds.labels.numpy(), labels)
    assert ds.classes == CLASSES and "png" in ds.source and str(root) in ds.source
    assert len(load_dataset("cifar10", "test", data_dir=root)) == 10


def test_npz_limit_decodes_the_stratified_subset(npz_dir):
    root, images, labels = npz_dir
    ds = load_dataset("cifar10", "train", data_dir=root, limit=20, seed=3)
    idx = stratified_subset(labels, 20, seed=3)
    assert np.array_equal(ds.images.numpy(), images[idx])
    assert ds.labels.bincount().tolist() == [2] * 10


def test_jpeg_npz_decodes_close_to_the_original(tmp_path):
    smooth = np.broadcast_to(np.linspace(0, 255, 32, dtype=np.uint8), (4, 3, 32, 32)).copy()
    _write_npz(tmp_path / "test.npz", smooth, np.arange(4), fmt="JPEG")
    ds = load_dataset("cifar10", "test", data_dir=tmp_path)
    assert "jpeg" in ds.source
    assert (ds.images.float() - torch.from_numpy(smooth).float()).abs().mean() < 4


def test_checksum_mismatch_names_the_file(npz_dir):
    root = npz_dir[0]
    data = bytearray((root / "train-1.npz").read_bytes())
    data[-100] ^= 0xFF
    (root / "train-1.npz").write_bytes(bytes(data))
    with pytest.raises(DataError, match="train-1.npz.*SHA-256"):
        load_dataset("cifar10", "train", data_dir=root)
    load_dataset("cifar10", "test", data_dir=root)  # the intact file still loads


def test_malformed_npz_is_a_data_error(tmp_path):
    np.savez(tmp_path / "test.npz", encoded=np.zeros(3, np.uint8))
    with pytest.raises(DataError, match="test.npz"):
        load_dataset("cifar10", "test", data_dir=tmp_path)


def _write_batches(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's cifar-10-batches-py: pickled dicts with bytes keys, (N, 3072) uint8 rows."""
    folder.mkdir()
    images, labels = _images(12, seed=1), np.arange(12) % 10
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        batch = {
            b"data": images[2 * i : 2 * i + 2].reshape(2, 3072),
            b"labels": labels[2 * i : 2 * i + 2].tolist(),
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [c.encode() for c in CLASSES]}))
    return images, labels


@pytest.mark.parametrize("inside", [True, False])
def test_cifar10_batches_folder_or_its_parent(tmp_path, inside):
    images, labels = _write_batches(tmp_path / "cifar-10-batches-py")
    root = tmp_path / "cifar-10-batches-py" if inside else tmp_path
    train, test = load_dataset("cifar10", "train", root), load_dataset("cifar10", "test", root)
    assert np.array_equal(train.images.numpy(), images[:10]) and train.labels.tolist() == labels[:10].tolist()
    assert np.array_equal(test.images.numpy(), images[10:]) and train.classes == CLASSES
    assert "cifar-10-batches-py" in train.source


def test_cifar10_batches_missing_file_is_named(tmp_path):
    _write_batches(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3"):
        load_dataset("cifar10", "train", tmp_path)


@pytest.mark.parametrize("inside", [True, False])
def test_stl10_binary_is_column_major_with_labels_from_one(tmp_path, inside):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    images, labels = _images(5, size=96, seed=2), np.array([0, 9, 3, 3, 7])
    (folder / "test_X.bin").write_bytes(images.transpose(0, 1, 3, 2).tobytes())
    (folder / "test_y.bin").write_bytes((labels + 1).astype(np.uint8).tobytes())
    (folder / "class_names.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n")
    ds = load_dataset("stl10", "test", folder if inside else tmp_path)
    assert ds.images.shape == (5, 3, 96, 96) and np.array_equal(ds.images.numpy(), images)
    assert ds.labels.tolist() == labels.tolist() and ds.classes[9] == "c9"
    with pytest.raises(DataError, match="train_X.bin"):
        load_dataset("stl10", "train", tmp_path)


@pytest.mark.parametrize("name", ["cifar10", "stl10"])
def test_missing_or_wrong_folder_is_a_one_line_data_error(tmp_path, name):
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "nope"))) as missing:
        load_dataset(name, "train", tmp_path / "nope")
    with pytest.raises(DataError, match="expected") as empty:
        load_dataset(name, "train", tmp_path)
    for err in (missing.value, empty.value):
        assert isinstance(err, ValueError) and "\n" not in str(err) and str(tmp_path) in str(err)


def test_unknown_name_or_split_lists_the_choices():
    with pytest.raises(ValueError, match="synthetic"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="'train', 'test'"):
        load_dataset("synthetic", "val")
    assert set(DATASETS) == {"cifar10", "stl10", "synthetic"}


def test_the_default_data_root_honours_the_environment(tmp_path, monkeypatch):
    (tmp_path / "cifar10").mkdir()
    monkeypatch.setenv("PAGDEMO_DATA_DIR", str(tmp_path))
    assert data_root("cifar10") == tmp_path / "cifar10"
    assert data_root("stl10") == tmp_path
    assert data_root("synthetic") is None
    assert data_root("cifar10", "~/elsewhere") == Path("~/elsewhere").expanduser()


def test_shared_lossless_test_set_loads_with_limit():
    if not (SHARED / "test.npz").is_file():
        pytest.skip(f"no shared data at {SHARED}")
    ds = load_dataset("cifar10", "test", SHARED, limit=100, seed=0)
    assert ds.images.shape == (100, 3, 32, 32) and ds.labels.bincount().tolist() == [10] * 10
    assert ds.classes == CLASSES and "png" in ds.source
    assert 0.3 < ds.inputs().mean() < 0.7  # real photographs, not blank decodes


def test_synthetic_is_deterministic_and_splits_differ():
    a, b = load_dataset("synthetic", "train", seed=1), load_dataset("synthetic", "train", seed=1)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.images.shape == (1000, 3, 32, 32) and a.labels.bincount().tolist() == [100] * 10
    assert not torch.equal(a.images, load_dataset("synthetic", "train", seed=2).images)
    test = load_dataset("synthetic", "test", seed=1, synthetic_size=300)
    assert len(test) == 300 and not torch.equal(test.images, a.images[:300])


def test_synthetic_is_learnable_by_nearest_class_mean():
    train, test = load_dataset("synthetic", "train", seed=0), load_dataset("synthetic", "test", seed=5)
    means = torch.stack([train.inputs()[train.labels == c].mean(0) for c in range(10)]).flatten(1)
    pred = torch.cdist(test.inputs().flatten(1), means).argmin(1)
    assert (pred == test.labels).float().mean() > 0.9
    assert torch.pdist(means).min() > 1.0  # every pair of classes differs visibly


def test_stratified_subset_is_balanced_fixed_and_seeded():
    labels = load_dataset("synthetic", "train", synthetic_size=500).labels.numpy()
    sub = stratified_subset(labels, 50, seed=0)
    assert np.bincount(labels[sub]).tolist() == [5] * 10 and len(np.unique(sub)) == 50
    assert np.array_equal(sub, stratified_subset(labels, 50, seed=0))
    assert not np.array_equal(sub, stratified_subset(labels, 50, seed=1))
    assert sorted(np.bincount(labels[stratified_subset(labels, 23, seed=0)])) == [2] * 7 + [3] * 3
    assert len(stratified_subset(labels, 10_000, seed=0)) == 500
    with pytest.raises(ValueError, match="limit"):
        stratified_subset(labels, 0, seed=0)


def test_stratified_subset_fills_up_from_other_classes_when_one_runs_out():
    labels = np.array([0] * 2 + [1] * 50 + [2] * 50)
    counts = np.bincount(labels[stratified_subset(labels, 30, seed=0)]).tolist()
    assert counts == [2, 14, 14]


def _all_crops(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Every (flip, dy, dx) window of the zero-padded images: (2, 2p+1, 2p+1, N, C, H, W)."""
    xp = torch.nn.functional.pad(x, (pad,) * 4)
    h, w = x.shape[-2:]
    crops = torch.stack(
        [
            torch.stack([xp[..., dy : dy + h, dx : dx + w] for dx in range(2 * pad + 1)])
            for dy in range(2 * pad + 1)
        ]
    )
    return torch.stack([crops, crops.flip(-1)])


def test_augment_crops_and_flips_each_image_independently():
    x = torch.rand(300, 3, 8, 8)
    out = augment(x, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == x.shape and out.dtype == x.dtype
    match = (_all_crops(x, 2) == out).flatten(-3).all(-1)  # (2, 5, 5, N): which window each image is
    assert (match.flatten(0, 2).sum(0) == 1).all()  # every output is exactly one window of its padded image
    flip, dy, dx, _ = match.nonzero(as_tuple=True)
    assert 0.4 < flip.float().mean() < 0.6
    assert len(set(zip(dy.tolist(), dx.tolist()))) == 25  # offsets vary per image, all reached


def test_augment_is_deterministic_with_a_generator():
    x = torch.rand(16, 3, 32, 32)
    a = augment(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, augment(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, augment(x, torch.Generator().manual_seed(2)))


def _tiny(n: int = 23) -> Dataset:
    return load_dataset("synthetic", "test", synthetic_size=n)


def test_batches_cover_the_dataset_once_in_shuffled_order():
    ds = _tiny()
    out = list(batches(ds, 5, shuffle=True, generator=torch.Generator().manual_seed(0), device="cpu"))
    assert [len(y) for _, y, _ in out] == [5, 5, 5, 5, 3]
    idx = torch.cat([i for _, _, i in out])
    assert sorted(idx.tolist()) == list(range(23)) and idx.tolist() != list(range(23))
    for x, y, i in out:
        assert x.dtype == torch.float32 and torch.equal(x, ds.inputs(i)) and torch.equal(y, ds.labels[i])
    plain = torch.cat(
        [i for *_, i in batches(ds, 5, shuffle=False, generator=None, device="cpu", drop_last=True)]
    )
    assert plain.tolist() == list(range(20))


def test_batches_give_ranks_disjoint_equal_shards():
    ds = _tiny()
    shards = [
        torch.cat(
            [
                i
                for *_, i in batches(
                    ds, 4, True, torch.Generator().manual_seed(7), "cpu", rank=r, world_size=3
                )
            ]
        )
        for r in range(3)
    ]
    assert [len(s) for s in shards] == [7, 7, 7]
    assert len(set(torch.cat(shards).tolist())) == 21
    with pytest.raises(ValueError, match="rank"):
        next(batches(ds, 4, True, None, "cpu", rank=3, world_size=3))
