"""Data loaders (on small files the tests write) and deterministic partitioners."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from phalanx.learning.data import DatasetError, label_histogram, load_dataset, partition


def _write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_loader_reads_standard_files(tmp_path: Path, gz: bool, name: str) -> None:
    rng = np.random.default_rng(1)
    train = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    _write_idx(tmp_path / "train-images-idx3-ubyte", train, gz)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(12) % 10, gz)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", test, gz)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(5), gz)
    data = load_dataset(name, tmp_path)
    assert data.train_x.shape == (12, 1, 28, 28) and data.test_x.shape == (5, 1, 28, 28)
    assert data.train_x.dtype == np.float32
    np.testing.assert_allclose(data.train_x[3, 0], train[3] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(data.train_y, np.arange(12) % 10)
    np.testing.assert_array_equal(data.test_y, np.arange(5))


def test_idx_loader_names_the_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="missing train-images-idx3-ubyte"):
        load_dataset("mnist", tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x0d\x03" + b"\x00" * 12)
    with pytest.raises(DatasetError, match="not an unsigned-byte IDX file"):
        load_dataset("mnist", tmp_path)


def test_cifar10_loader_reads_python_batches(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(2)
    batches = {}
    for stem in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        data = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
        labels = list(rng.integers(0, 10, 3))
        batches[stem] = (data, labels)
        with open(folder / stem, "wb") as handle:
            pickle.dump({b"data": data, b"labels": labels}, handle)
    data = load_dataset("cifar10", tmp_path)
    assert data.train_x.shape == (15, 3, 32, 32) and data.test_x.shape == (3, 3, 32, 32)
    first, labels = batches["data_batch_1"]
    np.testing.assert_allclose(data.train_x[0], first[0].reshape(3, 32, 32) / 255.0, rtol=1e-6)
    assert list(data.train_y[:3]) == labels
    assert data.input_shape == (3, 32, 32)


def test_directory_data_sets_need_a_directory(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"needs data\.dir"):
        load_dataset("cifar10")
    with pytest.raises(DatasetError, match="is not a directory"):
        load_dataset("cifar10", tmp_path / "nope")


def test_offline_data_sets_have_a_disjoint_stratified_holdout() -> None:
    data = load_dataset("digits", seed=3)
    assert data.train_x.shape[1:] == (1, 8, 8)
    assert len(data.test_y) == pytest.approx(0.2 * 1797, abs=10)
    assert float(data.train_x.max()) <= 1.0
    counts = np.bincount(data.test_y, minlength=10)
    assert counts.min() >= 30  # every class held out
    again = load_dataset("digits", seed=3)
    np.testing.assert_array_equal(again.test_y, data.test_y)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "shards"])
def test_partitions_are_deterministic_disjoint_and_cover(scheme: str) -> None:
    labels = np.repeat(np.arange(10), 60)
    parts = partition(labels, 6, scheme, seed=5, alpha=0.5)
    again = partition(labels, 6, scheme, seed=5, alpha=0.5)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    joined = np.concatenate(parts)
    assert len(joined) == len(labels) and len(np.unique(joined)) == len(labels)
    other = partition(labels, 6, scheme, seed=6, alpha=0.5)
    assert any(not np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_dirichlet_skew_grows_as_alpha_shrinks() -> None:
    labels = np.repeat(np.arange(10), 200)

    def mean_classes_held(alpha: float) -> float:
        parts = partition(labels, 10, "dirichlet", seed=0, alpha=alpha)
        return float(np.mean([np.count_nonzero(label_histogram(labels[p], 10)) for p in parts]))

    assert mean_classes_held(0.05) < mean_classes_held(100.0)
    assert mean_classes_held(100.0) == 10.0


def test_shards_give_each_node_few_labels() -> None:
    labels = np.repeat(np.arange(10), 100)
    parts = partition(labels, 10, "shards", seed=0, shards_per_node=2)
    assert all(np.count_nonzero(label_histogram(labels[p], 10)) <= 2 for p in parts)


def test_partition_refuses_bad_settings() -> None:
    labels = np.arange(10)
    with pytest.raises(ValueError, match="unknown partition scheme 'zipf'"):
        partition(labels, 2, "zipf")
    with pytest.raises(ValueError, match="alpha must be > 0"):
        partition(labels, 2, "dirichlet", alpha=0)
    with pytest.raises(ValueError, match=r"cannot give 11 nodes"):
        partition(labels, 11)
