"""Proxy accuracy: train a candidate briefly at low resolution on a subset of the data, score it on a hold-out.

The proxy is a ranking signal, not an accuracy estimate: every candidate gets the same images,
the same schedule and the same seed, so differences come from the architecture. ``ProxyConfig()`` trains one
epoch over 4,000 stratified images at 32 px (62 AdamW steps of 64) and scores 2,000 held-out images. Measured
on Fashion-MNIST on a 2-core CPU with one thread (the zoo and five ``SearchSpace().sample`` genomes): 8 to 44 s,
20.5 s on average, so 30 candidates plus the 7 zoo baselines take about 13 minutes (less with two threads on an
otherwise idle machine); accuracies 0.81 to 0.84 with a seed-to-seed spread of about +-1.5 points, so the
proxy separates good from poor architectures but not near-ties.

Resolution: the proxy trains at ``config.resolution`` (32 by default), raised to the **smallest multiple of 16
at or above** it where the genome fits (:func:`proxy_resolution`; the resolution used is recorded in
:attr:`ProxyResult.resolution`):

- with ``config.min_stage_map = m``, every stage must see at least an ``m x m`` feature map (stride 32 at the
  last stage: ``m = 2`` means 64 px), so that the stage-4 mixer, kernel and patch genes shape what is learnt
  (at 32 px a stride-32 stage sees one pixel, where attention, RepMixer and a 7x7 depthwise conv nearly coincide);
- MobileViT stages must split their feature map into patches (MobileViT-XS needs a 2x2 map at stride 32, i.e.
  64 px), whatever ``min_stage_map`` says.

Width: ``config.width_multiplier`` scales every stage width of the *trained* network (rounded to a multiple of 8,
at least 8, which every mixer accepts: attention heads are 8, 16 or 32 wide and MobileViT's 4 heads divide its
multiple-of-8 transformer width), so that a higher resolution can cost what the default does. Stem, head, FFN and
MobileViT widths follow the stage widths. It only changes proxy training: latency is always priced on the real
genome. Grayscale data is repeated to 3 channels, so the weights have the same shape as the deployed RGB model.

Scores: :class:`ProxyResult` carries the accuracy and the cross-entropy on the scoring images, and the mean
training loss over the last epoch's steps (:attr:`ProxyResult.train_loss`, a "sum of training losses" score
divided by a step count that is the same for every candidate). The search scores on the validation hold-out
(``score_split="val"``); only the fidelity benchmark scores on the official test set (``score_split="test"``),
and intermediate checks always use the validation hold-out.

Evaluation: before every evaluation the BatchNorm running statistics are recomputed on ``bn_recalibration``
fixed training images (after a few dozen steps the running averages lag the weights so much that deep networks
score near chance in ``eval()`` mode although they classify well).

Early stopping: the proxy's own, because Optuna's pruners do not work in multi-objective studies. After
``hopeless_after`` of the steps, and at the end of every epoch but the last (never before
``hopeless_min_steps``), the candidate is scored on the first ``check_size`` validation images; if it is not
above chance + ``hopeless_margin`` it is stopped (``stopped_early=True``, ``stop_reason="hopeless: ..."``) and
the accuracy it reached (on the whole validation subset) is returned. A NaN/inf loss, or a loss above
``diverge_factor`` times the first one for ``diverge_patience`` steps in a row, raises
:class:`ProxyTrainingError` (``reason="nan"`` / ``"diverged"``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from search_space import (
    STAGE_STRIDES,
    Genome,
    InvalidGenomeError,
    as_genome,
    build_model,
    check_resolution,
    is_int,
    is_number,
)

from ._data import ProxyData, stratified_indices
from ._errors import NASError, ProxyTrainingError, SearchConfigError

__all__ = ["SCORE_SPLITS", "ProxyConfig", "ProxyResult", "proxy_genome", "proxy_resolution", "train_proxy"]

_logger = logging.getLogger(__name__)

_MAX_RESOLUTION = 2048
_RESOLUTION_STEP = 16
_WIDTH_STEP = 8
_MAX_WIDTH = 2048
_MAX_WIDTH_MULTIPLIER = 8.0
#: Splits :func:`train_proxy` can score on: the validation hold-out (the search) or the official test set
#: (the fidelity benchmark only).
SCORE_SPLITS = ("val", "test")
#: Seed of the training/validation subsets the proxy draws from a dataset: fixed, so that every
#: candidate (whatever its ``seed``) sees the same images.
_SUBSET_SEED = 0


def _check_number(
        name: str, value: Any, *, integer: bool = False, lo: float | None = None, hi: float | None = None,
        lo_open: bool = False, optional: bool = False,
) -> None:
    if value is None and optional:
        return
    what = "an integer" if integer else "a number"
    if not (is_int(value) if integer else (is_number(value) and math.isfinite(value))):
        raise SearchConfigError(f"`{name}` must be {what}{' or None' if optional else ''}, got {value!r}")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise SearchConfigError(f"`{name}` must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise SearchConfigError(f"`{name}` must be <= {hi}, got {value!r}")


@dataclass(frozen=True)
class ProxyConfig:
    """How a candidate is trained and scored by the proxy.

    Attributes:
        epochs: Passes over the training subset.
        resolution: Training resolution (a multiple of 16; raised per genome by ``min_stage_map`` and for
            MobileViT, see the module doc).
        batch_size: Training batch size (evaluation uses twice that).
        lr: Peak AdamW learning rate (linear warm-up, then cosine decay to zero, per step).
        weight_decay: AdamW weight decay (not applied to norms and biases).
        warmup_fraction: Fraction of the steps spent warming up.
        train_size: Class-stratified subset of ``data.train_x`` to train on (``None``: all of it).
        val_size: Class-stratified subset of ``data.val_x`` to score on (``None``: all of it).
        label_smoothing: Label smoothing of the training loss (the reported loss has none).
        bn_recalibration: Training images whose batch statistics replace the BatchNorm running statistics
            before every evaluation (0: keep the running averages). Needed because after a few dozen steps the
            running averages still lag the fast-moving weights, which leaves deep networks near chance in
            ``eval()`` mode although they classify well.
        grad_clip: Gradient-norm clip (``None``: no clipping).
        hopeless_after: Fraction of the steps after which the first hopeless check runs (``None``: never stop
            a candidate as hopeless).
        hopeless_margin: A candidate at or below chance (``1 / num_classes``) + this margin is hopeless.
        hopeless_min_steps: No check before this step (BatchNorm running statistics need a few steps to
            settle before an evaluation means anything).
        check_size: Validation images used by the intermediate checks.
        diverge_factor: A loss above this multiple of the first step's loss counts as exploding...
        diverge_patience: ...for this many consecutive steps, then training fails with ``reason="diverged"``.
        max_seconds: Hard cap on the wall time of one candidate (``None``: no cap); training stops early with
            ``stop_reason="time limit: ..."`` and the candidate is scored as it is.
        width_multiplier: Scales every stage width of the trained network (rounded to a multiple of 8, at least
            8); proxy training only, latency is priced on the real genome. 1.0: the genome as it is.
        min_stage_map: Raise the resolution so that every stage sees at least this map size (2: 64 px for the
            stride-32 networks of the space); ``None``: only MobileViT stages raise it.
    """

    epochs: int = 1
    resolution: int = 32
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1
    train_size: int | None = 4000
    val_size: int | None = 2000
    label_smoothing: float = 0.1
    bn_recalibration: int = 512
    grad_clip: float | None = 5.0
    hopeless_after: float | None = 0.25
    hopeless_margin: float = 0.05
    hopeless_min_steps: int = 16
    check_size: int = 500
    diverge_factor: float = 10.0
    diverge_patience: int = 5
    max_seconds: float | None = None
    width_multiplier: float = 1.0
    min_stage_map: int | None = None

    def __post_init__(self) -> None:
        _check_number("epochs", self.epochs, integer=True, lo=1, hi=10_000)
        _check_number("resolution", self.resolution, integer=True, lo=_RESOLUTION_STEP, hi=_MAX_RESOLUTION)
        if self.resolution % _RESOLUTION_STEP:
            raise SearchConfigError(f"`resolution` must be a multiple of {_RESOLUTION_STEP}, got {self.resolution}")
        _check_number("batch_size", self.batch_size, integer=True, lo=2)
        _check_number("lr", self.lr, lo=0.0)
        _check_number("weight_decay", self.weight_decay, lo=0.0)
        _check_number("warmup_fraction", self.warmup_fraction, lo=0.0, hi=1.0)
        _check_number("train_size", self.train_size, integer=True, lo=2, optional=True)
        _check_number("val_size", self.val_size, integer=True, lo=1, optional=True)
        _check_number("label_smoothing", self.label_smoothing, lo=0.0, hi=0.99)
        _check_number("bn_recalibration", self.bn_recalibration, integer=True, lo=0)
        _check_number("grad_clip", self.grad_clip, lo=0.0, lo_open=True, optional=True)
        _check_number("hopeless_after", self.hopeless_after, lo=0.0, hi=1.0, lo_open=True, optional=True)
        _check_number("hopeless_margin", self.hopeless_margin, lo=0.0, hi=1.0)
        _check_number("hopeless_min_steps", self.hopeless_min_steps, integer=True, lo=1)
        _check_number("check_size", self.check_size, integer=True, lo=1)
        _check_number("diverge_factor", self.diverge_factor, lo=1.0, lo_open=True)
        _check_number("diverge_patience", self.diverge_patience, integer=True, lo=1)
        _check_number("max_seconds", self.max_seconds, lo=0.0, lo_open=True, optional=True)
        _check_number("width_multiplier", self.width_multiplier, lo=0.0, lo_open=True, hi=_MAX_WIDTH_MULTIPLIER)
        _check_number("min_stage_map", self.min_stage_map, integer=True, lo=1,
                      hi=_MAX_RESOLUTION // STAGE_STRIDES[-1], optional=True)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProxyConfig:
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise SearchConfigError(f"unknown proxy option(s) {', '.join(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class ProxyResult:
    """Outcome of :func:`train_proxy`.

    Attributes:
        accuracy: Top-1 accuracy on the validation subset, 0..1.
        loss: Cross-entropy (no label smoothing) on the validation subset.
        epochs_run: Epochs trained (fractional when stopped early).
        steps: Optimizer steps taken.
        seconds: Wall time, model building and evaluation included.
        stopped_early: Whether training stopped before the last step (hopeless or time limit).
        stop_reason: Why it stopped early (``"hopeless: ..."``, ``"time limit: ..."``), else ``None``.
        history: One dict per evaluation: ``step``, ``epoch``, ``kind`` (``check`` on ``check_size`` images or
            ``final``), ``accuracy``, ``loss``, ``train_loss`` (mean training loss since the previous record, ``None``
            if no step was taken since), ``lr``, ``seconds``.
        state_dict: Training-form weights at the proxy's ``num_classes`` (CPU tensors; only with
            ``keep_weights=True``): ``build_model(proxy_genome(genome, config.width_multiplier),
            num_classes=data.num_classes).load_state_dict(...)``, then ``reparameterize`` to deploy.
        num_params: Parameters of the training-form network that was trained (after ``width_multiplier``).
        resolution: Resolution it was trained and scored at.
        train_loss: Mean training loss (with label smoothing) over the last epoch's steps (all steps if fewer
            were run); lower is better.
        score_split: Split ``accuracy`` and ``loss`` were measured on (``val`` or ``test``).
    """

    accuracy: float
    loss: float
    epochs_run: float
    steps: int
    seconds: float
    stopped_early: bool = False
    stop_reason: str | None = None
    history: tuple[dict[str, Any], ...] = ()
    state_dict: dict[str, torch.Tensor] | None = field(default=None, repr=False, compare=False)
    num_params: int = 0
    resolution: int = 32
    train_loss: float | None = None
    score_split: str = "val"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, without the weights."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "state_dict"}
        out["history"] = [dict(h) for h in self.history]
        return out


def proxy_resolution(genome: Genome, resolution: int = 32, *, min_stage_map: int | None = None) -> int:
    """The resolution the proxy uses for ``genome``: the smallest multiple of 16 >= ``resolution`` it fits.

    With ``min_stage_map`` every stage must see at least that map size (the last stage has stride 32, so 2 means
    64 px); MobileViT stages must also divide their feature map by their patch size. Other genomes run at any size,
    down to 1x1 maps at stride 32.
    """
    _check_number("resolution", resolution, integer=True, lo=1, hi=_MAX_RESOLUTION)
    _check_number("min_stage_map", min_stage_map, integer=True, lo=1, hi=_MAX_RESOLUTION // STAGE_STRIDES[-1],
                  optional=True)
    floor = resolution if min_stage_map is None else max(resolution, min_stage_map * STAGE_STRIDES[-1])
    r = max(_RESOLUTION_STEP, -(-floor // _RESOLUTION_STEP) * _RESOLUTION_STEP)
    while r <= _MAX_RESOLUTION:
        try:
            check_resolution(genome, r)
        except InvalidGenomeError:
            r += _RESOLUTION_STEP
            continue
        return r
    raise NASError(f"genome {genome.key()}: no resolution in [{floor}, {_MAX_RESOLUTION}] fits its MobileViT "
                   "stages")


def proxy_genome(genome: Genome, width_multiplier: float = 1.0) -> Genome:
    """The genome the proxy trains: ``genome`` with every stage width scaled by ``width_multiplier``.

    Widths are rounded to the nearest multiple of 8 (at least 8, at most 2048), which keeps every mixer valid;
    a multiplier of 1.0 returns ``genome`` itself.
    """
    _check_number("width_multiplier", width_multiplier, lo=0.0, lo_open=True, hi=_MAX_WIDTH_MULTIPLIER)
    if width_multiplier == 1.0:
        return genome

    def scale(width: int) -> int:
        steps = math.floor(width * width_multiplier / _WIDTH_STEP + 0.5)
        return min(_MAX_WIDTH, max(_WIDTH_STEP, steps * _WIDTH_STEP))

    return dataclasses.replace(genome, stages=tuple(dataclasses.replace(st, width=scale(st.width))
                                                    for st in genome.stages))


# -- data preparation (cached per dataset object) ---------------------------------------------------------


@dataclass(frozen=True)
class _Prepared:
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    #: The images the final score is measured on: ``val_x``/``val_y`` themselves, or the official test set.
    score_x: torch.Tensor
    score_y: torch.Tensor


_CACHE: weakref.WeakKeyDictionary[ProxyData, dict[tuple, _Prepared]] = weakref.WeakKeyDictionary()
_CACHE_PER_DATASET = 4


def to_float(x: torch.Tensor, data: ProxyData, resolution: int, *, chunk: int = 2048) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` -> float32, resized to ``resolution`` (bilinear, antialiased) and normalised."""
    mean = torch.tensor(data.mean, dtype=torch.float32).reshape(1, -1, 1, 1)
    std = torch.tensor(data.std, dtype=torch.float32).reshape(1, -1, 1, 1)
    out = torch.empty((x.shape[0], x.shape[1], resolution, resolution), dtype=torch.float32)
    for i in range(0, x.shape[0], chunk):
        part = x[i:i + chunk].float().div_(255.0)
        if part.shape[-2:] != (resolution, resolution):
            part = F.interpolate(part, size=(resolution, resolution), mode="bilinear", align_corners=False,
                                 antialias=True)
        out[i:i + chunk] = (part - mean) / std
    return out


