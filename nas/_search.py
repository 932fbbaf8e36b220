"""The multi-objective search: Optuna study, objective, seed baselines, workers, resume, report.

Every worker (one process, or one machine) runs :func:`run_worker` against the same storage and study
name; Optuna hands each trial to exactly one worker. Seed baselines live in a companion study
``<study>:baselines``: whichever worker creates it enqueues the zoo models once, and workers drain the
queue, so each baseline is trained exactly once however many workers start together.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._errors import SearchConfigError, StudyStorageError
from ._report import (
    RUNS_DIR,
    Candidate,
    check_run_folder,
    claim_run_folder,
    is_dominated,
    pareto_front,
    run_folder_name,
    write_run_folder,
)
from ._storage import _first_line, is_sqlite, load_existing_study, open_storage, redact_url, resolve_storage_url, scrub

__all__ = ["PROXIES", "SAMPLERS", "SearchConfig", "SearchResult", "collect_candidates", "run_search", "run_worker",
           "write_report"]

_logger = logging.getLogger(__name__)

SAMPLERS = ("nsga2", "tpe", "random")
PROXIES = ("train", "zero-cost")
ZERO_COST_METHODS = ("naswot", "synflow")
BASELINE_SUFFIX = ":baselines"
MAX_STUDY_NAME = 512
"""Optuna's ``studies.study_name`` column holds at most this many characters (PostgreSQL enforces it)."""


@dataclass(frozen=True)
class SearchConfig:
    """Everything one search run needs; the CLI maps its options one to one onto these fields.

    Attributes:
        device: Latency device (``iphone12``, ``ort-cpu``, ``torch-cpu``, ``torch-cuda`` or an imported remote one).
        trials: Target number of COMPLETE search trials in the study (a rerun only adds what is missing).
        timeout: Wall-clock limit of this run in seconds (None: none).
        latency_max: Hard latency budget in ms (``Trial.set_constraint``); None: unconstrained.
        reject_factor: Candidates predicted above ``reject_factor * latency_max`` are rejected before training.
        sampler: ``nsga2``, ``tpe`` or ``random``.
        storage: Optuna storage URL or SQLite file (default ``./repnas-search.db``).
        study: Study name (default ``repnas-<device>-<dataset>``).
        dataset, data_dir: Proxy dataset and where to look for it first.
        epochs: Proxy training epochs (None: the proxy's default).
        resolution: Deployment resolution at which latency is priced.
        proxy_resolution: Resolution of proxy training (None: the proxy's default).
        proxy_width: Proxy-only width multiplier of every stage (None: the proxy's default; latency is always
            priced on the real genome, and weights trained narrower are not kept for export).
        proxy_min_map: Smallest feature map every stage must see during proxy training (None: the proxy's
            default; 2 = 64 px for the stride-32 networks of the space).
        proxy_images: Class-stratified training images of the proxy (None: the proxy's default).
        train_device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        seed: Seed of the sampler and of proxy training (the same for every candidate: an identical proxy).
        out: Run folder (default ``runs/<study>``).
        proxy: ``train`` (short training) or ``zero-cost`` (a training-free score, seconds per candidate).
        zero_cost_method: Score used by ``proxy="zero-cost"``.
        lut_db: LUT database (default ``./repnas-lut.db``).
        workers: Local worker processes (more than one needs a server database, not SQLite).
        baselines: Evaluate the seed zoo models as baselines.
        population_size: NSGA-II population (None: about a third of ``trials``, between 8 and 50).
        heartbeat_interval, grace_period: Optuna heartbeat settings (crash recovery of killed workers).
        threads: torch threads per worker (None: cores / workers).
    """

    device: str = "iphone12"
    trials: int = 30
    timeout: float | None = None
    latency_max: float | None = None
    reject_factor: float = 1.2
    sampler: str = "nsga2"
    storage: str | None = None
    study: str | None = None
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    epochs: int | None = None
    resolution: int = 224
    proxy_resolution: int | None = None
    proxy_width: float | None = None
    proxy_min_map: int | None = None
    proxy_images: int | None = None
    train_device: str = "auto"
    seed: int = 0
    out: str | None = None
    proxy: str = "train"
    zero_cost_method: str = "naswot"
    lut_db: str | None = None
    workers: int = 1
    baselines: bool = True
    population_size: int | None = None
    heartbeat_interval: int = 10
    grace_period: int | None = None
    threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise SearchConfigError(msg)

        need(isinstance(self.trials, int) and self.trials >= 1,
             f"--trials must be a positive integer, got {self.trials!r}")
        need(self.timeout is None or self.timeout > 0, f"--timeout must be positive seconds, got {self.timeout!r}")
        need(self.latency_max is None or (math.isfinite(self.latency_max) and self.latency_max > 0),
             f"--latency-max must be a positive number of milliseconds, got {self.latency_max!r}")
        need(self.reject_factor >= 1, f"reject factor must be >= 1, got {self.reject_factor}")
        need(self.sampler in SAMPLERS, f"unknown --sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}")
        need(self.proxy in PROXIES, f"unknown --proxy {self.proxy!r}; choose one of {', '.join(PROXIES)}")
        need(self.zero_cost_method in ZERO_COST_METHODS,
             f"unknown zero-cost method {self.zero_cost_method!r}; choose one of {', '.join(ZERO_COST_METHODS)}")
        need(self.epochs is None or (isinstance(self.epochs, int) and self.epochs >= 1),
             f"--epochs must be a positive integer, got {self.epochs!r}")
        need(isinstance(self.resolution, int) and self.resolution >= 32 and self.resolution % 32 == 0,
             f"--resolution must be a multiple of 32 (>= 32), got {self.resolution!r}")
        need(self.proxy_resolution is None or (self.proxy_resolution >= 16 and self.proxy_resolution % 16 == 0),
             f"--proxy-resolution must be a multiple of 16 (>= 16), got {self.proxy_resolution!r}")
        need(self.train_device in ("auto", "cpu", "cuda") or self.train_device.startswith("cuda:"),
             f"--train-device must be auto, cpu or cuda[:N], got {self.train_device!r}")
        need(isinstance(self.workers, int) and self.workers >= 1, f"--workers must be >= 1, got {self.workers!r}")
        need(self.population_size is None or self.population_size >= 2,
             f"population size must be >= 2, got {self.population_size!r}")
        need(self.heartbeat_interval >= 1, f"heartbeat interval must be >= 1 s, got {self.heartbeat_interval}")
        need(self.grace_period is None or self.grace_period > self.heartbeat_interval,
             f"grace period must exceed the heartbeat interval ({self.heartbeat_interval} s), got {self.grace_period} "
             "(live trials would be failed as stale and trained again)")
        need(self.threads is None or (isinstance(self.threads, int) and not isinstance(self.threads, bool)
                                      and self.threads >= 1), f"--threads must be >= 1, got {self.threads!r}")
        if self.study is not None:
            need(bool(self.study.strip()) and not self.study.endswith(BASELINE_SUFFIX),
                 f"--study must be a non-empty name not ending in {BASELINE_SUFFIX!r}, got {self.study!r}")
        need(len(self.study_name) + len(BASELINE_SUFFIX) <= MAX_STUDY_NAME,
             f"--study must be at most {MAX_STUDY_NAME - len(BASELINE_SUFFIX)} characters (Optuna stores at most "
             f"{MAX_STUDY_NAME}, and the baselines study adds {BASELINE_SUFFIX!r}), got {len(self.study_name)}")

    # -- derived ------------------------------------------------------------------------------
    @property
    def study_name(self) -> str:
        return self.study or f"repnas-{self.device}-{self.dataset.replace(':', '-').replace('/', '-')}"

    @property
    def storage_url(self) -> str:
        return resolve_storage_url(self.storage)

    @property
    def out_dir(self) -> Path:
        """The run folder: ``--out``, or ``runs/<run_folder_name(study)>`` (one safe folder per study name)."""
        return Path(self.out) if self.out else RUNS_DIR / run_folder_name(self.study_name)

    def proxy_config(self):
        """The :class:`~nas.ProxyConfig` every candidate and baseline of this search is scored with."""
        from ._proxy import ProxyConfig

        over = {"epochs": self.epochs, "resolution": self.proxy_resolution, "width_multiplier": self.proxy_width,
                "min_stage_map": self.proxy_min_map, "train_size": self.proxy_images}
        return dataclasses.replace(ProxyConfig(), **{k: v for k, v in over.items() if v is not None},
                                   **self.extra.get("proxy", {}))

    @property
    def metric(self) -> str:
        return "proxy accuracy" if self.proxy == "train" else f"{self.zero_cost_method} score (zero-cost)"

    def identity(self) -> dict[str, Any]:
        """Settings a study is bound to: resuming it with different ones is refused."""
        return {"device": self.device, "dataset": self.dataset, "proxy": self.proxy, "resolution": self.resolution,
                "zero_cost_method": self.zero_cost_method if self.proxy == "zero-cost" else None,
                "proxy_config": self.proxy_config().to_dict(), "latency_max": self.latency_max}


