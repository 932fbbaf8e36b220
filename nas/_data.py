"""Datasets for proxy training: Fashion-MNIST, CIFAR-10/100, an image folder, and a synthetic set for tests.

Every loader returns a :class:`ProxyData` with uint8 ``(N, C, H, W)`` images and int64 labels, split three ways:

- ``train``: the official training set minus the validation hold-out, optionally a class-stratified subset
  (``train_size``);
- ``val``: a class-stratified hold-out **from the official training set** (``val_size`` images; by default
  10 % of it), used to score candidates;
- ``test``: the official test set, complete and never used by the search (``None`` where the dataset has none),
  kept for a final evaluation of the chosen architectures.

Both splits come from one seeded per-class permutation: ``val`` is taken from its end and ``train`` from its
start, so for a given ``seed`` the validation images do not depend on ``train_size`` (and vice versa), and a
smaller subset is (up to rounding) contained in a larger one.

Where a dataset is looked for (first hit wins; a missing dataset raises :class:`DatasetNotFoundError` listing
every place that was tried):

1. ``data_dir`` (the folder itself, then ``data_dir/<dataset>``), if given;
2. ``$NAS_DATA_DIR`` (same two forms);
3. the cache, ``$XDG_CACHE_HOME/repnas/<dataset>`` (default ``~/.cache/repnas/<dataset>``);
4. ``/usr/share/datasets/<dataset>`` (Debian's ``dataset-fashion-mnist`` package installs Fashion-MNIST there);
5. Fashion-MNIST only, unless ``download=False``: download from the official mirror into the cache
   (MD5-checked).

CIFAR archives are Python pickles. They are read with a restricted unpickler that only accepts plain
containers and numpy arrays, but still read only archives you obtained yourself from the official site.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import logging
import os
import pickle
import struct
import tarfile
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from search_space import atomic_write, check_int

from ._errors import DatasetNotFoundError, NASError, SearchConfigError

__all__ = ["DATASETS", "ProxyData", "load_dataset", "stratified_indices"]

_logger = logging.getLogger(__name__)

#: Dataset names accepted by :func:`load_dataset` (plus ``imagefolder:PATH``).
DATASETS = ("fashion-mnist", "cifar10", "cifar100", "synthetic")
_ALIASES = {
    "fashion-mnist": "fashion-mnist", "fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist",
    "cifar10": "cifar10", "cifar-10": "cifar10", "cifar100": "cifar100", "cifar-100": "cifar100",
    "synthetic": "synthetic",
}
#: Root of system-wide datasets (Debian's ``dataset-*`` packages); module-level so tests can redirect it.
SYSTEM_DATA_DIR = Path("/usr/share/datasets")
#: Fraction of the official training set held out for validation when ``val_size`` is not given.
DEFAULT_VAL_FRACTION = 0.1

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
#: Official file names and the MD5 of the official ``.gz`` files (the same as torchvision's).
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
}
#: Mirrors tried in order (Zalando's canonical S3 site, then the GitHub repository).
FASHION_MNIST_URLS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
_DOWNLOAD_TIMEOUT_S = 30.0
_APT_HINT = "apt-get install dataset-fashion-mnist"

_CIFAR = {
    "cifar10": dict(folder="cifar-10-batches-py", archive="cifar-10-python.tar.gz", num_classes=10,
                    train=tuple(f"data_batch_{i}" for i in range(1, 6)), test=("test_batch",),
                    meta="batches.meta", label_key=b"labels", names_key=b"label_names",
                    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    "cifar100": dict(folder="cifar-100-python", archive="cifar-100-python.tar.gz", num_classes=100,
                     train=("train",), test=("test",), meta="meta", label_key=b"fine_labels",
                     names_key=b"fine_label_names", url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
}
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff")
_SYNTHETIC_CLASSES = 10
_SYNTHETIC_SIZE = 32
_SYNTHETIC_DEFAULT_SIZES = {"train": 2000, "val": 500, "test": 500}


@dataclass(frozen=True, eq=False)
class ProxyData:
    """A loaded dataset, ready for proxy training.

    Attributes:
        name: Canonical dataset name (``fashion-mnist``, ``cifar10``, ``cifar100``, ``synthetic``,
            ``imagefolder:PATH``).
        num_classes: Number of classes (labels are ``0 .. num_classes - 1``).
        in_chans: Image channels as stored (1 for Fashion-MNIST; the proxy repeats them to 3).
        train_x: ``(N, C, H, W)`` uint8 training images.
        train_y: ``(N,)`` int64 training labels.
        val_x: Validation images, held out from the official training set.
        val_y: Validation labels.
        test_x: The official test images (complete, untouched by the search), or ``None``.
        test_y: The official test labels, or ``None``.
        classes: Class names in label order, or ``None`` when unknown.
        source: Where the data was read from (a path, ``downloaded from URL into PATH``, or ``generated``).
        mean: Per-channel mean of ``train_x`` on the 0..1 scale (used for normalisation).
        std: Per-channel standard deviation of ``train_x`` on the 0..1 scale.
        seed: Seed of the hold-out split and the subsets.
    """

    name: str
    num_classes: int
    in_chans: int
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor | None = None
    test_y: torch.Tensor | None = None
    classes: tuple[str, ...] | None = None
    source: str = ""
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        for split in ("train", "val", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if split == "test" and x is None and y is None:
                continue
            if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.ndim != 4:
                raise NASError(f"ProxyData.{split}_x: expected a uint8 (N, C, H, W) tensor, got "
                               f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")
            if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise NASError(f"ProxyData.{split}_y: expected {x.shape[0]} int64 labels, got "
                               f"{getattr(y, 'dtype', type(y).__name__)} {tuple(getattr(y, 'shape', ()))}")
            if x.shape[1] != self.in_chans:
                raise NASError(f"ProxyData.{split}_x: {x.shape[1]} channels, but in_chans is {self.in_chans}")
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise NASError(f"ProxyData.{split}_y: labels must lie in [0, {self.num_classes}), got "
                               f"[{int(y.min())}, {int(y.max())}]")
        if not self.mean:
            mean, std = _channel_stats(self.train_x)
            object.__setattr__(self, "mean", mean)
            object.__setattr__(self, "std", std)

    @property
    def image_size(self) -> tuple[int, int]:
        """Stored ``(H, W)`` of the images."""
        return int(self.train_x.shape[2]), int(self.train_x.shape[3])

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary (stored with a study for provenance)."""
        return dict(
            name=self.name, num_classes=self.num_classes, in_chans=self.in_chans, image_size=list(self.image_size),
            train=int(self.train_y.numel()), val=int(self.val_y.numel()),
            test=None if self.test_y is None else int(self.test_y.numel()), source=self.source, seed=self.seed,
            mean=list(self.mean), std=list(self.std),
        )

    def __repr__(self) -> str:
        test = "none" if self.test_y is None else len(self.test_y)
        return (f"ProxyData({self.name!r}, classes={self.num_classes}, image={self.in_chans}x{self.image_size[0]}x"
                f"{self.image_size[1]}, train={len(self.train_y)}, val={len(self.val_y)}, test={test}, "
                f"source={self.source!r})")


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and std (0..1 scale) of uint8 images, from 256-bin histograms (no float copy)."""
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(x.shape[1]):
        hist = torch.bincount(x[:, c].reshape(-1), minlength=256).double()
        n = max(float(hist.sum()), 1.0)
        m = float((hist * values).sum()) / n
        var = max(float((hist * values.square()).sum()) / n - m * m, 0.0)
        means.append(m)
        stds.append(max(var ** 0.5, 1e-3))
    return tuple(means), tuple(stds)


# -- public entry point ---------------------------------------------------------------------------


def load_dataset(
        name: str = "fashion-mnist",
        *,
        data_dir: str | os.PathLike[str] | None = None,
        train_size: int | None = None,
        val_size: int | None = None,
        seed: int = 0,
        image_size: int | None = None,
        download: bool = True,
) -> ProxyData:
    """Load a dataset and split it into train / validation (both from the official train set) / test.

    Args:
        name: ``fashion-mnist`` (default), ``cifar10``, ``cifar100``, ``synthetic`` or ``imagefolder:PATH``.
            ``imagefolder`` reads one sub-folder per class; if ``PATH`` has a ``train`` sub-folder, that is the
            training tree and ``PATH/test`` (or ``PATH/val``) becomes the test split.
        data_dir: Folder searched first (see the module docstring for the full search order).
        train_size: Class-stratified subset of the training split to keep (``None``: all that remains after the
            hold-out).
        val_size: Size of the class-stratified validation hold-out (``None``: 10 % of the official training set;
            ``synthetic``: 500).
        seed: Seed of the hold-out split and the subsets (the same seed gives the same images).
        image_size: ``imagefolder`` only: side of the square images after resizing (default 64).
        download: Fashion-MNIST only: download into the cache when no local copy is found.

    Raises:
        DatasetNotFoundError: The dataset is not in any searched place (the message lists them all).
        NASError: A dataset file is malformed (wrong magic, truncated, inconsistent labels...).
        SearchConfigError: An argument is invalid (unknown dataset, sizes larger than the data...).
    """
    if not isinstance(name, str) or not name:
        raise SearchConfigError(f"`name` must be a dataset name, got {name!r}")
    check_int("`train_size`", train_size, lo=1, optional=True, error=SearchConfigError)
    check_int("`val_size`", val_size, lo=1, optional=True, error=SearchConfigError)
    check_int("`seed`", seed, lo=0, error=SearchConfigError)
    check_int("`image_size`", image_size, lo=8, hi=1024, optional=True, error=SearchConfigError)
    data_dir = Path(data_dir).expanduser() if data_dir is not None else None

    if name.lower().startswith("imagefolder:"):
        path = name.split(":", 1)[1]
        if not path:
            raise SearchConfigError("`name`: imagefolder needs a path, e.g. 'imagefolder:/data/flowers'")
        return _load_imagefolder(Path(path).expanduser(), train_size=train_size, val_size=val_size, seed=seed,
                                 image_size=image_size or 64)
    key = _ALIASES.get(name.lower())
    if key is None:
        raise SearchConfigError(f"`name`: unknown dataset {name!r}; expected one of {', '.join(DATASETS)} "
                                "or 'imagefolder:PATH'")
    if image_size is not None:
        raise SearchConfigError(f"`image_size` applies to imagefolder datasets only, not {key!r}")
    if key == "synthetic":
        return _load_synthetic(train_size=train_size, val_size=val_size, seed=seed)
    if key == "fashion-mnist":
        x, y, tx, ty, source = _load_fashion_mnist(data_dir, download=download)
        classes: tuple[str, ...] | None = FASHION_MNIST_CLASSES
        num_classes = 10
    else:
        x, y, tx, ty, classes, source = _load_cifar(key, data_dir)
        num_classes = _CIFAR[key]["num_classes"]
    train_idx, val_idx = _split(y, train_size=train_size, val_size=val_size, seed=seed, what=key)
    return _make(key, num_classes, x, y, train_idx, val_idx, tx, ty, classes, source, seed)


# -- splitting ------------------------------------------------------------------------------------


def _allocate(counts: np.ndarray, n: int) -> np.ndarray:
    """Split ``n`` over classes proportionally to ``counts`` (largest remainder, ties to the lower class)."""
    total = int(counts.sum())
    exact = counts * (n / total)
    alloc = np.floor(exact).astype(np.int64)
    short = n - int(alloc.sum())
    if short > 0:
        order = np.lexsort((np.arange(len(counts)), -(exact - alloc)))
        alloc[order[:short]] += 1
    return np.minimum(alloc, counts)


def _class_permutations(labels: np.ndarray, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    return classes, [rng.permutation(np.flatnonzero(labels == c)) for c in classes]


def stratified_indices(labels: np.ndarray | torch.Tensor | Sequence[int], n: int, *, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded, class-stratified subset of ``n`` of ``labels``.

    Each class gets its share of ``n`` in proportion to its frequency (largest-remainder rounding), drawn
    from a per-class permutation fixed by ``seed``; so for one seed a smaller subset is contained in a larger
    one up to rounding.
    """
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    check_int("`n`", n, lo=0, hi=len(labels), error=SearchConfigError)
    if n == len(labels):
        return np.arange(len(labels))
    _, perms = _class_permutations(labels, seed)
    alloc = _allocate(np.array([len(p) for p in perms]), n)
    return np.sort(np.concatenate([p[:k] for p, k in zip(perms, alloc)] or [np.empty(0, np.int64)]))


