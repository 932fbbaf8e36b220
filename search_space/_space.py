"""``SearchSpace``: the Optuna-facing space of genomes.

``suggest(trial)`` and ``sample(rng)`` walk the same decision list, so a genome drawn by either is
valid by construction. Optuna parameter names are ``stem``, ``head`` and ``s{i}_{gene}``; genes a
mixer does not read (kernel size for identity/attention, patch size outside MobileViT) are not
suggested at all, so samplers never learn from noise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._errors import InvalidGenomeError
from ._genome import (
    CONV_MIXERS,
    DOWNSAMPLES,
    FFN_KERNEL_SIZES,
    HEADS,
    KERNEL_SIZES,
    MIXER_MIN_STAGE,
    MIXERS,
    NUM_STAGES,
    PATCH_SIZES,
    SE_MODES,
    STAGE_STRIDES,
    STEMS,
    Genome,
    StageGenome,
)
from ._util import is_int

if TYPE_CHECKING:
    import optuna

__all__ = ["SearchSpace"]

_DEFAULT_DEPTHS = ((1, 3), (1, 3), (2, 10), (1, 3))
_DEFAULT_WIDTHS = ((32, 48, 64), (64, 96, 128), (128, 160, 192, 256), (256, 320, 384, 512))


def _as_tuple(name: str, value: Any) -> tuple:
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) == 0:
        raise InvalidGenomeError(f"{name}: expected a non-empty sequence, got {value!r}")
    return tuple(value)


@dataclasses.dataclass(frozen=True)
class _Choices:
    depth: tuple[int, int]
    widths: tuple[int, ...]
    mixers: tuple[str, ...]


class SearchSpace:
    """The unified re-parameterizable block space.

    Args:
        resolution: Deployment resolution every genome is built for (MobileViT stages must divide).
        depths: Per stage ``(min, max)`` block count.
        widths: Per stage candidate widths.
        mixers: Token mixers to search; each is offered only in stages where it is allowed
            (attention from stride 16, MobileViT from stride 8 and only where the map divides by a patch size).
        kernel_sizes, ffn_kernel_sizes, ffn_ratios, se_modes, downsamples, stems, heads, patch_sizes:
            Candidate values of the other genes.
    """

    def __init__(
            self,
            *,
            resolution: int = 224,
            depths: Sequence[tuple[int, int]] = _DEFAULT_DEPTHS,
            widths: Sequence[Sequence[int]] = _DEFAULT_WIDTHS,
            mixers: Sequence[str] = MIXERS,
            kernel_sizes: Sequence[int] = KERNEL_SIZES,
            ffn_kernel_sizes: Sequence[int] = FFN_KERNEL_SIZES,
            ffn_ratios: Sequence[int] = (2, 3, 4),
            se_modes: Sequence[str] = SE_MODES,
            downsamples: Sequence[str] = DOWNSAMPLES,
            stems: Sequence[str] = STEMS,
            heads: Sequence[str] = HEADS,
            patch_sizes: Sequence[int] = (2,),
    ) -> None:
        depths, widths = _as_tuple("depths", depths), _as_tuple("widths", widths)
        if len(depths) != NUM_STAGES or len(widths) != NUM_STAGES:
            raise InvalidGenomeError(f"depths/widths: expected {NUM_STAGES} stages each, "
                                     f"got {len(depths)} and {len(widths)}")
        self.kernel_sizes = self._subset("kernel_sizes", kernel_sizes, KERNEL_SIZES)
        self.ffn_kernel_sizes = self._subset("ffn_kernel_sizes", ffn_kernel_sizes, FFN_KERNEL_SIZES)
        self.ffn_ratios = tuple(int(r) for r in _as_tuple("ffn_ratios", ffn_ratios))
        self.se_modes = self._subset("se_modes", se_modes, SE_MODES)
        self.downsamples = self._subset("downsamples", downsamples, DOWNSAMPLES)
        self.stems = self._subset("stems", stems, STEMS)
        self.heads = self._subset("heads", heads, HEADS)
        self.patch_sizes = self._subset("patch_sizes", patch_sizes, PATCH_SIZES)
        mixers = self._subset("mixers", mixers, MIXERS)
        if not is_int(resolution) or resolution % STAGE_STRIDES[-1]:
            raise InvalidGenomeError(f"resolution: expected a multiple of {STAGE_STRIDES[-1]}, got {resolution!r}")
        self.resolution = resolution
        self.stages: list[_Choices] = []
        for i in range(NUM_STAGES):
            lo, hi = _as_tuple(f"depths[{i}]", depths[i])
            if not 1 <= lo <= hi:
                raise InvalidGenomeError(f"depths[{i}]: expected 1 <= min <= max, got ({lo}, {hi})")
            allowed = tuple(m for m in mixers if self._mixer_fits(m, i))
            if not allowed:
                raise InvalidGenomeError(f"mixers: none of {mixers} is allowed in stage {i} at resolution {resolution}")
            self.stages.append(_Choices((int(lo), int(hi)), tuple(int(w) for w in _as_tuple(f"widths[{i}]", widths[i])),
                                        allowed))
        # every genome the space can draw must be valid: check the extremes now, not at trial time
        self.validate(self.draw(lambda name, choices: choices[0], lambda name, lo, hi: lo))

    @staticmethod
    def _subset(name: str, values: Sequence, allowed: tuple) -> tuple:
        values = _as_tuple(name, values)
        bad = [v for v in values if v not in allowed]
        if bad:
            raise InvalidGenomeError(f"{name}: unknown value {bad[0]!r}; expected some of {allowed}")
        return values

    def _mixer_fits(self, mixer: str, stage: int) -> bool:
        if stage < MIXER_MIN_STAGE[mixer]:
            return False
        if mixer == "mobilevit":
            size = self.resolution // STAGE_STRIDES[stage]
            return any(size % p == 0 for p in self.patch_sizes)
        return True

    # -- drawing --------------------------------------------------------------------------------
    def draw(
            self,
            categorical: Callable[[str, tuple], Any],
            integer: Callable[[str, int, int], int],
    ) -> Genome:
        """A genome of the space, each gene chosen by a callback: ``categorical(name, choices)`` returns one of
        ``choices``, ``integer(name, lo, hi)`` an int in ``[lo, hi]``. ``name`` is the gene's Optuna parameter name
        (``s0_mixer``, ``stem``, ...); genes are asked in a fixed order, and only those the genome has (no kernel
        size for a mixer without one). :meth:`suggest`, :meth:`sample` and :meth:`params_of` are such draws.
        """
        stages = []
        for i, ch in enumerate(self.stages):
            p = f"s{i}_"
            mixer = categorical(p + "mixer", ch.mixers)
            gene: dict[str, Any] = dict(
                depth=integer(p + "depth", *ch.depth),
                width=categorical(p + "width", ch.widths),
                mixer=mixer,
                ffn_ratio=categorical(p + "ffn_ratio", self.ffn_ratios),
                se=categorical(p + "se", self.se_modes),
                downsample="none" if i == 0 else categorical(p + "downsample", self.downsamples),
            )
            if mixer in CONV_MIXERS:
                gene["kernel_size"] = categorical(p + "kernel_size", self.kernel_sizes)
            if mixer != "mobilevit":
                gene["ffn_kernel_size"] = categorical(p + "ffn_kernel_size", self.ffn_kernel_sizes)
            else:
                size = self.resolution // STAGE_STRIDES[i]
                fitting = tuple(ps for ps in self.patch_sizes if size % ps == 0)
                # one Optuna name per feasible set keeps each parameter's distribution fixed
                gene["patch_size"] = categorical(p + "patch_size", fitting) if len(fitting) > 1 else fitting[0]
            stages.append(StageGenome(**gene))
        return Genome(
            stages=tuple(stages),
            stem=categorical("stem", self.stems),
            head=categorical("head", self.heads),
            resolution=self.resolution,
        )

    def suggest(self, trial: optuna.trial.BaseTrial) -> Genome:
        """Draw a genome through ``trial.suggest_*`` (every value is a valid genome)."""
        return self.draw(
            lambda name, choices: trial.suggest_categorical(name, list(choices)),
            lambda name, lo, hi: trial.suggest_int(name, lo, hi),
        )

    def sample(self, rng: np.random.Generator | int | None = None) -> Genome:
        """Draw a genome uniformly per gene with ``rng`` (a numpy Generator or a seed)."""
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        return self.draw(
            lambda name, choices: choices[int(gen.integers(len(choices)))],
            lambda name, lo, hi: int(gen.integers(lo, hi + 1)),
        )

    def params_of(self, genome: Genome) -> dict[str, Any]:
        """The Optuna parameters that :meth:`suggest` would set for ``genome`` (for ``study.enqueue_trial``)."""
        self.validate(genome)
        params: dict[str, Any] = {}

        def categorical(name: str, choices: tuple) -> Any:
            return params.setdefault(name, _lookup(genome, name))

        def integer(name: str, lo: int, hi: int) -> int:
            return params.setdefault(name, _lookup(genome, name))

        self.draw(categorical, integer)
        return params

    # -- checking -------------------------------------------------------------------------------
    def contains(self, genome: Genome) -> bool:
        try:
            self.validate(genome)
        except InvalidGenomeError:
            return False
        return True

    def validate(self, genome: Genome) -> Genome:
        """Raise :class:`InvalidGenomeError` naming the field if ``genome`` is outside this space."""
        if not isinstance(genome, Genome):
            raise InvalidGenomeError(f"genome: expected a Genome, got {type(genome).__name__}")
        if genome.resolution != self.resolution:
            raise InvalidGenomeError(f"resolution: the space is built for {self.resolution}, "
                                     f"the genome for {genome.resolution}")
        for field, value, choices in (("stem", genome.stem, self.stems), ("head", genome.head, self.heads)):
            if value not in choices:
                raise InvalidGenomeError(f"{field}: {value!r} is not in this space ({', '.join(choices)})")
        for i, (st, ch) in enumerate(zip(genome.stages, self.stages)):
            p = f"stages[{i}]"
            lo, hi = ch.depth
            if not lo <= st.depth <= hi:
                raise InvalidGenomeError(f"{p}.depth: {st.depth} is outside this space's range [{lo}, {hi}]")
            checks = [("width", st.width, ch.widths), ("mixer", st.mixer, ch.mixers),
                      ("ffn_ratio", st.ffn_ratio, self.ffn_ratios), ("se", st.se, self.se_modes)]
            if i:
                checks.append(("downsample", st.downsample, self.downsamples))
            if st.mixer in CONV_MIXERS:
                checks.append(("kernel_size", st.kernel_size, self.kernel_sizes))
            if st.mixer != "mobilevit":
                checks.append(("ffn_kernel_size", st.ffn_kernel_size, self.ffn_kernel_sizes))
            else:
                checks.append(("patch_size", st.patch_size, self.patch_sizes))
            for field, value, choices in checks:
                if value not in choices:
                    raise InvalidGenomeError(f"{p}.{field}: {value!r} is not in this space "
                                             f"({', '.join(map(str, choices))})")
        return genome

    def __repr__(self) -> str:
        parts = [f"s{i}: depth {c.depth}, widths {c.widths}, mixers {c.mixers}" for i, c in enumerate(self.stages)]
        return f"SearchSpace(resolution={self.resolution}; " + "; ".join(parts) + ")"

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary of the choices (stored with studies for provenance)."""
        return dict(
            resolution=self.resolution,
            stages=[dataclasses.asdict(c) for c in self.stages],
            kernel_sizes=self.kernel_sizes, ffn_kernel_sizes=self.ffn_kernel_sizes, ffn_ratios=self.ffn_ratios,
            se_modes=self.se_modes, downsamples=self.downsamples, stems=self.stems, heads=self.heads,
            patch_sizes=self.patch_sizes,
        )


def _lookup(genome: Genome, name: str) -> Any:
    if name in ("stem", "head"):
        return getattr(genome, name)
    stage, field = name[1:].split("_", 1)
    return getattr(genome.stages[int(stage)], field)