@dataclass(frozen=True)
class SearchResult:
    front: list[Candidate]
    baselines: list[Candidate]
    candidates: list[Candidate]
    files: dict[str, Path]
    latency_label: str


# -- helpers -----------------------------------------------------------------------------------
def _train_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SearchConfigError(f"--train-device {name}: no CUDA GPU is visible here")
    return name


def latency_label(device: str) -> str:
    """How latencies of ``device`` are labelled everywhere: measured, imported or PREDICTED with its error."""
    from latency_lut import get_device

    dev = get_device(device, allow_remote=True)
    if dev.kind == "measured":
        return f"measured on {dev.name} (sum of measured per-block LUT medians)"
    if dev.kind == "remote":
        return f"measured on remote device {dev.name} (imported per-block LUT)"
    try:
        from latency_lut._iphone12 import calibration_summary

        s = calibration_summary()
        return (f"PREDICTED for {dev.name} by a cost model, not measured (leave-one-family-out MAPE "
                f"{s['lofo_mean_mape_pct']:.1f}%)")
    except Exception:  # noqa: BLE001 - the label must never break a report
        return f"PREDICTED for {dev.name} by a cost model, not measured"


def _latency_source(device: str) -> str:
    from latency_lut import get_device

    kind = get_device(device, allow_remote=True).kind
    return {"measured": "measured", "predicted": "predicted", "remote": "imported"}[kind]


def _check_device(config: SearchConfig):
    from latency_lut import LatencyTable, UnknownDeviceError, get_device

    dev = get_device(config.device, allow_remote=True)
    table = LatencyTable(config.lut_db)
    if dev.kind == "remote" and not table.keys(dev.name):
        raise UnknownDeviceError(
            f"unknown device {config.device!r}: not a built-in device (ort-cpu, torch-cpu, iphone12, torch-cuda) "
            f"and the LUT {redact_url(table.url)} has no rows for it (a remote device gets rows through "
            "`python -m latency_lut bundle` and `import`)")
    return dev, table


