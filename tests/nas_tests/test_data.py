"""Dataset loaders on small files written by the tests, search-path errors, malformed files, subsets."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from nas import DatasetNotFoundError, NASError, SearchConfigError, _data, load_dataset
from nas._data import read_idx, stratified_indices

SYSTEM_FMNIST = Path("/usr/share/datasets/fashion-mnist")


# -- writers --------------------------------------------------------------------------------------------


def _idx_bytes(array: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + \
        array.astype(np.uint8).tobytes()


def _write_idx(path: Path, array: np.ndarray, *, gz: bool = True) -> Path:
    payload = _idx_bytes(array)
    target = path.with_name(path.name + ".gz") if gz else path
    target.write_bytes(gzip.compress(payload) if gz else payload)
    return target


def _tagged_images(n: int, size: int = 28, offset: int = 0) -> np.ndarray:
    """Images whose first two pixels encode their index, so splits can be compared by content."""
    x = np.random.default_rng(offset).integers(0, 256, size=(n, size, size), dtype=np.uint8)
    ids = np.arange(offset, offset + n)
    x[:, 0, 0], x[:, 0, 1] = ids % 256, ids // 256
    return x


def _ids(x: torch.Tensor) -> set[int]:
    return set((x[:, 0, 0, 0].long() + 256 * x[:, 0, 0, 1].long()).tolist())


@pytest.fixture
def fmnist_dir(tmp_path: Path) -> Path:
    d = tmp_path / "fm"
    d.mkdir()
    _write_idx(d / "train-images-idx3-ubyte", _tagged_images(100))
    _write_idx(d / "train-labels-idx1-ubyte", np.arange(100) % 10)
    _write_idx(d / "t10k-images-idx3-ubyte", _tagged_images(20, offset=1000), gz=False)
    _write_idx(d / "t10k-labels-idx1-ubyte", np.arange(20) % 10, gz=False)
    return d


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Point every search location at empty temporary folders and make downloads fail at once."""
    places = {k: tmp_path / k for k in ("env", "cache", "system")}
    monkeypatch.setenv("NAS_DATA_DIR", str(places["env"]))
    monkeypatch.setenv("XDG_CACHE_HOME", str(places["cache"]))
    monkeypatch.setattr(_data, "SYSTEM_DATA_DIR", places["system"])
    monkeypatch.setattr(_data, "FASHION_MNIST_URLS", ("http://127.0.0.1:9/",))
    return places


# -- Fashion-MNIST -----------------------------------------------------------------------------------------


def test_fashion_mnist_from_data_dir(fmnist_dir: Path, isolated: dict[str, Path]) -> None:
    data = load_dataset("fashion-mnist", data_dir=fmnist_dir, val_size=20, download=False)
    assert (data.name, data.num_classes, data.in_chans) == ("fashion-mnist", 10, 1)
    assert data.train_x.shape == (80, 1, 28, 28) and data.train_x.dtype == torch.uint8
    assert data.val_x.shape == (20, 1, 28, 28) and data.val_y.dtype == torch.int64
    assert data.test_x.shape == (20, 1, 28, 28) and _ids(data.test_x) == set(range(1000, 1020))
    assert torch.bincount(data.val_y, minlength=10).tolist() == [2] * 10  # stratified
    assert _ids(data.train_x).isdisjoint(_ids(data.val_x))
    assert _ids(data.train_x) | _ids(data.val_x) == set(range(100))
    assert data.classes[0] == "T-shirt/top" and data.source == str(fmnist_dir)
    assert len(data.mean) == 1 and 0.3 < data.mean[0] < 0.7 and data.std[0] > 0.1


def test_fashion_mnist_search_order(fmnist_dir: Path, isolated: dict[str, Path]) -> None:
    # $NAS_DATA_DIR/fashion-mnist, then the cache, then the system folder
    for place in ("env", "cache", "system"):
        target = isolated[place] / ("repnas" if place == "cache" else "") / "fashion-mnist"
        target.parent.mkdir(parents=True, exist_ok=True)
        fmnist_dir.rename(target)
        assert load_dataset("fashion-mnist", val_size=10, download=False).source == str(target)
        target.rename(fmnist_dir)


def test_missing_dataset_lists_every_place(tmp_path: Path, isolated: dict[str, Path]) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion-mnist", data_dir=tmp_path / "mine")
    msg = str(info.value)
    expected = [tmp_path / "mine", tmp_path / "mine" / "fashion-mnist", isolated["env"],
                isolated["env"] / "fashion-mnist", isolated["cache"] / "repnas" / "fashion-mnist",
                isolated["system"] / "fashion-mnist"]
    for place in expected:
        assert f"- {place}\n" in msg
    assert "http://127.0.0.1:9/" in msg and "apt-get install dataset-fashion-mnist" in msg
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, NASError)