def _split(
        labels: np.ndarray, *, train_size: int | None, val_size: int | None, seed: int, what: str,
        default_val: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified ``(train, val)`` indices: val from the end of each class permutation, train from the start."""
    n = len(labels)
    if val_size is None:
        val_size = default_val if default_val is not None else max(1, round(n * DEFAULT_VAL_FRACTION))
    if val_size >= n:
        raise SearchConfigError(f"`val_size` {val_size} leaves no training images: {what} has {n} training "
                                "images in all")
    if train_size is not None and train_size + val_size > n:
        raise SearchConfigError(f"`train_size` + `val_size` = {train_size} + {val_size} exceeds the {n} training "
                                f"images of {what}")
    _, perms = _class_permutations(labels, seed)
    counts = np.array([len(p) for p in perms])
    v_alloc = _allocate(counts, val_size)
    t_alloc = counts - v_alloc if train_size is None else np.minimum(_allocate(counts, train_size),
                                                                     counts - v_alloc)
    val = np.concatenate([p[len(p) - k:] for p, k in zip(perms, v_alloc)])
    train = np.concatenate([p[:k] for p, k in zip(perms, t_alloc)])
    return np.sort(train), np.sort(val)


def _make(
        name: str, num_classes: int, x: np.ndarray, y: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray,
        test_x: np.ndarray | None, test_y: np.ndarray | None, classes: tuple[str, ...] | None, source: str,
        seed: int,
) -> ProxyData:
    def tx(a: np.ndarray) -> torch.Tensor:
        a = np.ascontiguousarray(a)
        return torch.from_numpy(a if a.flags.writeable else a.copy())

    data = ProxyData(
        name=name, num_classes=num_classes, in_chans=int(x.shape[1]),
        train_x=tx(x[train_idx]), train_y=tx(y[train_idx].astype(np.int64)),
        val_x=tx(x[val_idx]), val_y=tx(y[val_idx].astype(np.int64)),
        test_x=None if test_x is None else tx(test_x),
        test_y=None if test_y is None else tx(test_y.astype(np.int64)),
        classes=classes, source=source, seed=seed,
    )
    _logger.info("Loaded %r", data)
    return data


# -- search locations -------------------------------------------------------------------------------


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/repnas`` (default ``~/.cache/repnas``): where downloads go."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "repnas"


def _candidate_dirs(data_dir: Path | None, folder: str) -> list[Path]:
    """Folders that may hold dataset ``folder``, in search order, without duplicates."""
    dirs: list[Path] = []
    for root in (data_dir, os.environ.get("NAS_DATA_DIR") or None):
        if root is not None:
            root = Path(root).expanduser()
            dirs += [root, root / folder]
    dirs += [cache_dir() / folder, SYSTEM_DATA_DIR / folder]
    out: list[Path] = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out


def _not_found(what: str, looked: list[str], hint: str) -> DatasetNotFoundError:
    places = "\n".join(f"  - {p}" for p in looked)
    return DatasetNotFoundError(f"{what} not found. Looked in:\n{places}\n{hint}")


# -- IDX (Fashion-MNIST) ------------------------------------------------------------------------------

_IDX_DTYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _read_maybe_gzip(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            return gzip.decompress(raw)
        return raw
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise NASError(f"{path}: corrupt or truncated gzip file ({e}); delete it and fetch it again") from None
    except OSError as e:
        raise NASError(f"{path}: cannot read ({e})") from None


def read_idx(path: str | os.PathLike[str], *, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (the MNIST format; gzip-compressed or not) into a numpy array.

    Raises:
        NASError: The magic number is wrong (or has another ``ndim`` than expected) or the data is truncated.
    """
    path = Path(path)
    raw = _read_maybe_gzip(path)
    if len(raw) < 4:
        raise NASError(f"{path}: not an IDX file: only {len(raw)} bytes")
    code, dims_n = raw[2], raw[3]
    want = f"0x000008{ndim:02x}" if ndim is not None else "0x0000TTNN"
    if raw[:2] != b"\0\0" or code not in _IDX_DTYPES or dims_n == 0 or (ndim is not None and dims_n != ndim):
        raise NASError(f"{path}: bad IDX magic number 0x{raw[:4].hex()} (expected {want}); "
                       "the file is not an IDX file of the expected kind")
    header = 4 + 4 * dims_n
    if len(raw) < header:
        raise NASError(f"{path}: truncated IDX header ({len(raw)} bytes, {dims_n} dimensions need {header})")
    dims = struct.unpack(f">{dims_n}I", raw[4:header])
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        kind = "truncated" if len(raw) - header < expected else "has trailing bytes"
        raise NASError(f"{path}: IDX data {kind}: header says shape {dims} ({expected} bytes), "
                       f"file holds {len(raw) - header} bytes")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem, folder / stem.replace("-idx", ".idx")):
        if candidate.is_file():
            return candidate
    return None


