"""The search's settings: :class:`SearchConfig`, its fidelity rungs and its result type."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search_space import is_int

from ._errors import SearchConfigError
from ._report import RUNS_DIR, Candidate, run_folder_name
from ._storage import resolve_storage_url

__all__ = ["ACCURACY_SCORE", "BASELINE_SUFFIX", "DEFAULT_PROXY_SCORE", "MAX_STUDY_NAME", "PROXIES", "PROXY_SCORES",
           "RUNGS_SUFFIX", "Rung", "SAMPLERS", "Scoring", "SearchConfig", "SearchResult", "ZERO_COST_METHODS"]

SAMPLERS = ("nsga2", "tpe", "random")
PROXIES = ("train", "zero-cost")
ZERO_COST_METHODS = ("naswot", "synflow")
ACCURACY_SCORE = "accuracy"
"""The ``--proxy-score`` that ranks by the proxy accuracy itself (what every study before the option ranked by)."""
PROXY_SCORES = (ACCURACY_SCORE, "val-loss")
"""What ranks a trained candidate (the first objective, higher is better): its validation accuracy, or minus its
validation cross-entropy (``val-loss``). Both are recorded either way."""
DEFAULT_PROXY_SCORE = ACCURACY_SCORE
"""The default score of a trained proxy. The fidelity benchmark (``scripts/bench_fidelity.py``, both reference
seeds on all 24 panel genomes) picks the search's top CPU rung (32 px, 2,000 images) scored by accuracy as the
cheapest variant within noise of the best; the validation loss there ranks no better (tau 0.46 against 0.47 with
one seed, 0.43 against 0.44 with two)."""
ACCURACY_METRIC = "proxy accuracy"
"""The first objective's name when it is the accuracy (:attr:`Scoring.metric`)."""
BASELINE_SUFFIX = ":baselines"
RUNGS_SUFFIX = ":rungs"
MAX_STUDY_NAME = 512
"""Optuna's ``studies.study_name`` column holds at most this many characters (PostgreSQL enforces it)."""
MIN_RUNG_IMAGES = 600
"""Default rungs stop dividing the top rung's images by ``eta`` below this (about ten optimizer steps at batch 64:
fewer rank nothing)."""

# Defaults that scale with the training device: on a GPU the same command sees more candidates and trains the
# top rung on more images (its rungs are the top rung's images divided by eta, down to MIN_RUNG_IMAGES).
_DEFAULTS = {"cpu": {"trials": 31, "top_images": 2000}, "cuda": {"trials": 200, "top_images": 36000}}


@dataclass(frozen=True)
class Scoring:
    """What a study's first objective is (the one home of its name and of the accuracy read beside it).

    Attributes:
        proxy: ``train`` or ``zero-cost``.
        proxy_score: For a trained proxy, ``accuracy`` or ``val-loss`` (:data:`PROXY_SCORES`); None reads as
            ``accuracy`` (studies of versions before the option ranked by it).
        zero_cost_method: The zero-cost score's method.
    """

    proxy: str = "train"
    proxy_score: str | None = ACCURACY_SCORE
    zero_cost_method: str | None = None

    @classmethod
    def of_study(cls, study) -> Scoring:
        """The scoring stored with ``study`` (its identity, in today's form)."""
        from ._record import StudyKeys
        from ._studies import upgrade_identity

        stored = upgrade_identity(study.user_attrs.get(StudyKeys.CONFIG) or {})
        return cls(proxy=stored.get("proxy") or "train", proxy_score=stored.get("proxy_score"),
                   zero_cost_method=stored.get("zero_cost_method"))

    @property
    def trained(self) -> bool:
        return self.proxy == "train"

    @property
    def score(self) -> str | None:
        """The score name a trained proxy ranks by, None read as :data:`ACCURACY_SCORE`; None for zero-cost."""
        return (self.proxy_score or ACCURACY_SCORE) if self.trained else None

    @property
    def is_accuracy(self) -> bool:
        """Whether the first objective is the proxy accuracy itself."""
        return self.trained and self.proxy_score in (None, ACCURACY_SCORE)

    @property
    def accuracy_column(self) -> bool:
        """Whether tables show the accuracy beside the score (a trained proxy ranked by a loss)."""
        return self.trained and not self.is_accuracy

    @property
    def metric(self) -> str:
        """The first objective's name (the report, the dashboard and ``nas.export`` show it)."""
        if not self.trained:
            return f"{self.zero_cost_method} score (zero-cost)"
        return ACCURACY_METRIC if self.is_accuracy else "minus proxy validation loss"

    def accuracy(self, score: float, rec) -> tuple[float | None, float | None]:
        """(mean accuracy, its seed SD) of a complete trial with first value ``score`` and record ``rec``
        (None for a zero-cost score; a trial ranked by accuracy of a version that did not record each seed's
        accuracy reads the same)."""
        if self.is_accuracy:
            return score, rec.accuracy_sd
        if not self.trained or rec.mean_accuracy is None:
            return None, None
        return rec.mean_accuracy, rec.accuracy_sd

    def score_sd(self, rec) -> float | None:
        """The seed-to-seed spread of the first value: ``accuracy_sd`` or ``loss_sd`` (None for zero-cost)."""
        if not self.trained:
            return None
        return rec.accuracy_sd if self.is_accuracy else rec.loss_sd