def test_incomplete_folder_is_reported(fmnist_dir: Path, isolated: dict[str, Path]) -> None:
    (fmnist_dir / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetNotFoundError, match="incomplete: only train-images"):
        load_dataset("fashion-mnist", data_dir=fmnist_dir, download=False)


@pytest.mark.parametrize("damage", ["magic", "ndim", "truncated", "trailing", "gzip", "labels"])
def test_malformed_idx_is_rejected(fmnist_dir: Path, isolated: dict[str, Path], damage: str) -> None:
    images = fmnist_dir / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(images.read_bytes())
    if damage == "magic":
        raw = b"\x12\x34" + raw[2:]
    elif damage == "ndim":
        raw = raw[:3] + b"\x01" + raw[4:]
    elif damage == "truncated":
        raw = raw[:-5]
    elif damage == "trailing":
        raw = raw + b"\0"
    if damage == "gzip":
        images.write_bytes(images.read_bytes()[:-20])
        match = "corrupt or truncated gzip"
    elif damage == "labels":
        _write_idx(fmnist_dir / "train-labels-idx1-ubyte", np.arange(99) % 10)
        match = "100 images but 99 labels"
    else:
        images.write_bytes(gzip.compress(raw))
        match = {"magic": "bad IDX magic", "ndim": "bad IDX magic", "truncated": "truncated",
                 "trailing": "trailing bytes"}[damage]
    with pytest.raises(NASError, match=match):
        load_dataset("fashion-mnist", data_dir=fmnist_dir, download=False)


def test_read_idx_uncompressed(tmp_path: Path) -> None:
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(read_idx(_write_idx(tmp_path / "a", a, gz=False), ndim=3), a)
    with pytest.raises(NASError, match="only 2 bytes"):
        (tmp_path / "b").write_bytes(b"\0\0")
        read_idx(tmp_path / "b")


# -- subsets -------------------------------------------------------------------------------------------


def test_subsets_are_stratified_and_seeded(fmnist_dir: Path, isolated: dict[str, Path]) -> None:
    kw = dict(data_dir=fmnist_dir, download=False)
    a = load_dataset("fashion-mnist", train_size=30, val_size=20, seed=3, **kw)
    b = load_dataset("fashion-mnist", train_size=30, val_size=20, seed=3, **kw)
    c = load_dataset("fashion-mnist", train_size=30, val_size=20, seed=4, **kw)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.val_y, b.val_y)
    assert _ids(a.train_x) != _ids(c.train_x)
    assert torch.bincount(a.train_y, minlength=10).tolist() == [3] * 10
    # the hold-out does not depend on train_size, and smaller subsets nest in larger ones
    big = load_dataset("fashion-mnist", train_size=60, val_size=20, seed=3, **kw)
    assert _ids(big.val_x) == _ids(a.val_x) and _ids(a.train_x) <= _ids(big.train_x)
    with pytest.raises(SearchConfigError, match="exceeds"):
        load_dataset("fashion-mnist", train_size=90, val_size=20, **kw)


def test_stratified_indices() -> None:
    labels = np.repeat(np.arange(4), [40, 30, 20, 10])
    idx = stratified_indices(labels, 50, seed=1)
    assert np.bincount(labels[idx]).tolist() == [20, 15, 10, 5]
    assert np.array_equal(idx, stratified_indices(labels, 50, seed=1))
    assert set(stratified_indices(labels, 20, seed=1)) <= set(idx)
    with pytest.raises(SearchConfigError):
        stratified_indices(labels, 101)


# -- CIFAR ---------------------------------------------------------------------------------------------


def _cifar_members(kind: str, per_batch: int = 20) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    n_classes = 10 if kind == "cifar10" else 100

    def batch(n: int, key: bytes) -> bytes:
        return pickle.dumps({b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                             key: [int(v) for v in np.arange(n) % n_classes]}, protocol=2)

    if kind == "cifar10":
        out = {f"data_batch_{i}": batch(per_batch, b"labels") for i in range(1, 6)}
        out["test_batch"] = batch(per_batch, b"labels")
        out["batches.meta"] = pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}, protocol=2)
    else:
        out = {"train": batch(5 * per_batch * 10, b"fine_labels"), "test": batch(200, b"fine_labels")}
        out["meta"] = pickle.dumps({b"fine_label_names": [f"f{i}".encode() for i in range(100)]}, protocol=2)
    return out


