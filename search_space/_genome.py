"""Genomes: frozen, JSON-round-tripping descriptions of one architecture in the space.

A genome never holds modules; :func:`search_space.build_model` turns it into an ``nn.Module``.
Construction validates every field and raises :class:`InvalidGenomeError` (a ``ValueError``)
whose message names the field, e.g. ``stages[2].mixer``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._errors import InvalidGenomeError
from ._util import EXPECTED, check_int, is_int

__all__ = [
    "DOWNSAMPLES",
    "FFN_KERNEL_SIZES",
    "Genome",
    "HEADS",
    "KERNEL_SIZES",
    "MIXERS",
    "NUM_STAGES",
    "PATCH_SIZES",
    "SE_MODES",
    "STAGE_STRIDES",
    "STEMS",
    "StageGenome",
]

#: Token mixers (see README): RepViT, FastViT, RIFormer, FastViT attention, MobileViT.
MIXERS = ("repdw", "repmixer", "identity", "attention", "mobilevit")
#: Mixers that own a k x k depthwise (or local) convolution and so read ``kernel_size``.
CONV_MIXERS = ("repdw", "repmixer", "mobilevit")
#: Downsampling layers between stages; stage 0 has none (the stem reaches stride 4).
DOWNSAMPLES = ("repvit", "replk", "convnext", "metaformer")
STEMS = ("repvit", "mobileone", "patchify")
HEADS = ("linear", "mobileone", "conv")
SE_MODES = ("none", "alternate", "all")
KERNEL_SIZES = (3, 5, 7)
#: 0 means a plain 1x1 FFN (RepViT, ConvNeXt, RIFormer); 3/5/7 adds a depthwise conv (FastViT ConvFFN).
FFN_KERNEL_SIZES = (0, 3, 5, 7)
PATCH_SIZES = (1, 2, 4)
NUM_STAGES = 4
#: Output stride of each stage (the stem reduces by 4, each later stage by 2).
STAGE_STRIDES = (4, 8, 16, 32)
#: The earliest stage each mixer may appear in: attention is quadratic in tokens, so it is kept to
#: strides 16/32 (as FastViT's SA/MA models do); MobileViT blocks start at stride 8 (as in the paper).
MIXER_MIN_STAGE = {"repdw": 0, "repmixer": 0, "identity": 0, "attention": 2, "mobilevit": 1}

_LIMITS = {"depth": (1, 32), "width": (8, 2048), "ffn_ratio": (1, 8), "resolution": (32, 2048)}


def _fail(field: str, msg: str) -> InvalidGenomeError:
    return InvalidGenomeError(f"{field}: {msg}")


def _check_int(field: str, value: Any, lo: int, hi: int, multiple: int = 1) -> None:
    if not is_int(value):
        raise _fail(field, f"expected an integer, got {value!r}")
    if not lo <= value <= hi:
        raise _fail(field, f"{value} is out of range [{lo}, {hi}]")
    if value % multiple:
        raise _fail(field, f"{value} must be a multiple of {multiple}")


def _check_choice(field: str, value: Any, choices: tuple) -> None:
    if isinstance(value, bool) or value not in choices:
        raise _fail(field, f"unknown value {value!r}; expected one of {', '.join(map(repr, choices))}")


@dataclass(frozen=True)
class StageGenome:
    """One stage: ``depth`` blocks of ``width`` channels after an optional downsampling layer.

    Attributes:
        depth: Number of blocks (for ``mobilevit``: transformer layers in the stage's MobileViT block).
        width: Output channels of the stage (multiple of 8).
        mixer: Token mixer, one of ``MIXERS``.
        kernel_size: Kernel of the mixer's depthwise/local conv (3/5/7); unused by identity/attention.
        ffn_kernel_size: Depthwise kernel inside the FFN (0 = none, plain 1x1 MLP).
        ffn_ratio: FFN expansion ratio (the transformer MLP ratio for ``mobilevit``).
        se: Squeeze-excite placement: ``none``, ``alternate`` (RepViT: 1st, 3rd, ... block) or ``all``.
        downsample: Layer entering the stage (``none`` for stage 0, one of ``DOWNSAMPLES`` otherwise).
        patch_size: MobileViT patch size; the stage's feature map at the deployment resolution must divide by
            it (other input sizes are resized at run time, as timm's MobileViT does). Unused otherwise.
    """

    depth: int
    width: int
    mixer: str = "repdw"
    kernel_size: int = 3
    ffn_kernel_size: int = 0
    ffn_ratio: int = 2
    se: str = "none"
    downsample: str = "none"
    patch_size: int = 2

    def _validate(self, prefix: str) -> None:
        _check_int(f"{prefix}.depth", self.depth, *_LIMITS["depth"])
        _check_int(f"{prefix}.width", self.width, *_LIMITS["width"], multiple=8)
        _check_choice(f"{prefix}.mixer", self.mixer, MIXERS)
        _check_choice(f"{prefix}.kernel_size", self.kernel_size, KERNEL_SIZES)
        _check_choice(f"{prefix}.ffn_kernel_size", self.ffn_kernel_size, FFN_KERNEL_SIZES)
        _check_int(f"{prefix}.ffn_ratio", self.ffn_ratio, *_LIMITS["ffn_ratio"])
        _check_choice(f"{prefix}.se", self.se, SE_MODES)
        _check_choice(f"{prefix}.downsample", self.downsample, ("none",) + DOWNSAMPLES)
        _check_choice(f"{prefix}.patch_size", self.patch_size, PATCH_SIZES)

    def canonical(self) -> StageGenome:
        """The same architecture with genes its mixer ignores set to their defaults."""
        changes: dict[str, Any] = {}
        if self.mixer not in CONV_MIXERS:
            changes["kernel_size"] = 3
        if self.mixer != "mobilevit":
            changes["patch_size"] = 2
        else:
            changes["ffn_kernel_size"] = 0
        return dataclasses.replace(self, **changes)


_STAGE_FIELDS = tuple(f.name for f in dataclasses.fields(StageGenome))
_GENOME_FIELDS = ("resolution", "stem", "head", "stages")


@dataclass(frozen=True)
class Genome:
    """A complete architecture: stem, four stages, head, and the resolution it is deployed at.

    Attributes:
        stages: Exactly ``NUM_STAGES`` :class:`StageGenome` (output strides 4/8/16/32).
        stem: Global stem, one of ``STEMS`` (RepViT conv stem, FastViT MobileOne stem, ConvNeXt patchify).
        head: Classifier head, one of ``HEADS`` (pool+norm+linear, FastViT MobileOne head, MobileViT 1x1 conv).
        resolution: Deployment input resolution (square); MobileViT divisibility is checked against it.
    """

    stages: tuple[StageGenome, ...]
    stem: str = "repvit"
    head: str = "linear"
    resolution: int = 224

    def __post_init__(self) -> None:
        stages = self.stages
        if isinstance(stages, list):
            stages = tuple(stages)
            object.__setattr__(self, "stages", stages)
        if not isinstance(stages, tuple):
            raise _fail("stages", f"expected a list of {NUM_STAGES} stages, got {type(stages).__name__}")
        if len(stages) != NUM_STAGES:
            raise _fail("stages", f"expected {NUM_STAGES} stages, got {len(stages)}")
        for i, st in enumerate(stages):
            if not isinstance(st, StageGenome):
                raise _fail(f"stages[{i}]", f"expected a StageGenome, got {type(st).__name__}")
        _check_choice("stem", self.stem, STEMS)
        _check_choice("head", self.head, HEADS)
        _check_int("resolution", self.resolution, *_LIMITS["resolution"], multiple=STAGE_STRIDES[-1])
        for i, st in enumerate(stages):
            prefix = f"stages[{i}]"
            st._validate(prefix)
            if i == 0 and st.downsample != "none":
                raise _fail(f"{prefix}.downsample", "stage 0 has no downsampling layer (the stem reaches "
                            f"stride 4); use 'none', got {st.downsample!r}")
            if i > 0 and st.downsample == "none":
                raise _fail(f"{prefix}.downsample", f"stage {i} needs a downsampling layer; "
                            f"expected one of {', '.join(map(repr, DOWNSAMPLES))}")
            if i < MIXER_MIN_STAGE[st.mixer]:
                raise _fail(f"{prefix}.mixer", f"{st.mixer!r} is allowed from stage "
                            f"{MIXER_MIN_STAGE[st.mixer]} (stride {STAGE_STRIDES[MIXER_MIN_STAGE[st.mixer]]}) on, "
                            f"not in stage {i}")
        check_resolution(self, self.resolution)

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "resolution": self.resolution,
            "stem": self.stem,
            "head": self.head,
            "stages": [dataclasses.asdict(st) for st in self.stages],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Genome:
        if not isinstance(data, Mapping):
            raise _fail("genome", f"expected a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_GENOME_FIELDS))
        if unknown:
            raise _fail(unknown[0], f"unknown field; expected only {', '.join(_GENOME_FIELDS)}")
        if "stages" not in data:
            raise _fail("stages", "missing")
        raw_stages = data["stages"]
        if not isinstance(raw_stages, (list, tuple)):
            raise _fail("stages", f"expected a list of {NUM_STAGES} stages, got {type(raw_stages).__name__}")
        stages = []
        for i, raw in enumerate(raw_stages):
            if not isinstance(raw, Mapping):
                raise _fail(f"stages[{i}]", f"expected an object, got {type(raw).__name__}")
            unknown = sorted(set(raw) - set(_STAGE_FIELDS))
            if unknown:
                raise _fail(f"stages[{i}].{unknown[0]}", f"unknown field; expected only {', '.join(_STAGE_FIELDS)}")
            for required in ("depth", "width"):
                if required not in raw:
                    raise _fail(f"stages[{i}].{required}", "missing")
            stages.append(StageGenome(**raw))
        kwargs = {k: data[k] for k in ("stem", "head", "resolution") if k in data}
        return cls(stages=tuple(stages), **kwargs)

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=indent is None)

    @classmethod
    def from_json(cls, text: str | bytes) -> Genome:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as e:
            raise _fail("genome", f"malformed JSON: {e}") from None
        return cls.from_dict(data)

    def canonical(self) -> Genome:
        """The same architecture with genes that its mixers ignore reset to their defaults."""
        return dataclasses.replace(self, stages=tuple(st.canonical() for st in self.stages))

    def key(self) -> str:
        """Stable 16-hex-digit hash of the canonical architecture (equal for equal architectures)."""
        text = json.dumps(self.canonical().to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def with_resolution(self, resolution: int) -> Genome:
        """A copy deployed at another resolution (validated again)."""
        return dataclasses.replace(self, resolution=resolution)

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(st.depth for st in self.stages)

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(st.width for st in self.stages)


def check_resolution(genome: Genome, resolution: int, field: str = "resolution") -> None:
    """Reject a resolution at which a MobileViT stage's feature map does not divide by its patch size."""
    check_int(field, resolution, lo=1, error=InvalidGenomeError, message=EXPECTED)
    for i, st in enumerate(genome.stages):
        if st.mixer != "mobilevit":
            continue
        size = resolution / STAGE_STRIDES[i]
        if size != int(size) or int(size) % st.patch_size:
            raise _fail(
                f"stages[{i}].patch_size",
                f"MobileViT stage {i} sees a {size:g}x{size:g} feature map at resolution {resolution} "
                f"(stride {STAGE_STRIDES[i]}), which does not divide by patch size {st.patch_size}; "
                f"use a resolution that is a multiple of {STAGE_STRIDES[i] * st.patch_size}",
            )