def _load_fashion_mnist(data_dir: Path | None, *, download: bool) -> tuple:
    looked: list[str] = []
    for folder in _candidate_dirs(data_dir, "fashion-mnist"):
        files = {stem: _find_idx(folder, stem) for stem in FASHION_MNIST_FILES}
        if all(files.values()):
            return (*_read_fashion_mnist(files), str(folder))
        present = [s for s, f in files.items() if f]
        looked.append(f"{folder}" + (f" (incomplete: only {', '.join(present)})" if present else ""))
    cache = cache_dir() / "fashion-mnist"
    if download:
        errors = []
        for base in FASHION_MNIST_URLS:
            try:
                _download_fashion_mnist(base, cache)
            except (OSError, NASError) as e:
                errors.append(f"{base} ({e})")
                _logger.warning("Fashion-MNIST download from %s failed: %s", base, e)
                continue
            files = {stem: _find_idx(cache, stem) for stem in FASHION_MNIST_FILES}
            return (*_read_fashion_mnist(files), f"downloaded from {base} into {cache}")
        looked += [f"download from {e}" for e in errors]
    else:
        looked.append("download skipped (download=False)")
    raise _not_found(
        "Fashion-MNIST (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
        "t10k-labels-idx1-ubyte[.gz])", looked,
        f"Install it with `{_APT_HINT}` (files go to {SYSTEM_DATA_DIR / 'fashion-mnist'}), or put the four files in "
        "one of the folders above (or pass data_dir / set NAS_DATA_DIR).",
    )