def _write_cifar_archive(root: Path, kind: str, members: dict[str, bytes]) -> Path:
    folder = "cifar-10-batches-py" if kind == "cifar10" else "cifar-100-python"
    root.mkdir(parents=True, exist_ok=True)
    archive = root / ("cifar-10-python.tar.gz" if kind == "cifar10" else "cifar-100-python.tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return archive


def test_cifar10_archive_and_folder(tmp_path: Path, isolated: dict[str, Path]) -> None:
    members = _cifar_members("cifar10")
    archive = _write_cifar_archive(tmp_path / "a", "cifar10", members)
    data = load_dataset("cifar10", data_dir=tmp_path / "a", val_size=10)
    assert data.source == str(archive) and data.classes[:2] == ("c0", "c1")
    assert data.train_x.shape == (90, 3, 32, 32) and data.test_x.shape == (20, 3, 32, 32)
    first = pickle.loads(members["data_batch_1"], encoding="bytes")[b"data"][0].reshape(3, 32, 32)
    assert any(torch.equal(torch.from_numpy(first), x) for x in torch.cat([data.train_x, data.val_x]))
    # the extracted folder, found under $NAS_DATA_DIR/cifar10/
    folder = isolated["env"] / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, payload in members.items():
        (folder / name).write_bytes(payload)
    again = load_dataset("cifar-10", val_size=10)
    assert again.source == str(folder) and torch.equal(again.train_x, data.train_x)


def test_cifar100_fine_labels(tmp_path: Path, isolated: dict[str, Path]) -> None:
    _write_cifar_archive(tmp_path, "cifar100", _cifar_members("cifar100"))
    data = load_dataset("cifar100", data_dir=tmp_path, val_size=100, train_size=200)
    assert data.num_classes == 100 and data.classes[99] == "f99"
    assert torch.bincount(data.val_y, minlength=100).tolist() == [1] * 100
    assert len(data.train_y) == 200 and len(data.test_y) == 200


def test_cifar_missing_and_malicious(tmp_path: Path, isolated: dict[str, Path]) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("cifar10", data_dir=tmp_path)
    assert str(tmp_path / "cifar-10-python.tar.gz") in str(info.value)
    assert str(isolated["system"] / "cifar10" / "cifar-10-batches-py") in str(info.value)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    members = _cifar_members("cifar10")
    members["batches.meta"] = pickle.dumps({b"label_names": Evil()}, protocol=2)
    _write_cifar_archive(tmp_path, "cifar10", members)
    with pytest.raises(NASError, match="refusing to load .*print"):
        load_dataset("cifar10", data_dir=tmp_path)


# -- image folder, synthetic, names ---------------------------------------------------------------------


def _write_tree(root: Path, classes: tuple[str, ...], per_class: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            size = (20 + 4 * i, 24)
            Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)).save(
                root / c / f"{i}.png")


def test_imagefolder(tmp_path: Path) -> None:
    _write_tree(tmp_path / "flat", ("cat", "dog", "emu"), 5)
    data = load_dataset(f"imagefolder:{tmp_path / 'flat'}", val_size=3, image_size=16)
    assert data.classes == ("cat", "dog", "emu") and data.num_classes == 3 and data.test_x is None
    assert data.train_x.shape == (12, 3, 16, 16) and data.val_x.shape == (3, 3, 16, 16)
    assert torch.bincount(data.val_y).tolist() == [1, 1, 1]

    _write_tree(tmp_path / "split" / "train", ("cat", "dog"), 4)
    _write_tree(tmp_path / "split" / "test", ("dog",), 2)
    split = load_dataset(f"imagefolder:{tmp_path / 'split'}", val_size=2, train_size=4)
    assert split.train_x.shape == (4, 3, 64, 64) and split.test_y.tolist() == [1, 1]

    (tmp_path / "flat" / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(NASError, match="broken.png"):
        load_dataset(f"imagefolder:{tmp_path / 'flat'}", val_size=3, image_size=16)
    with pytest.raises(DatasetNotFoundError, match="nowhere"):
        load_dataset(f"imagefolder:{tmp_path / 'nowhere'}")


def test_synthetic_is_seeded() -> None:
    a = load_dataset("synthetic", train_size=100, val_size=50)
    b = load_dataset("synthetic", train_size=100, val_size=50)
    c = load_dataset("synthetic", train_size=100, val_size=50, seed=1)
    assert a.train_x.shape == (100, 3, 32, 32) and a.num_classes == 10 and a.test_x.shape == (500, 3, 32, 32)
    assert torch.equal(a.train_x, b.train_x) and not torch.equal(a.train_x, c.train_x)


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="mnist"), "unknown dataset 'mnist'"),
    (dict(name="synthetic", train_size=0), "`train_size`"),
    (dict(name="synthetic", seed=-1), "`seed`"),
    (dict(name="synthetic", image_size=32), "imagefolder datasets only"),
    (dict(name="imagefolder:"), "needs a path"),
])
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(SearchConfigError, match=match):
        load_dataset(**kwargs)


@pytest.mark.skipif(not SYSTEM_FMNIST.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist() -> None:
    data = load_dataset("fashion-mnist", data_dir=SYSTEM_FMNIST, train_size=1000, val_size=500, download=False)
    assert data.train_x.shape == (1000, 1, 28, 28) and data.test_x.shape == (10000, 1, 28, 28)
    assert torch.bincount(data.train_y).tolist() == [100] * 10
    assert abs(data.mean[0] - 0.286) < 0.01  # the well-known Fashion-MNIST mean