def _prepare(data: ProxyData, resolution: int, config: ProxyConfig, device: torch.device,
             score_split: str = "val") -> _Prepared:
    key = (resolution, config.train_size, config.val_size, str(device), score_split)
    per_data = _CACHE.setdefault(data, {})
    if key in per_data:
        return per_data[key]
    t0 = time.perf_counter()
    tr = _subset(data.train_y, config.train_size)
    va = _subset(data.val_y, config.val_size)
    # a fixed shuffle of the validation subset, so that the first ``check_size`` images mix the classes
    va = va[torch.randperm(len(va), generator=torch.Generator().manual_seed(_SUBSET_SEED))]
    val_x, val_y = to_float(data.val_x[va], data, resolution).to(device), data.val_y[va].to(device)
    score_x, score_y = val_x, val_y
    if score_split == "test":  # the whole official test set, whatever ``val_size`` says
        score_x, score_y = to_float(data.test_x, data, resolution).to(device), data.test_y.to(device)
    prepared = _Prepared(
        train_x=to_float(data.train_x[tr], data, resolution).to(device), train_y=data.train_y[tr].to(device),
        val_x=val_x, val_y=val_y, score_x=score_x, score_y=score_y,
    )
    if len(per_data) >= _CACHE_PER_DATASET:
        per_data.pop(next(iter(per_data)))
    per_data[key] = prepared
    _logger.debug("Prepared %s at %dpx: %d train / %d val / %d %s images in %.2fs", data.name, resolution,
                  len(tr), len(va), len(score_y), score_split, time.perf_counter() - t0)
    return prepared