def _read_fashion_mnist(files: dict[str, Path | None]) -> tuple:
    arrays = []
    for split in ("train", "t10k"):
        x = read_idx(files[f"{split}-images-idx3-ubyte"], ndim=3)  # type: ignore[arg-type]
        y = read_idx(files[f"{split}-labels-idx1-ubyte"], ndim=1)  # type: ignore[arg-type]
        if x.dtype != np.uint8 or y.dtype != np.uint8:
            raise NASError(f"{files[f'{split}-images-idx3-ubyte']}: expected unsigned-byte IDX data")
        if len(x) != len(y):
            raise NASError(f"Fashion-MNIST {split}: {len(x)} images but {len(y)} labels")
        if len(y) and int(y.max()) >= 10:
            raise NASError(f"{files[f'{split}-labels-idx1-ubyte']}: label {int(y.max())} is out of range 0..9")
        arrays += [x[:, None], y]
    return tuple(arrays)


def _download_fashion_mnist(base: str, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for stem, md5 in FASHION_MNIST_FILES.items():
        target = dest / f"{stem}.gz"
        if target.is_file() and hashlib.md5(target.read_bytes()).hexdigest() == md5:
            continue
        url = f"{base}{stem}.gz"
        _logger.info("Downloading %s", url)
        with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
            payload = response.read()
        digest = hashlib.md5(payload).hexdigest()
        if digest != md5:
            raise NASError(f"{url}: MD5 {digest} does not match the official {md5}")
        atomic_write(target, payload)


# -- CIFAR (python archives) ----------------------------------------------------------------------------


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR batches: only numpy arrays and plain containers may be created."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"), ("builtins", "bytearray"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: CIFAR batches hold only arrays")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module.split(".", 2)[2]  # numpy >= 2 renamed numpy.core
        return super().find_class(module, name)


def _unpickle(payload: bytes, where: str) -> dict:
    try:
        obj = _RestrictedUnpickler(io.BytesIO(payload), encoding="bytes").load()
    except Exception as e:  # any unpickling failure: a malformed file
        raise NASError(f"{where}: not a CIFAR python batch ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise NASError(f"{where}: expected a pickled dict, got {type(obj).__name__}")
    # the official files were pickled by Python 2 (bytes keys); accept str keys from re-pickled copies too
    return {k.encode() if isinstance(k, str) else k: v for k, v in obj.items()}


def _load_cifar(key: str, data_dir: Path | None) -> tuple:
    spec = _CIFAR[key]
    looked: list[str] = []
    for folder in _candidate_dirs(data_dir, key):
        extracted = folder / spec["folder"]
        if (extracted / spec["meta"]).is_file():
            return (*_read_cifar(key, functools.partial(_read_member_file, extracted)), str(extracted))
        looked.append(str(extracted))
        archive = folder / spec["archive"]
        if archive.is_file():
            try:
                with tarfile.open(archive, "r:*") as tar:
                    members = {m.name.split("/")[-1]: m for m in tar.getmembers()
                               if m.isfile() and m.name.split("/")[-2:-1] == [spec["folder"]]}
                    read = functools.partial(_read_tar_member, tar, members, archive)
                    return (*_read_cifar(key, read), str(archive))
            except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
                raise NASError(f"{archive}: corrupt archive ({e})") from None
        looked.append(str(archive))
    raise _not_found(
        f"{key.upper()} ({spec['archive']} or an extracted {spec['folder']}/)", looked,
        f"Download {spec['url']} yourself and put it (or its extracted folder) in one of the folders above "
        "(or pass data_dir / set NAS_DATA_DIR).",
    )


def _read_member_file(folder: Path, member: str) -> tuple[bytes, str]:
    path = folder / member
    if not path.is_file():
        raise NASError(f"{path}: missing from the CIFAR folder")
    return path.read_bytes(), str(path)


def _read_tar_member(tar: tarfile.TarFile, members: dict, archive: Path, member: str) -> tuple[bytes, str]:
    info = members.get(member)
    if info is None:
        raise NASError(f"{archive}: no member {member!r} in the archive")
    handle = tar.extractfile(info)
    if handle is None:
        raise NASError(f"{archive}: member {member!r} is not a regular file")
    return handle.read(), f"{archive}:{info.name}"


def _read_cifar(key: str, read: Callable[[str], tuple[bytes, str]]) -> tuple:
    spec = _CIFAR[key]
    meta_bytes, meta_where = read(spec["meta"])
    meta = _unpickle(meta_bytes, meta_where)
    names = meta.get(spec["names_key"])
    if not isinstance(names, list) or len(names) != spec["num_classes"]:
        raise NASError(f"{meta_where}: expected {spec['num_classes']} class names under {spec['names_key']!r}")
    classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)

    def batches(members: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for member in members:
            payload, where = read(member)
            d = _unpickle(payload, where)
            if b"data" not in d or spec["label_key"] not in d:
                raise NASError(f"{where}: missing {b'data'!r} or {spec['label_key']!r}")
            x = np.asarray(d[b"data"])
            y = np.asarray(d[spec["label_key"]], dtype=np.int64)
            if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or len(x) != len(y):
                raise NASError(f"{where}: expected uint8 data of shape (N, 3072) and N labels, got "
                               f"{x.dtype} {x.shape} and {len(y)} labels")
            if len(y) and (y.min() < 0 or y.max() >= spec["num_classes"]):
                raise NASError(f"{where}: labels out of range 0..{spec['num_classes'] - 1}")
            xs.append(x.reshape(-1, 3, 32, 32))
            ys.append(y)
        return np.concatenate(xs), np.concatenate(ys)

    x, y = batches(spec["train"])
    tx, ty = batches(spec["test"])
    return x, y, tx, ty, classes


# -- image folder --------------------------------------------------------------------------------------


def _list_tree(root: Path) -> tuple[list[Path], np.ndarray, tuple[str, ...]]:
    classes = tuple(sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")))
    files: list[Path] = []
    labels: list[int] = []
    for i, c in enumerate(classes):
        found = sorted(p for p in (root / c).rglob("*") if p.suffix.lower() in _IMAGE_EXTENSIONS and p.is_file())
        files += found
        labels += [i] * len(found)
    return files, np.array(labels, dtype=np.int64), classes


def _check_tree(root: Path, files: Sequence[Path], labels: np.ndarray, classes: tuple[str, ...]) -> None:
    """Refuse a tree that cannot be trained on, saying what was found in it."""
    exts = "/".join(sorted(_IMAGE_EXTENSIONS))
    if not classes:
        loose = sum(1 for p in root.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_EXTENSIONS)
        raise NASError(f"imagefolder {root}: found no class sub-folders" + (f" (but {loose} images directly in it)"
                       if loose else "") + "; expected one sub-folder of images per class")
    empty = [c for i, c in enumerate(classes) if not np.any(labels == i)]
    if not files:
        raise NASError(f"imagefolder {root}: found {len(classes)} class folder(s) ({', '.join(classes[:5])}) but no "
                       f"images in them ({exts})")
    if len(classes) < 2:
        raise NASError(f"imagefolder {root}: found one class folder ({classes[0]}, {len(files)} images); need at "
                       "least 2 classes")
    if empty:
        raise NASError(f"imagefolder {root}: class folder(s) {', '.join(empty)} hold no images ({exts}); every "
                       "class needs at least one")


def _decode(paths: Sequence[Path], size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    for i, p in enumerate(paths):
        try:
            with Image.open(p) as img:
                img.draft("RGB", (size, size))
                img = img.convert("RGB")
                w, h = img.size
                scale = size / min(w, h)
                nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
                img = img.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=3.0)
                left, top = (nw - size) // 2, (nh - size) // 2
                img = img.crop((left, top, left + size, top + size))
                out[i] = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise NASError(f"{p}: cannot decode image ({e})") from None
    return out


def _load_imagefolder(
        path: Path, *, train_size: int | None, val_size: int | None, seed: int, image_size: int,
) -> ProxyData:
    if not path.is_dir():
        raise _not_found(f"imagefolder dataset {str(path)!r}", [str(path)],
                         "Pass 'imagefolder:PATH' with PATH a folder holding one sub-folder of images per class.")
    train_root, test_root = path, None
    if (path / "train").is_dir():
        train_root = path / "train"
        test_root = next((path / s for s in ("test", "val") if (path / s).is_dir()), None)
    files, labels, classes = _list_tree(train_root)
    _check_tree(train_root, files, labels, classes)
    default_val = None if val_size is not None else max(len(classes), round(len(files) * DEFAULT_VAL_FRACTION))
    train_idx, val_idx = _split(labels, train_size=train_size, val_size=val_size, seed=seed,
                                what=f"imagefolder {train_root}", default_val=default_val)
    # decode only the images kept (a large tree with a small ``train_size`` stays cheap)
    keep = np.concatenate([train_idx, val_idx])
    images, labels = _decode([files[i] for i in keep], image_size), labels[keep]
    train_idx, val_idx = np.arange(len(train_idx)), np.arange(len(train_idx), len(keep))
    test_x = test_y = None
    if test_root is not None:
        test_files, test_labels, test_classes = _list_tree(test_root)
        unknown = sorted(set(test_classes) - set(classes))
        if unknown:
            raise NASError(f"imagefolder {test_root}: class folders {unknown} are not in {train_root}")
        remap = np.array([classes.index(c) for c in test_classes], dtype=np.int64)
        test_x, test_y = _decode(test_files, image_size), remap[test_labels] if len(test_labels) else test_labels
    source = str(train_root) if test_root is None else f"{train_root} (test: {test_root})"
    return _make(f"imagefolder:{path}", len(classes), images, labels, train_idx, val_idx, test_x, test_y, classes,
                 source, seed)


# -- synthetic -----------------------------------------------------------------------------------------


def _synthetic_templates() -> np.ndarray:
    """Ten fixed class patterns (independent of ``seed``): a colour blob layout plus oriented stripes."""
    rng = np.random.default_rng(20240601)
    s = _SYNTHETIC_SIZE
    coarse = rng.uniform(-1.0, 1.0, size=(_SYNTHETIC_CLASSES, 3, 4, 4))
    blobs = torch.nn.functional.interpolate(torch.from_numpy(coarse), size=(s, s), mode="bilinear",
                                            align_corners=False).numpy()
    yy, xx = np.mgrid[0:s, 0:s] / s
    stripes = np.stack([np.sin(2 * np.pi * (3 + c % 3) * (np.cos(a) * xx + np.sin(a) * yy))
                        for c, a in enumerate(np.linspace(0, np.pi, _SYNTHETIC_CLASSES, endpoint=False))])
    return 0.6 * blobs + 0.4 * stripes[:, None]


def _synthetic_split(n: int, rng: np.random.Generator, templates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.arange(n) % _SYNTHETIC_CLASSES
    rng.shuffle(labels)
    shifts = rng.integers(-3, 4, size=(n, 2))
    x = templates[labels].copy()
    for i, (dy, dx) in enumerate(shifts):
        x[i] = np.roll(x[i], (int(dy), int(dx)), axis=(1, 2))
    x = x * rng.uniform(0.7, 1.3, size=(n, 1, 1, 1)) + rng.normal(0.0, 0.5, size=x.shape)
    return np.clip(127.5 + 60.0 * x, 0, 255).astype(np.uint8), labels.astype(np.int64)


def _load_synthetic(*, train_size: int | None, val_size: int | None, seed: int) -> ProxyData:
    templates = _synthetic_templates()
    sizes = {"train": train_size, "val": val_size, "test": None}
    arrays = {}
    for i, (split, n) in enumerate(sizes.items()):
        rng = np.random.default_rng([seed, i])
        arrays[split] = _synthetic_split(n or _SYNTHETIC_DEFAULT_SIZES[split], rng, templates)
    (x, y), (vx, vy), (tx, ty) = arrays["train"], arrays["val"], arrays["test"]
    all_x, all_y = np.concatenate([x, vx]), np.concatenate([y, vy])
    train_idx, val_idx = np.arange(len(x)), np.arange(len(x), len(all_x))
    return _make("synthetic", _SYNTHETIC_CLASSES, all_x, all_y, train_idx, val_idx, tx, ty,
                 tuple(f"pattern_{i}" for i in range(_SYNTHETIC_CLASSES)), "generated", seed)