def _sampler_seed(config: SearchConfig, worker: int, *, reproducible: bool) -> int:
    """``--seed + 1000 * worker`` for the workers of a fresh study; otherwise a stream no other worker shares."""
    if reproducible:
        return config.seed + 1000 * worker
    import numpy as np

    entropy = np.random.SeedSequence().entropy  # fresh OS entropy, mixed with the user's seed and the worker
    return int(np.random.SeedSequence([config.seed, worker, entropy]).generate_state(1)[0])


def _make_sampler(config: SearchConfig, seed: int):
    import optuna

    if config.sampler == "nsga2":
        pop = config.population_size or min(50, max(8, config.trials // 3))
        return optuna.samplers.NSGAIISampler(population_size=pop, seed=seed)
    if config.sampler == "tpe":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True,
                                              n_startup_trials=min(10, max(4, config.trials // 3)))
    return optuna.samplers.RandomSampler(seed=seed)


def _space(config: SearchConfig):
    from search_space import SearchSpace

    return SearchSpace(resolution=config.resolution)


def min_reachable_latency(config: SearchConfig, table=None, *, passes: int = 3) -> tuple[float, Any]:
    """The cheapest genome of the space on ``config.device`` found by coordinate descent from the smallest one.

    Depth is held at each stage's minimum; every categorical gene is tried in turn, keeping the cheapest,
    until a pass changes nothing. Returns ``(latency_ms, genome)``.
    """
    from latency_lut import predict_latency

    space = _space(config)
    choices: dict[str, tuple] = {}
    chosen: dict[str, Any] = {}

    def draw():
        def cat(name, options):
            choices[name] = tuple(options)
            v = chosen.get(name, options[0])
            return v if v in options else options[0]

        return space._draw(cat, lambda name, lo, hi: lo)

    def price(g) -> float:
        return predict_latency(g, config.device, config.resolution, db=table)

    best_g = draw()
    best = price(best_g)
    for _ in range(passes):
        improved = False
        for name in list(choices):
            for v in choices.get(name, ()):
                if chosen.get(name, choices[name][0]) == v:
                    continue
                old = chosen.get(name)
                chosen[name] = v
                g = draw()
                ms = price(g)
                if ms < best - 1e-12:
                    best, best_g, improved = ms, g, True
                elif old is None:
                    chosen.pop(name)
                else:
                    chosen[name] = old
        if not improved:
            break
    return best, best_g


# -- evaluation ---------------------------------------------------------------------------------
class _Evaluator:
    """Scores a genome with the configured proxy (identical for candidates and baselines)."""

    def __init__(self, config: SearchConfig, table, data=None) -> None:
        from . import _data

        self.config = config
        self.table = table
        self.data = data if data is not None else _data.load_dataset(config.dataset, data_dir=config.data_dir,
                                                                     seed=config.seed)
        self.proxy_config = config.proxy_config()
        self.device = _train_device(config.train_device)

    @property
    def keeps_weights(self) -> bool:
        """Trained weights fit the real genome (for ``nas.export``) only when the proxy trained it at full width."""
        return self.config.proxy == "train" and self.proxy_config.width_multiplier == 1.0

    def score(self, genome, *, keep_weights: bool) -> tuple[float, dict[str, Any], dict | None]:
        if self.config.proxy == "zero-cost":
            from ._zerocost import zero_cost_score

            t0 = time.perf_counter()
            s = zero_cost_score(genome, self.data, method=self.config.zero_cost_method,
                                resolution=self.proxy_config.resolution, seed=self.config.seed)
            return float(s), {"seconds": round(time.perf_counter() - t0, 3)}, None
        from ._proxy import train_proxy

        r = train_proxy(genome, self.data, config=self.proxy_config, device=self.device, seed=self.config.seed,
                        keep_weights=keep_weights)
        info = {"seconds": round(r.seconds, 3), "epochs_run": r.epochs_run, "stopped_early": r.stopped_early,
                "stop_reason": r.stop_reason, "num_params": r.num_params, "loss": r.loss}
        return float(r.accuracy), info, r.state_dict


def _genome_of(trial) -> Any:
    from search_space import Genome

    return Genome.from_dict(trial.user_attrs["genome"])


def _completed_points(study) -> list[tuple[float, float]]:
    import optuna

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return [(t.values[0], t.values[1]) for t in done if t.values and t.user_attrs.get("feasible", True)]


def _save_weights(state_dict: dict, path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)


def _objective(config: SearchConfig, evaluator: _Evaluator, space, study, deadline: float | None = None,
               stop: _StopOnSigint | None = None):
    import optuna

    from latency_lut import predict_latency

    from ._claims import claim

    out = config.out_dir.resolve()
    source = _latency_source(config.device)

    def objective(trial: optuna.trial.Trial) -> tuple[float, float]:
        genome = space.suggest(trial)
        trial.set_user_attr("genome", genome.to_dict())
        trial.set_user_attr("worker_pid", os.getpid())
        lat = predict_latency(genome, config.device, config.resolution, db=evaluator.table)
        trial.set_user_attr("latency_ms", lat)
        trial.set_user_attr("latency_source", source)
        trial.set_user_attr("latency_resolution", config.resolution)
        if config.latency_max is not None:
            if "constraints:latency_ms" not in study._storage.get_trial_system_attrs(trial._trial_id):
                trial.set_constraint("latency_ms", lat - config.latency_max)
            trial.set_user_attr("feasible", lat <= config.latency_max)
            if lat > config.reject_factor * config.latency_max:
                reason = (f"rejected before training: {lat:.3f} ms > {config.reject_factor:g} x the "
                          f"{config.latency_max:g} ms budget")
                trial.set_user_attr("rejected", reason)
                raise optuna.TrialPruned(reason)
        # a genome already scored (or being scored by another worker) is never trained again, and no worker
        # starts a trial once the COMPLETE and in-flight trials reach the target
        c = claim(study, trial, genome.key(), target=config.trials, deadline=deadline,
                  cancelled=lambda: stop is not None and stop.requested)
        if not c.go:
            _skip(trial, c)
        try:
            with stop.armed() if stop is not None else contextlib.nullcontext():
                acc, info, state = evaluator.score(genome, keep_weights=evaluator.keeps_weights)
        except Exception as e:
            trial.set_user_attr("fail_reason", f"{type(e).__name__}: {e}")
            raise
        for k, v in info.items():
            if v is not None:
                trial.set_user_attr(k, v)
        if state is not None and not is_dominated((acc, lat), _completed_points(study)):
            path = (out / "weights" / f"trial_{trial.number}.safetensors").resolve()
            _save_weights(state, path)
            trial.set_user_attr("weights", str(path))
        return acc, lat

    return objective


def _skip(trial, c) -> None:
    """End ``trial`` without training: a duplicate of trial ``c.of``, or not needed (the target is met)."""
    import optuna

    if c.verdict == "duplicate":
        trial.set_user_attr("duplicate_of", c.of)
        raise optuna.TrialPruned(f"duplicate of trial {c.of}: not trained again")
    trial.set_user_attr("skipped", "the study reached its target while this trial waited")
    trial.study.stop()
    raise optuna.TrialPruned("target reached")


def _baseline_objective(config: SearchConfig, evaluator: _Evaluator, stop: _StopOnSigint | None = None):
    import optuna

    from latency_lut import predict_latency
    from search_space import InvalidGenomeError, zoo

    from ._claims import claim

    source = _latency_source(config.device)

    def objective(trial: optuna.trial.Trial) -> tuple[float, float]:
        name = trial.user_attrs.get("baseline")
        if name is None:  # no enqueued baseline was left for this worker (another worker took it)
            raise optuna.TrialPruned("no baseline waiting")
        trial.suggest_categorical("baseline", sorted(zoo))
        c = claim(trial.study, trial, f"baseline:{name}")  # each baseline is trained once, whoever queued it
        if not c.go:
            _skip(trial, c)
        genome = zoo[name]
        res = config.resolution
        try:
            genome.with_resolution(res)
        except InvalidGenomeError:
            res = genome.resolution  # e.g. MobileViT at 256 where 224 does not divide into its patches
        lat = predict_latency(genome, config.device, res, db=evaluator.table)
        trial.set_user_attr("genome", genome.to_dict())
        trial.set_user_attr("latency_ms", lat)
        trial.set_user_attr("latency_source", source)
        trial.set_user_attr("latency_resolution", res)
        trial.set_user_attr("worker_pid", os.getpid())
        with stop.armed() if stop is not None else contextlib.nullcontext():
            acc, info, _ = evaluator.score(genome, keep_weights=False)  # zoo weights are not needed for export
        for k, v in info.items():
            if v is not None:
                trial.set_user_attr(k, v)
        _logger.info("baseline %s: %s %.4f, latency %.3f ms at %dpx (%s)", name, config.metric, acc, lat, res, source)
        return acc, lat

    return objective


# -- studies ---------------------------------------------------------------------------------------
@dataclass
class _Studies:
    """The opened search study, its baseline companion (None without baselines) and what opening them found."""

    storage: Any
    study: Any
    baselines: Any
    created: bool
    uid: str


def _open_studies(config: SearchConfig, worker: int, *, fresh_seeds: bool = False) -> _Studies:
    """Create or load the search study and its baseline companion (enqueueing the baselines exactly once).

    The command that creates the study gets the sampler seed ``--seed`` (plus ``1000 * worker`` for local
    workers, also when ``fresh_seeds`` says their parent created it): a fresh search is reproducible. Every
    other command (a resume, a second machine, a second copy started at the same moment) gets a sampler
    stream of its own, so that no two workers propose the same sequence of genomes.
    """
    import optuna

    storage = open_storage(config.storage, heartbeat_interval=config.heartbeat_interval,
                           grace_period=config.grace_period)
    name = config.study_name
    directions = ["maximize", "minimize"]
    try:
        try:
            study = optuna.create_study(storage=storage, study_name=name, directions=directions)
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(study_name=name, storage=storage)
            created = False
    except Exception as e:  # noqa: BLE001 - database errors of any driver
        raise StudyStorageError(f"cannot create or load study {name!r} in {redact_url(config.storage_url)}: "
                                f"{_first_line(e, config.storage_url)}") from None
    uid = _bind_identity(config, study, created)
    seed = _sampler_seed(config, worker, reproducible=created or fresh_seeds)
    study.sampler = _make_sampler(config, seed)
    _logger.debug("worker %d: sampler %s, seed %d", worker, config.sampler, seed)
    baselines = _open_baselines(config, storage) if config.baselines else None
    return _Studies(storage=storage, study=study, baselines=baselines, created=created, uid=uid)


def _bind_identity(config: SearchConfig, study, created: bool) -> str:
    """Store the settings (and a unique id) with a new study; refuse to resume one with other settings."""
    import uuid
    import warnings

    import optuna

    ident = config.identity()
    if created:
        study.set_user_attr("repnas_uid", uuid.uuid4().hex)
        study.set_user_attr("repnas_config", ident)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([config.metric.replace(" ", "_"), f"latency_ms_{config.device}"])
    attrs = _wait_for(lambda: study.user_attrs if "repnas_config" in study.user_attrs else None)
    if attrs is None:  # a study of an older version, or its creator died before storing the settings
        study.set_user_attr("repnas_config", ident)
        attrs = study.user_attrs
    stored = _upgrade_identity(attrs["repnas_config"])
    if {k: stored.get(k) for k in ident} != ident:
        diff = {k: (stored.get(k), ident[k]) for k in ident if stored.get(k) != ident[k]}
        raise SearchConfigError(
            f"study {study.study_name!r} in {redact_url(config.storage_url)} was created with other settings "
            + ", ".join(f"{k}={a!r} (now {b!r})" for k, (a, b) in diff.items())
            + "; resume it with the same options or choose another --study")
    uid = attrs.get("repnas_uid")
    if not uid:  # every worker derives the same id for a study that has none
        import hashlib

        uid = hashlib.sha256(f"{study.study_name}:{study._study_id}".encode()).hexdigest()[:32]
        study.set_user_attr("repnas_uid", uid)
    return uid


def _upgrade_identity(stored: dict[str, Any]) -> dict[str, Any]:
    """A study identity stored by an earlier version (``epochs`` and ``proxy_resolution`` instead of the whole
    ``proxy_config``) in today's form: the proxy recipe those two options gave, everything else at its default."""
    if "proxy_config" in stored or "epochs" not in stored:
        return stored
    from ._proxy import ProxyConfig

    over = {"epochs": stored.get("epochs"), "resolution": stored.get("proxy_resolution")}
    pc = dataclasses.replace(ProxyConfig(), **{k: v for k, v in over.items() if v is not None})
    rest = {k: v for k, v in stored.items() if k not in ("epochs", "proxy_resolution")}
    return {**rest, "proxy_config": pc.to_dict()}


def _wait_for(get, timeout: float = 15.0, step: float = 0.2):
    """Poll ``get()`` until it returns something other than None (another worker finishing a first write)."""
    end = time.monotonic() + timeout
    while True:
        value = get()
        if value is not None or time.monotonic() >= end:
            return value
        time.sleep(step)


def _open_baselines(config: SearchConfig, storage):
    """The ``<study>:baselines`` companion; its creator enqueues every zoo model once, the others wait for that."""
    import optuna

    from search_space import zoo

    bname = config.study_name + BASELINE_SUFFIX
    try:
        bstudy = optuna.create_study(storage=storage, study_name=bname, directions=["maximize", "minimize"])
        for zname in sorted(zoo):  # this worker created it: it alone enqueues the baselines
            bstudy.enqueue_trial({"baseline": zname}, user_attrs={"baseline": zname})
        bstudy.set_user_attr("enqueued", sorted(zoo))
        return bstudy
    except optuna.exceptions.DuplicatedStudyError:
        bstudy = optuna.load_study(study_name=bname, storage=storage)
    if _wait_for(lambda: bstudy.user_attrs.get("enqueued")) is None:  # its creator died while enqueueing
        have = {t.user_attrs.get("baseline") for t in bstudy.get_trials(deepcopy=False)}
        for zname in sorted(set(zoo) - have):
            bstudy.enqueue_trial({"baseline": zname}, user_attrs={"baseline": zname})
        bstudy.set_user_attr("enqueued", sorted(zoo))
    return bstudy


def _count(study, states) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


class _Progress:
    """A tqdm bar over completed trials with the best trade-offs so far."""

    def __init__(self, config: SearchConfig, study, enabled: bool) -> None:
        import optuna
        from tqdm.auto import tqdm

        self.config = config
        self.complete = (optuna.trial.TrialState.COMPLETE,)
        done = min(_count(study, self.complete), config.trials)
        self.bar = tqdm(total=config.trials, initial=done, desc=f"search {config.device}", unit="trial",
                        disable=not enabled, dynamic_ncols=True)
        self._postfix(study)

    def _postfix(self, study) -> None:
        pts = [(t.values[0], t.values[1]) for t in study.get_trials(deepcopy=False, states=self.complete)
               if t.values and t.user_attrs.get("feasible", True)]
        if not pts:
            return
        front = sorted(p for p in pts if not is_dominated(p, pts))
        best = max(front)
        fastest = min(front, key=lambda p: p[1])
        self.bar.set_postfix_str(f"front {len(front)} | best {best[0]:.3f} @ {best[1]:.2f} ms | fastest "
                                 f"{fastest[1]:.2f} ms @ {fastest[0]:.3f}")

    def __call__(self, study, trial) -> None:
        done = min(_count(study, self.complete), self.config.trials)
        self.bar.update(done - self.bar.n)
        self._postfix(study)

    def close(self) -> None:
        self.bar.close()


def run_worker(config: SearchConfig, *, worker: int = 0, progress: bool = True, data=None,
               fresh_seeds: bool = False) -> int:
    """One worker: evaluate waiting baselines, then search trials until the study holds ``config.trials``.

    ``fresh_seeds``: the parent process created the study for this run (see :func:`_open_studies`).

    Returns:
        The number of trials this worker ran.

    Raises:
        KeyboardInterrupt: on SIGINT, at once or, if the signal landed where Python could not raise it, after
            the trial in flight (the study is stopped either way).
    """
    import optuna
    import torch

    t_start = time.monotonic()
    torch.set_num_threads(config.threads or _default_threads(config.workers))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _, table = _check_device(config)
    opened = _open_studies(config, worker, fresh_seeds=fresh_seeds)
    claim_run_folder(config.out_dir, config.study_name, opened.uid)
    evaluator = _Evaluator(config, table, data)
    study = opened.study
    if "repnas_data" not in study.user_attrs:  # what an export needs to describe the weights (nas.export)
        study.set_user_attr("repnas_data", {**evaluator.data.describe(),
                                            "proxy_resolution": evaluator.proxy_config.resolution,
                                            "proxy": _describe_proxy(config)})
    deadline = None if config.timeout is None else t_start + config.timeout
    with _StopOnSigint() as stop:
        ran = _run_baselines(config, evaluator, opened.baselines, deadline, stop) if opened.baselines else 0
        if stop.requested or (deadline is not None and time.monotonic() >= deadline):
            return ran
        return ran + _run_search_trials(config, evaluator, study, deadline, stop, progress)


def _catch() -> tuple[type[BaseException], ...]:
    """Errors that fail one candidate (reason recorded in the trial) while the search goes on: NaN, divergence,
    an invalid genome, a runtime error such as out-of-memory."""
    from search_space import InvalidGenomeError

    from ._errors import ProxyTrainingError

    return ProxyTrainingError, InvalidGenomeError, RuntimeError


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(1.0, deadline - time.monotonic())


def _run_baselines(config: SearchConfig, evaluator: _Evaluator, bstudy, deadline: float | None, stop) -> int:
    import optuna

    objective = _baseline_objective(config, evaluator, stop)
    waiting = (optuna.trial.TrialState.WAITING,)
    ran = 0
    while not stop.requested and (deadline is None or time.monotonic() < deadline):
        _fail_stale(bstudy)  # a baseline whose worker was killed is failed and re-queued
        if not _count(bstudy, waiting):
            break
        bstudy.optimize(objective, n_trials=1, catch=_catch(), timeout=_remaining(deadline), callbacks=[stop])
        ran += 1
    stop.reraise()
    return ran


def _run_search_trials(config: SearchConfig, evaluator: _Evaluator, study, deadline: float | None, stop,
                       progress: bool) -> int:
    import optuna

    complete = (optuna.trial.TrialState.COMPLETE,)
    done = _count(study, complete)
    if done >= config.trials:
        _logger.info("study %s already has %d complete trials (target %d): nothing to search", study.study_name,
                     done, config.trials)
        return 0
    bar = _Progress(config, study, progress)
    try:
        study.optimize(
            _objective(config, evaluator, _space(config), study, deadline=deadline, stop=stop),
            timeout=_remaining(deadline),
            catch=_catch(),
            callbacks=[optuna.study.MaxTrialsCallback(config.trials, states=complete), _RunawayGuard(config.trials),
                       bar, stop],
            gc_after_trial=True,
        )
    finally:
        bar.close()
    stop.reraise()
    return _count(study, complete) - done


class _StopOnSigint:
    """SIGINT stops the worker within the trial in flight.

    During a candidate's training (:meth:`armed`) the first SIGINT raises ``KeyboardInterrupt`` at once (the
    trial is lost); anywhere else, and for every later SIGINT, it only sets a flag, which the Optuna callback
    turns into ``study.stop()`` and :meth:`reraise` into ``KeyboardInterrupt`` once Optuna has finished its
    bookkeeping (an interrupt inside Optuna's ``tell`` would leave a RUNNING trial and a traceback). Python also
    drops a ``KeyboardInterrupt`` raised inside a finalizer ("Exception ignored in ..."); the flag covers that.
    Only the main thread can set signal handlers; elsewhere this does nothing.
    """

    def __init__(self) -> None:
        self.requested = False
        self._installed = False
        self._previous = None
        self._armed = False
        self._raised = False

    def __enter__(self) -> _StopOnSigint:
        import signal
        import sys
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._hook, sys.unraisablehook = sys.unraisablehook, self._unraisable
            self._installed = True
        return self

    def _unraisable(self, info) -> None:  # a Ctrl-C that landed in a finalizer: handled by the flag, not printed
        if not (self.requested and isinstance(info.exc_value, KeyboardInterrupt)):
            self._hook(info)

    def __exit__(self, *exc) -> None:
        import signal
        import sys

        if self._installed:
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.SIG_DFL)
            sys.unraisablehook = self._hook
            self._installed = False

    def _handle(self, signum, frame) -> None:
        self.requested = True
        if self._armed and not self._raised:  # only inside training: never in the middle of Optuna's bookkeeping
            self._raised = True
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def armed(self):
        """Within this block (a candidate's training) SIGINT raises at once; elsewhere it only sets the flag."""
        if self.requested:
            raise KeyboardInterrupt
        self._armed = True
        try:
            yield
        finally:
            self._armed = False

    def __call__(self, study, trial) -> None:  # an Optuna callback
        if self.requested:
            study.stop()

    def reraise(self) -> None:
        if self.requested:
            raise KeyboardInterrupt


def _default_threads(workers: int) -> int:
    """torch threads per worker: the cores minus one (for the storage, LUT and OS), shared by the workers.

    Oversubscribed cores make torch's thread pool collapse (5-10x slower training measured on 2 cores), so a
    2-core machine trains on one thread.
    """
    return max(1, ((os.cpu_count() or 1) - 1) // max(1, workers))


def _fail_stale(study) -> None:
    from ._claims import fail_stale

    fail_stale(study)


class _RunawayGuard:
    """Stops a study whose trials keep failing or being rejected (MaxTrialsCallback counts only COMPLETE ones)."""

    def __init__(self, trials: int) -> None:
        self.limit = max(20, 5 * trials)
        self.seen = 0

    def __call__(self, study, trial) -> None:
        import optuna

        skipped = "duplicate_of" in trial.user_attrs or "skipped" in trial.user_attrs  # nothing was trained
        if trial.state != optuna.trial.TrialState.COMPLETE and not skipped:
            self.seen += 1
            if self.seen >= self.limit:
                _logger.error("stopping: %d trials of this worker failed or were rejected (see report.md for the "
                              "reasons); loosen --latency-max or check the proxy settings", self.seen)
                study.stop()


def _worker_entry(config: SearchConfig, worker: int, fresh_seeds: bool) -> None:  # pragma: no cover - a child
    import sys

    from search_space import RepNASError

    logging.basicConfig(level=logging.INFO, format=f"[worker {worker}] %(message)s")
    _quiet_interrupted_trials()
    try:
        run_worker(config, worker=worker, progress=worker == 0, fresh_seeds=fresh_seeds)
    except (RepNASError, ValueError) as e:
        print(f"error: [worker {worker}] {scrub(e, [config.storage_url, config.lut_db])}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def candidate_from_trial(t, *, baseline: bool = False) -> Candidate:
    """A complete trial (of the search study or its baselines) as a report :class:`Candidate`."""
    ua = t.user_attrs
    return Candidate(
        number=t.number, accuracy=float(t.values[0]), latency_ms=float(t.values[1]), genome=ua.get("genome", {}),
        latency_source=ua.get("latency_source", "?"), latency_resolution=int(ua.get("latency_resolution", 0)),
        name=ua.get("baseline", "") if baseline else "", baseline=baseline, feasible=bool(ua.get("feasible", True)),
        params=ua.get("num_params"), stopped_early=bool(ua.get("stopped_early", False)), weights=ua.get("weights"),
        extra={k: ua[k] for k in ("duplicate_of", "stop_reason", "seconds") if ua.get(k) is not None},
    )


def collect_candidates(config: SearchConfig, study=None) -> tuple[list[Candidate], list[Candidate], dict[str, Any]]:
    """Read the study (and its baselines) back from storage: search candidates, baselines, counts."""
    import optuna

    if study is None:
        study = load_existing_study(open_storage(config.storage, heartbeat_interval=None), config.study_name)
    storage = study._storage
    S = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    cand = candidate_from_trial
    cands = [cand(t) for t in trials if t.state == S.COMPLETE and t.values]
    baselines: list[Candidate] = []
    if config.baselines:
        try:
            bstudy = optuna.load_study(study_name=config.study_name + BASELINE_SUFFIX, storage=storage)
        except KeyError:
            bstudy = None
        seen: set[str] = set()
        for t in bstudy.get_trials(deepcopy=False, states=(S.COMPLETE,)) if bstudy is not None else ():
            if t.values and t.user_attrs.get("baseline") not in seen:
                seen.add(t.user_attrs["baseline"])
                baselines.append(cand(t, baseline=True))
    counts = {
        "n_complete": sum(t.state == S.COMPLETE for t in trials),
        "n_rejected": sum(t.state == S.PRUNED and "rejected" in t.user_attrs for t in trials),
        "n_duplicates": sum(t.state == S.PRUNED and "duplicate_of" in t.user_attrs for t in trials),
        "n_failed": sum(t.state == S.FAIL for t in trials),
        "n_running": sum(t.state == S.RUNNING for t in trials),
        "failures": [(t.number, t.user_attrs.get("fail_reason") or t.system_attrs.get("fail_reason", "?"))
                     for t in trials if t.state == S.FAIL],
        "unfinished": sorted(t.number for t in trials if t.state in (S.RUNNING, S.WAITING)),
    }
    return cands, sorted(baselines, key=lambda b: b.latency_ms), counts


def write_report(config: SearchConfig, *, proxy_description: str = "", dataset_source: str = "") -> SearchResult:
    """Write the run folder from what the storage holds now; returns the front and baselines."""
    study = load_existing_study(open_storage(config.storage, heartbeat_interval=None), config.study_name)
    claim_run_folder(config.out_dir, config.study_name, study.user_attrs.get("repnas_uid"))
    cands, baselines, counts = collect_candidates(config, study)
    unfinished = set(counts.pop("unfinished"))
    label = latency_label(config.device)
    meta = {
        "study": config.study_name, "storage": redact_url(config.storage_url), "device": config.device,
        "dataset": config.dataset, "dataset_source": dataset_source, "resolution": config.resolution,
        "sampler": config.sampler, "seed": config.seed, "proxy": config.proxy,
        "proxy_description": proxy_description, "latency_max": config.latency_max, **counts,
    }
    files = write_run_folder(config.out_dir, candidates=cands, baselines=baselines, meta=meta, metric=config.metric,
                             latency_label=label)
    front = pareto_front(cands)
    _prune_weights(config, front, unfinished)
    return SearchResult(front=front, baselines=baselines, candidates=cands, files=files, latency_label=label)


def _prune_weights(config: SearchConfig, front: Sequence[Candidate], unfinished: set[int]) -> None:
    """Delete this run folder's proxy weights of finished trials that ended off the front."""
    keep = {Path(c.weights).name for c in front if c.weights} | {f"trial_{n}.safetensors" for n in unfinished}
    wdir = config.out_dir / "weights"
    if not wdir.is_dir():
        return
    for p in wdir.glob("trial_*.safetensors"):
        if p.name not in keep:
            p.unlink(missing_ok=True)


def check_config(config: SearchConfig):
    """Every check that needs no training, before anything is stored.

    Device and LUT, proxy settings, the search space at ``--resolution``, the run folder (it must be new, empty
    or this study's own), workers vs SQLite, dataset presence, budget reachability, and last the storage (whose
    SQLite file is created only once everything else passed).

    Returns:
        The loaded dataset.
    """
    _, table = _check_device(config)
    config.proxy_config()  # bad proxy settings (--epochs 100000, --proxy-resolution 4096) fail here
    from search_space import InvalidGenomeError

    try:
        _space(config).sample(0)  # the space at --resolution (e.g. --resolution 32000 exceeds every genome's)
    except InvalidGenomeError as e:
        raise SearchConfigError(f"--resolution {config.resolution}: {e}") from None
    check_run_folder(config.out_dir, config.study_name)
    if config.workers > 1 and is_sqlite(config.storage_url):
        raise SearchConfigError(
            f"--workers {config.workers} needs a database server: SQLite ({config.storage_url}) cannot serve several "
            "workers safely. Pass --storage postgresql://USER:PASS@HOST:5432/DB (see README: distributed search), "
            "or run with --workers 1")
    from ._data import load_dataset

    data = load_dataset(config.dataset, data_dir=config.data_dir, seed=config.seed)
    if config.latency_max is not None:
        ms, _ = min_reachable_latency(config, table)
        if config.latency_max < ms:
            raise SearchConfigError(
                f"--latency-max {config.latency_max:g} ms is below anything the search space can reach on "
                f"{config.device}: its cheapest genome costs {ms:.3f} ms ({latency_label(config.device)})")
        _logger.info("cheapest genome of the space on %s: %.3f ms (budget %.3f ms)", config.device, ms,
                     config.latency_max)
    open_storage(config.storage, heartbeat_interval=None)  # malformed / unreachable URLs fail here
    return data


def run_search(config: SearchConfig, *, progress: bool = True) -> SearchResult:
    """Check the configuration, run ``config.workers`` workers (in this process when 1) and write the report.

    Ctrl-C (SIGINT) stops every worker (the trial in flight is lost, completed ones are kept), writes the report
    from what completed, then raises ``KeyboardInterrupt``.
    """
    data = check_config(config)
    _quiet_interrupted_trials()
    try:
        if config.workers == 1:
            run_worker(config, worker=0, progress=progress, data=data)
        else:
            _run_local_workers(config)
    except KeyboardInterrupt:
        _logger.info("writing the report from the trials completed so far")
        _report_after_interrupt(config, data)
        raise
    ev_desc = _describe_proxy(config)
    return write_report(config, proxy_description=ev_desc, dataset_source=str(getattr(data, "source", "")))


def _report_after_interrupt(config: SearchConfig, data) -> None:
    try:
        write_report(config, proxy_description=_describe_proxy(config),
                     dataset_source=str(getattr(data, "source", "")))
    except (StudyStorageError, SearchConfigError, OSError) as e:  # e.g. interrupted before the study existed
        _logger.warning("no report written: %s", e)


def _run_local_workers(config: SearchConfig) -> None:
    """``config.workers`` processes on this machine; SIGINT reaches them all and each stops within its trial."""
    import multiprocessing as mp
    import signal

    opened = _open_studies(config, 0)  # settings check and baseline queue, once, before any worker starts
    claim_run_folder(config.out_dir, config.study_name, opened.uid)
    ctx = mp.get_context("spawn")
    threads = config.threads or _default_threads(config.workers)
    cfg = dataclasses.replace(config, threads=threads)
    procs = [ctx.Process(target=_worker_entry, args=(cfg, i, opened.created), name=f"nas-worker-{i}")
             for i in range(config.workers)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:  # a terminal's Ctrl-C reaches them already; a SIGINT sent to this process alone does not
            if p.is_alive():
                os.kill(p.pid, signal.SIGINT)
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.terminate()
                p.join(10)
        raise
    bad = [p.exitcode for p in procs if p.exitcode]
    if len(bad) == len(procs):
        from ._errors import NASError

        raise NASError(f"all {len(procs)} workers failed (exit codes {bad}); see their messages above")
    if bad:
        _logger.warning("%d of %d workers exited with an error (codes %s); the report covers what they stored",
                        len(bad), len(procs), bad)


class _DropInterruptedTrialLogs(logging.Filter):
    """Optuna logs a trial ended by Ctrl-C as a failure with its traceback; the CLI says "interrupted" instead."""

    def __init__(self) -> None:
        super().__init__()
        self.trials: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        import re

        m = re.match(r"Trial (\d+) failed", record.getMessage())
        if m and record.exc_info and issubclass(record.exc_info[0], KeyboardInterrupt):
            self.trials.add(m.group(1))
            return False
        return not (m and m.group(1) in self.trials)


def _quiet_interrupted_trials() -> None:
    log = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, _DropInterruptedTrialLogs) for f in log.filters):
        log.addFilter(_DropInterruptedTrialLogs())


def _describe_proxy(config: SearchConfig) -> str:
    pc = config.proxy_config()
    if config.proxy == "zero-cost":
        return f"the {config.zero_cost_method} zero-cost score at {pc.resolution}px (no training)"
    shown = ", ".join(f"{f.name}={getattr(pc, f.name)}" for f in dataclasses.fields(pc)
                      if getattr(pc, f.name) is not None)
    return f"short proxy training ({shown}), seed {config.seed}, identical for every candidate and baseline"


def front_dominates_baselines(result: SearchResult) -> dict[str, bool]:
    """For each baseline: does some front member have higher proxy accuracy at equal or lower latency?"""
    from ._report import _beats

    return {b.name: any(_beats(c, b) for c in result.front) for b in result.baselines}