def _subset(labels: torch.Tensor, size: int | None) -> torch.Tensor:
    if size is None or size >= len(labels):
        return torch.arange(len(labels))
    return torch.from_numpy(stratified_indices(labels, size, seed=_SUBSET_SEED))


def _rgb(x: torch.Tensor) -> torch.Tensor:
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


@torch.no_grad()
def _recalibrate_bn(model: nn.Module, x: torch.Tensor, batch_size: int) -> None:
    """Replace BatchNorm running statistics by the exact average over ``x`` (batches of ``batch_size``)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms or len(x) == 0:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the recalibration batches
    model.train()
    for i in range(0, len(x), batch_size):
        model(_rgb(x[i:i + batch_size]))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


@torch.no_grad()
def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[float, float]:
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, len(y), batch_size):
        logits = model(_rgb(x[i:i + batch_size])).float()
        loss += float(F.cross_entropy(logits, y[i:i + batch_size], reduction="sum"))
        correct += int((logits.argmax(1) == y[i:i + batch_size]).sum())
    model.train()
    n = max(len(y), 1)
    return correct / n, loss / n


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)]


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


# -- training ----------------------------------------------------------------------------------------------


def train_proxy(
        genome: Genome | Mapping[str, Any] | str,
        data: ProxyData,
        *,
        config: ProxyConfig | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
        keep_weights: bool = False,
        progress_callback: Callable[[dict[str, Any]], None] | None = None,
        score_split: str = "val",
) -> ProxyResult:
    """Train ``genome`` briefly on ``data`` and return its proxy accuracy.

    Args:
        genome: The architecture (a :class:`Genome`, its dict or JSON); its own resolution is ignored.
        data: A dataset from :func:`load_dataset`.
        config: Training recipe (default ``ProxyConfig()``).
        device: Torch device to train on. ``torch.set_num_threads`` is left to the caller.
        seed: Seeds the initialisation and the batch order (the global RNG state is restored afterwards).
        keep_weights: Return the trained weights in :attr:`ProxyResult.state_dict` (of the network trained,
            that is after ``config.width_multiplier``).
        progress_callback: Called with each history record (a dict) as it is made; an exception raised by it
            aborts training and propagates.
        score_split: ``val`` (default: the validation subset, as the search scores) or ``test`` (the complete
            official test set; for benchmarks only). Intermediate checks always use the validation subset.

    Raises:
        ProxyTrainingError: The loss became NaN/inf (``reason="nan"``) or exploded (``reason="diverged"``).
        NASError: The genome cannot run at any resolution (never for the zoo or ``SearchSpace`` genomes).
        SearchConfigError: ``score_split`` is unknown, or ``test`` for a dataset without a test set.
    """
    genome = as_genome(genome)
    config = ProxyConfig() if config is None else config
    if not isinstance(config, ProxyConfig):
        raise TypeError(f"`config` must be a ProxyConfig, got {type(config).__name__}")
    if not isinstance(data, ProxyData):
        raise TypeError(f"`data` must be a ProxyData (see nas.load_dataset), got {type(data).__name__}")
    _check_number("seed", seed, integer=True, lo=0)
    if progress_callback is not None and not callable(progress_callback):
        raise TypeError("`progress_callback` must be callable or None")
    _check_score_split(score_split, data)
    device = torch.device(device)

    t0 = time.perf_counter()
    resolution = proxy_resolution(genome, config.resolution, min_stage_map=config.min_stage_map)
    if resolution != config.resolution:
        _logger.debug("Genome %s trains at %dpx (min_stage_map %s, or its MobileViT stages)", genome.key(),
                      resolution, config.min_stage_map)
    prep = _prepare(data, resolution, config, device, score_split)
    fork_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        # the network does not depend on ``genome.resolution`` (only MobileViT's divisibility does, checked above)
        model = build_model(proxy_genome(genome, config.width_multiplier), num_classes=data.num_classes).to(device)
    model.train()
    num_params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr)

    n_train = len(prep.train_y)
    if n_train < 2 or len(prep.val_y) < 1:
        raise NASError(f"{data.name}: the proxy needs at least 2 training and 1 validation images, got "
                       f"{n_train} and {len(prep.val_y)}")
    batch_size = min(config.batch_size, n_train)
    steps_per_epoch = n_train // batch_size
    total = config.epochs * steps_per_epoch
    warmup = max(1, round(config.warmup_fraction * total))
    checks = {e * steps_per_epoch for e in range(1, config.epochs)}
    if config.hopeless_after is not None:
        checks.add(math.ceil(config.hopeless_after * total))
    checks = {s for s in (max(c, config.hopeless_min_steps) for c in checks) if s < total}
    chance = 1.0 / data.num_classes
    check_n = min(config.check_size, len(prep.val_y))
    eval_bs = 2 * batch_size
    order_gen = torch.Generator().manual_seed(seed)
    recal_n = min(config.bn_recalibration, n_train)
    # a fixed set of training images (the same for every candidate) for BatchNorm recalibration
    recal_x = prep.train_x[torch.randperm(n_train, generator=torch.Generator().manual_seed(_SUBSET_SEED))[:recal_n]]

    history: list[dict[str, Any]] = []
    losses: list[float] = []  # every step's training loss (the last epoch's mean is a score)
    loss_sum, loss_n = 0.0, 0
    first_loss: float | None = None
    exploding = 0
    step = 0
    stop_reason: str | None = None

    def record(kind: str, acc: float, loss: float) -> dict[str, Any]:
        nonlocal loss_sum, loss_n
        rec = dict(step=step, epoch=round(step / steps_per_epoch, 4), kind=kind, accuracy=acc, loss=loss,
                   train_loss=loss_sum / loss_n if loss_n else None,
                   lr=optimizer.param_groups[0]["lr"], seconds=round(time.perf_counter() - t0, 3))
        loss_sum, loss_n = 0.0, 0
        history.append(rec)
        if progress_callback is not None:
            progress_callback(dict(rec))
        return rec

    while step < total and stop_reason is None:
        perm = torch.randperm(n_train, generator=order_gen).to(device)
        for b in range(steps_per_epoch):
            for group in optimizer.param_groups:
                group["lr"] = config.lr * _lr_factor(step, total, warmup)
            idx = perm[b * batch_size:(b + 1) * batch_size]
            logits = model(_rgb(prep.train_x[idx]))
            loss = F.cross_entropy(logits.float(), prep.train_y[idx], label_smoothing=config.label_smoothing)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise ProxyTrainingError(f"genome {genome.key()}: loss is {value} at step {step + 1} "
                                         f"(lr {config.lr:g})", reason="nan")
            if first_loss is None:
                first_loss = value
            exploding = exploding + 1 if value > config.diverge_factor * first_loss else 0
            if exploding >= config.diverge_patience:
                raise ProxyTrainingError(
                    f"genome {genome.key()}: loss {value:.3g} stayed above {config.diverge_factor:g}x the initial "
                    f"{first_loss:.3g} for {exploding} steps (step {step + 1}, lr {config.lr:g})", reason="diverged")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            step += 1
            loss_sum += value
            loss_n += 1
            losses.append(value)

            if config.max_seconds is not None and time.perf_counter() - t0 > config.max_seconds and step < total:
                stop_reason = f"time limit: {config.max_seconds:g}s reached after {step}/{total} steps"
                break
            if step in checks:
                _recalibrate_bn(model, recal_x, batch_size)
                acc, vloss = _evaluate(model, prep.val_x[:check_n], prep.val_y[:check_n], eval_bs)
                record("check", acc, vloss)
                if config.hopeless_after is not None and acc <= chance + config.hopeless_margin:
                    stop_reason = (f"hopeless: accuracy {acc:.3f} on {check_n} validation images after {step}/"
                                   f"{total} steps is not above chance {chance:.3f} + {config.hopeless_margin:g}")
                    break

    _recalibrate_bn(model, recal_x, batch_size)
    accuracy, val_loss = _evaluate(model, prep.score_x, prep.score_y, eval_bs)
    record("final", accuracy, val_loss)
    if not math.isfinite(val_loss):
        raise ProxyTrainingError(f"genome {genome.key()}: {score_split} loss is {val_loss} after {step} steps",
                                 reason="nan")
    last_epoch = losses[-steps_per_epoch:]
    train_loss = sum(last_epoch) / len(last_epoch) if last_epoch else None
    seconds = time.perf_counter() - t0
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()} if keep_weights else None
    result = ProxyResult(
        accuracy=accuracy, loss=val_loss, epochs_run=round(step / steps_per_epoch, 4), steps=step,
        seconds=seconds, stopped_early=stop_reason is not None, stop_reason=stop_reason, history=tuple(history),
        state_dict=state, num_params=num_params, resolution=resolution, train_loss=train_loss,
        score_split=score_split,
    )
    _logger.info("Proxy %s: %s accuracy %.4f, %s loss %.3f, %d steps at %dpx in %.1fs%s", genome.key(), score_split,
                 accuracy, score_split, val_loss, step, resolution, seconds,
                 f" (stopped: {stop_reason})" if stop_reason else "")
    return result


def _check_score_split(score_split: Any, data: ProxyData) -> None:
    if score_split not in SCORE_SPLITS:
        raise SearchConfigError(f"`score_split` must be one of {', '.join(SCORE_SPLITS)}, got {score_split!r}")
    if score_split == "test" and (data.test_y is None or len(data.test_y) == 0):
        raise SearchConfigError(f"`score_split`: {data.name} has no test set to score on")