@dataclass(frozen=True)
class Rung:
    """One fidelity of the successive-halving ladder.

    Attributes:
        index: 0 for the cheapest rung.
        images: Class-stratified training images (one pass per epoch).
        epochs: Passes over them.
        seeds: Proxy-training seeds; the top rung trains each promoted candidate once per seed and scores it with
            the mean.
        top: Whether this is the last rung.
    """

    index: int
    images: int
    epochs: int
    seeds: tuple[int, ...]
    top: bool

    @property
    def fidelity(self) -> int:
        """Training images seen."""
        return self.images * self.epochs


@dataclass(frozen=True)
class SearchConfig:
    """Everything one search run needs; the CLI maps its options one to one onto these fields.

    Attributes:
        device: Latency device (``iphone12``, ``ort-cpu``, ``torch-cpu``, ``torch-cuda`` or an imported remote one).
        trials: Candidates the study scores at the cheapest rung (None: 31 on CPU, 200 with CUDA; a rerun only
            adds what is missing).
        timeout: Wall-clock limit of this run in seconds (None: none); checked between evaluations.
        latency_max: Hard latency budget in ms (``Trial.set_constraint``); None: unconstrained.
        reject_factor: Candidates predicted above ``reject_factor * latency_max`` are rejected before training.
        sampler: ``nsga2``, ``tpe`` or ``random``.
        storage: Optuna storage URL or SQLite file (default ``./repnas-search.db``).
        study: Study name (default ``repnas-<device>-<dataset>``).
        dataset, data_dir: Proxy dataset and where to look for it first.
        epochs: Proxy training epochs at every rung (None: the proxy's default).
        resolution: Deployment resolution at which latency is priced.
        proxy_resolution: Resolution of proxy training (None: the proxy's default).
        proxy_width: Proxy-only width multiplier of every stage (None: the proxy's default; latency is always
            priced on the real genome, and weights trained narrower are not kept for export).
        proxy_min_map: Smallest feature map every stage must see during proxy training (None: the proxy's
            default; 2 = 64 px for the stride-32 networks of the space).
        proxy_images: Training images of the top rung (None: 2,000 on CPU, 36,000 with CUDA); the lower rungs
            divide it by ``eta`` down to 600 images. Ignored when ``rungs`` is given.
        rungs: Training images of each rung, cheapest first, strictly growing (None: from ``proxy_images``).
        eta: Successive-halving reduction factor: the top 1/eta of a rung (by non-dominated rank, then crowding
            distance) is promoted to the next.
        top_seeds: Seeds of the top rung (at least 2: its accuracy is a mean with a standard deviation).
        train_device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        seed: Seed of the sampler and of proxy training (the same for every candidate: an identical proxy); the
            top rung also trains with ``seed + 1``, ...
        out: Run folder (default ``runs/<study>``).
        proxy: ``train`` (short training) or ``zero-cost`` (a training-free score, seconds per candidate, one
            rung).
        proxy_score: What ranks a trained candidate (:data:`PROXY_SCORES`): ``accuracy`` or ``val-loss`` (the
            objective is then minus the validation loss; the accuracy is recorded and reported beside it). None:
            :data:`DEFAULT_PROXY_SCORE` for a trained proxy (a zero-cost proxy takes no score option).
        zero_cost_method: Score used by ``proxy="zero-cost"``.
        lut_db: LUT database (default ``./repnas-lut.db``).
        workers: Local worker processes (more than one needs a server database, not SQLite).
        baselines: Evaluate the seed zoo models as baselines (through the same rungs).
        population_size: NSGA-II population (None: about a third of ``trials``, between 8 and 50).
        heartbeat_interval, grace_period: Optuna heartbeat settings (crash recovery of killed workers).
        threads: torch threads per worker (None: cores / workers).
    """

    device: str = "iphone12"
    trials: int | None = None
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
    rungs: tuple[int, ...] | None = None
    eta: int = 3
    top_seeds: int = 2
    train_device: str = "auto"
    seed: int = 0
    out: str | None = None
    proxy: str = "train"
    proxy_score: str | None = None
    zero_cost_method: str = "naswot"
    lut_db: str | None = None
    workers: int = 1
    baselines: bool = True
    population_size: int | None = None
    heartbeat_interval: int = 10
    grace_period: int | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise SearchConfigError(msg)

        need(self.trials is None or (is_int(self.trials) and self.trials >= 1),
             f"--trials must be a positive integer, got {self.trials!r}")
        need(self.timeout is None or self.timeout > 0, f"--timeout must be positive seconds, got {self.timeout!r}")
        need(self.latency_max is None or (math.isfinite(self.latency_max) and self.latency_max > 0),
             f"--latency-max must be a positive number of milliseconds, got {self.latency_max!r}")
        need(self.reject_factor >= 1, f"reject factor must be >= 1, got {self.reject_factor}")
        need(self.sampler in SAMPLERS, f"unknown --sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}")
        need(self.proxy in PROXIES, f"unknown --proxy {self.proxy!r}; choose one of {', '.join(PROXIES)}")
        need(self.proxy_score is None or self.proxy_score in PROXY_SCORES,
             f"unknown --proxy-score {self.proxy_score!r}; choose one of {', '.join(PROXY_SCORES)}")
        need(self.proxy == "train" or self.proxy_score is None,
             f"--proxy-score {self.proxy_score} needs --proxy train (a zero-cost score is its own score)")
        need(self.zero_cost_method in ZERO_COST_METHODS,
             f"unknown zero-cost method {self.zero_cost_method!r}; choose one of {', '.join(ZERO_COST_METHODS)}")
        need(self.epochs is None or (is_int(self.epochs) and self.epochs >= 1),
             f"--epochs must be a positive integer, got {self.epochs!r}")
        need(is_int(self.resolution) and self.resolution >= 32 and self.resolution % 32 == 0,
             f"--resolution must be a multiple of 32 (>= 32), got {self.resolution!r}")
        need(self.proxy_resolution is None or (self.proxy_resolution >= 16 and self.proxy_resolution % 16 == 0),
             f"--proxy-resolution must be a multiple of 16 (>= 16), got {self.proxy_resolution!r}")
        need(is_int(self.eta) and self.eta >= 2, f"--eta must be an integer >= 2, got {self.eta!r}")
        need(is_int(self.top_seeds) and self.top_seeds >= 2,
             f"--top-seeds must be an integer >= 2 (the top rung reports a mean and its spread), got "
             f"{self.top_seeds!r}")
        self._check_rungs(need)
        need(self.train_device in ("auto", "cpu", "cuda") or self.train_device.startswith("cuda:"),
             f"--train-device must be auto, cpu or cuda[:N], got {self.train_device!r}")
        need(is_int(self.workers) and self.workers >= 1, f"--workers must be >= 1, got {self.workers!r}")
        need(self.population_size is None or self.population_size >= 2,
             f"population size must be >= 2, got {self.population_size!r}")
        need(self.heartbeat_interval >= 1, f"heartbeat interval must be >= 1 s, got {self.heartbeat_interval}")
        need(self.grace_period is None or self.grace_period > self.heartbeat_interval,
             f"grace period must exceed the heartbeat interval ({self.heartbeat_interval} s), got {self.grace_period} "
             "(live trials would be failed as stale and trained again)")
        need(self.threads is None or (is_int(self.threads) and self.threads >= 1),
             f"--threads must be >= 1, got {self.threads!r}")
        if self.study is not None:
            need(bool(self.study.strip()) and not self.study.endswith((BASELINE_SUFFIX, RUNGS_SUFFIX)),
                 f"--study must be a non-empty name not ending in {BASELINE_SUFFIX!r} or {RUNGS_SUFFIX!r}, got "
                 f"{self.study!r}")
        longest = max(len(BASELINE_SUFFIX), len(RUNGS_SUFFIX))
        need(len(self.study_name) + longest <= MAX_STUDY_NAME,
             f"--study must be at most {MAX_STUDY_NAME - longest} characters (Optuna stores at most "
             f"{MAX_STUDY_NAME}, and the companion studies add {BASELINE_SUFFIX!r}), got {len(self.study_name)}")

    def _check_rungs(self, need) -> None:
        batch = self._base_proxy().batch_size
        need(self.proxy_images is None or (is_int(self.proxy_images) and self.proxy_images >= batch),
             f"--proxy-images must be an integer of at least one batch ({batch} images), got {self.proxy_images!r}")
        if self.rungs is None:
            return
        r = tuple(self.rungs)
        need(len(r) >= 1 and all(is_int(x) for x in r), f"--rungs must be integers (training images), got {r!r}")
        need(all(b > a for a, b in zip(r, r[1:])),
             f"--rungs must grow strictly from rung to rung (training images, cheapest first), got "
             f"{','.join(map(str, r))}")
        need(r[0] >= batch, f"--rungs: the cheapest rung must train at least one batch ({batch} images), got {r[0]}")

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

    def for_train_device(self, train_device: str, *, train_images: int | None = None) -> SearchConfig:
        """This config with the device-dependent defaults (``trials``, ``rungs``) filled in for ``train_device``
        (``cpu`` or ``cuda[:N]``, as resolved from ``auto``); a default top rung is capped at ``train_images``
        (the dataset's training images), an explicit one is not."""
        d = _DEFAULTS["cuda" if train_device.startswith("cuda") else "cpu"]
        rungs = self.rungs
        if rungs is None and self.proxy == "train":
            top = self.proxy_images or min(d["top_images"], train_images or d["top_images"])
            rungs = (top,)
            while rungs[0] / self.eta >= MIN_RUNG_IMAGES:
                rungs = (round(rungs[0] / self.eta),) + rungs
        return dataclasses.replace(self, trials=self.trials or d["trials"], rungs=rungs)

    @property
    def resolved(self) -> bool:
        return self.trials is not None and (self.proxy != "train" or self.rungs is not None)

    def ladder(self) -> list[Rung]:
        """The fidelity rungs, cheapest first (one rung for a zero-cost score)."""
        if not self.resolved:
            raise SearchConfigError("internal: the rungs are known only once the training device is (for_train_device)")
        seeds = tuple(self.seed + i for i in range(self.top_seeds))
        if self.proxy != "train":
            return [Rung(index=0, images=0, epochs=0, seeds=(self.seed,), top=True)]
        epochs = self._base_proxy().epochs
        n = len(self.rungs)
        return [Rung(index=i, images=im, epochs=epochs, seeds=seeds if i == n - 1 else (self.seed,), top=i == n - 1)
                for i, im in enumerate(self.rungs)]

    def _base_proxy(self):
        from ._proxy import ProxyConfig

        over = {"epochs": self.epochs, "resolution": self.proxy_resolution, "width_multiplier": self.proxy_width,
                "min_stage_map": self.proxy_min_map}
        return dataclasses.replace(ProxyConfig(), **{k: v for k, v in over.items() if v is not None})

    def proxy_config(self, rung: Rung | None = None):
        """The :class:`~nas.ProxyConfig` of ``rung`` (default: the top rung), the same for candidates and
        baselines."""
        base = self._base_proxy()
        if rung is None:
            rung = self.ladder()[-1]
        return dataclasses.replace(base, train_size=rung.images) if self.proxy == "train" else base

    @property
    def score(self) -> str | None:
        """The score a trained proxy ranks by (``proxy_score`` or the default); None for a zero-cost proxy."""
        return (self.proxy_score or DEFAULT_PROXY_SCORE) if self.proxy == "train" else None

    @property
    def population(self) -> int:
        """The NSGA-II population: ``population_size``, or about a third of ``trials`` between 8 and 50."""
        return self.population_size or min(50, max(8, self.trials // 3))

    @property
    def scoring(self) -> Scoring:
        return Scoring(self.proxy, self.score, self.zero_cost_method)

    @property
    def metric(self) -> str:
        return self.scoring.metric

    def scored_as_stored(self, study) -> SearchConfig:
        """This config with the scoring stored with ``study`` (:meth:`Scoring.of_study`), so that reading a
        study back (``--report-only``, ``nas.export``) names and derives its objective as the search did,
        whatever options the reader passed."""
        s = Scoring.of_study(study)
        return dataclasses.replace(self, proxy=s.proxy, proxy_score=s.score,
                                   zero_cost_method=s.zero_cost_method or self.zero_cost_method)

    def identity(self) -> dict[str, Any]:
        """Settings a study is bound to: resuming it with different ones is refused."""
        return {"device": self.device, "dataset": self.dataset, "proxy": self.proxy, "resolution": self.resolution,
                "zero_cost_method": self.zero_cost_method if self.proxy == "zero-cost" else None,
                "proxy_score": self.score,
                "proxy_config": self.proxy_config().to_dict(), "latency_max": self.latency_max,
                "rungs": [r.images for r in self.ladder()], "eta": self.eta if len(self.ladder()) > 1 else None,
                "top_seeds": len(self.ladder()[-1].seeds)}


@dataclass(frozen=True)
class SearchResult:
    """What a search (or ``--report-only``) found: the front at its top rung, the baselines, every candidate at
    its highest rung, the files written and the latency label."""

    front: list[Candidate]
    baselines: list[Candidate]
    candidates: list[Candidate]
    files: dict[str, Path]
    latency_label: str
    verdicts: dict[str, Any] = field(default_factory=dict)
    """Baseline name -> :class:`nas._report.Verdict` (dominated, tie within noise, not dominated, n/a)."""
    scoring: Scoring = field(default_factory=Scoring)
    """The first objective, as the study was searched."""
