"""``RepNASNet``: the timm-style network any genome builds, plus ``build_model`` and ``reparameterize``."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import trunc_normal_
from timm.models import checkpoint, checkpoint_seq
from torch import nn

from ._blocks import (
    POOL_TYPES,
    RepNASHead,
    RepNASStage,
    create_head,
    create_stem,
    stem_input_convs,
    training_stem_input_convs,
)
from ._errors import InvalidGenomeError, ModelArgumentError
from ._genome import STAGE_STRIDES, Genome
from ._util import EXPECTED, check_int, is_int, is_number

__all__ = ["RepNASNet", "build_model", "default_cfg_for", "reparameterize", "structural_cfg"]

GenomeLike = Genome | Mapping[str, Any] | str


def as_genome(genome: GenomeLike) -> Genome:
    """Accept a :class:`Genome`, its dict form, or its JSON text."""
    if isinstance(genome, Genome):
        return genome
    if isinstance(genome, str):
        return Genome.from_json(genome)
    if isinstance(genome, Mapping):
        return Genome.from_dict(genome)
    raise InvalidGenomeError(f"genome: expected a Genome, dict or JSON string, got {type(genome).__name__}")


def _conv_names(names: Sequence[str]) -> str | tuple[str, ...]:
    return names[0] if len(names) == 1 else tuple(names)


def pool_size_for(input_size: Sequence[int], stride: int = STAGE_STRIDES[-1]) -> tuple[int, int]:
    """Size of the feature map at ``stride`` for an input of ``input_size`` (``(C, H, W)`` or ``(H, W)``)."""
    return tuple(math.ceil(s / stride) for s in input_size[-2:])


def structural_cfg(genome: Genome, input_size: Sequence[int] | None = None) -> dict[str, Any]:
    """The pretrained-config fields that describe the architecture, not the weights: ``input_size`` (default: the
    genome's deployment resolution), the ``pool_size`` that input gives, ``first_conv`` (training form) and
    ``classifier``. The one source for :func:`default_cfg_for`, ``genome=`` entrypoints and ``register_dir``."""
    size = (3, genome.resolution, genome.resolution) if input_size is None else tuple(input_size)
    return {
        "input_size": size,
        "pool_size": pool_size_for(size),
        "first_conv": _conv_names([f"stem.{n}" for n in training_stem_input_convs(genome.stem)]),
        "classifier": "head.fc",
    }


def default_cfg_for(genome: Genome, **kwargs: Any) -> dict[str, Any]:
    """timm's pretrained config for ``genome`` (training form); ``kwargs`` override fields."""
    own = structural_cfg(genome)
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": own["input_size"],
        "pool_size": own["pool_size"],
        "crop_pct": 0.95,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": own["first_conv"],
        "classifier": own["classifier"],
        "license": "apache-2.0",
        **kwargs,
    }


def check_global_pool(value: Any, name: str = "global_pool") -> str:
    if not isinstance(value, str) or value not in POOL_TYPES:
        raise ModelArgumentError(f"{name}: unknown pooling type {value!r}; expected one of "
                                 f"{', '.join(map(repr, POOL_TYPES))} ('' keeps the unpooled feature map)")
    return value


def check_feature_indices(indices: Any, num_levels: int = len(STAGE_STRIDES), *, name: str = "out_indices",
                          ) -> list[int]:
    """timm's feature selection, checked: None (all levels), an int ``n`` (the last ``n``), or a sequence of
    level indices (negative ones count from the end), increasing and without repeats. Absolute indices."""
    levels = f"the model has {num_levels} feature levels (strides {', '.join(map(str, STAGE_STRIDES[:num_levels]))})"
    if indices is None:
        return list(range(num_levels))
    if is_int(indices):
        if not 0 < indices <= num_levels:
            raise ModelArgumentError(f"{name}: last-n {indices} is out of range (1 to {num_levels}); {levels}")
        return list(range(num_levels - indices, num_levels))
    if (not isinstance(indices, (list, tuple)) or not indices
            or not all(is_int(i) for i in indices)):
        raise ModelArgumentError(f"{name}: expected an int (the last n levels) or a non-empty sequence of level "
                                 f"indices, got {indices!r}")
    out = []
    for i in indices:
        if not -num_levels <= i < num_levels:
            raise ModelArgumentError(f"{name}: feature index {i} is out of range (0 to {num_levels - 1}, or "
                                     f"{-num_levels} to -1); {levels}")
        out.append(i % num_levels)
    if out != sorted(set(out)):
        raise ModelArgumentError(f"{name}: {tuple(indices)} must be increasing without repeats (features come "
                                 f"out in stage order)")
    return out


def _check_rate(name: str, value: Any) -> float:
    if not is_number(value) or not 0.0 <= value < 1.0:
        raise ModelArgumentError(f"{name}: expected a number in [0, 1), got {value!r}")
    return float(value)


class RepNASNet(nn.Module):
    """A network of the RepNAS space, with timm's model interface.

    Args:
        genome: The architecture (a :class:`Genome`, its dict, or JSON).
        num_classes: Classifier outputs (0: no classifier; ``forward`` returns the pooled features).
        in_chans: Input channels.
        global_pool: Pooling type of the head (timm's ``SelectAdaptivePool2d`` names; ``''`` keeps the 4-D map).
        drop_rate: Dropout before the classifier.
        drop_path_rate: Stochastic-depth rate, increasing linearly over the blocks.

    Raises:
        ModelArgumentError: An argument is out of range (the message names it).
    """

    # timm sets these; the getters keep ``first_conv`` naming the stem's input conv(s) of the current form
    __jit_unused_properties__ = ["pretrained_cfg", "default_cfg", "_traits"]

    def __init__(
            self,
            genome: GenomeLike,
            *,
            num_classes: int = 1000,
            in_chans: int = 3,
            global_pool: str = "avg",
            drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        check_int("num_classes", num_classes, lo=0, error=ModelArgumentError, message=EXPECTED)
        check_int("in_chans", in_chans, lo=1, error=ModelArgumentError, message=EXPECTED)
        check_global_pool(global_pool)
        drop_rate = _check_rate("drop_rate", drop_rate)
        drop_path_rate = _check_rate("drop_path_rate", drop_path_rate)
        self.genome = genome = as_genome(genome)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self._pretrained_cfg_store = default_cfg_for(genome)
        self._traits_store = {}

        self.stem = create_stem(genome.stem, in_chans, genome.stages[0].width)
        total_blocks = sum(st.depth for st in genome.stages)
        dpr = [drop_path_rate * i / max(total_blocks - 1, 1) for i in range(total_blocks)]
        stages, in_chs, offset = [], genome.stages[0].width, 0
        self.feature_info = []
        for i, st in enumerate(genome.stages):
            stages.append(RepNASStage(in_chs, st, dpr[offset:offset + st.depth]))
            offset += st.depth
            in_chs = st.width
            self.feature_info.append(dict(num_chs=st.width, reduction=STAGE_STRIDES[i], module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.final_conv, self.num_features = create_head(genome.head, in_chs)
        self.head = RepNASHead(self.num_features, num_classes, pool_type=global_pool,
                               use_norm=genome.head == "linear", drop_rate=drop_rate)
        self.head_hidden_size = self.head.num_features
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    # -- timm config: first_conv follows the form (training / reparameterized) -----------------------
    def first_conv_names(self) -> str | tuple[str, ...]:
        """Name(s) of the convolution(s) reading the input image, in the model's current form."""
        return _conv_names([f"stem.{n}" for n in stem_input_convs(self.stem)])

    def _live(self, cfg: dict[str, Any] | None) -> dict[str, Any] | None:
        if cfg is not None and cfg.get("first_conv") is not None:  # None: the caller disabled stem adaptation
            cfg["first_conv"] = self.first_conv_names()
        return cfg

    @property
    def pretrained_cfg(self) -> dict[str, Any] | None:
        return self._live(self.__dict__.get("_pretrained_cfg_store"))

    @pretrained_cfg.setter
    def pretrained_cfg(self, cfg: dict[str, Any] | None) -> None:
        self.__dict__["_pretrained_cfg_store"] = cfg

    default_cfg = pretrained_cfg  # timm's alias

    @property
    def _traits(self) -> dict[str, Any]:
        return self._live(self.__dict__.get("_traits_store", {}))

    @_traits.setter
    def _traits(self, traits: dict[str, Any]) -> None:
        self.__dict__["_traits_store"] = traits

    # -- timm interface ---------------------------------------------------------------------------
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^stem", blocks=r"^stages\.(\d+)" if coarse else [
            (r"^stages\.(\d+)\.downsample", (0,)), (r"^stages\.(\d+)\.blocks\.(\d+)", None),
            (r"^final_conv", (99999,)),
        ])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier for ``num_classes`` (0: none) and, unless None, new pooling (``''``: none)."""
        check_int("num_classes", num_classes, lo=0, error=ModelArgumentError, message=EXPECTED)
        if global_pool is not None:
            check_global_pool(global_pool)
        # the model's device and dtype: a head without a classifier has no parameters of its own to take them from
        ref = next(self.parameters())
        self.head.reset(num_classes, global_pool, device=ref.device, dtype=ref.dtype)
        self.num_classes = num_classes
        self.head_hidden_size = self.head.num_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.stages, x)
        else:
            x = self.stages(x)
        return self.final_conv(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.jit.ignore
    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: int | Sequence[int] | None = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's intermediate-feature API: the outputs of the stages ``indices`` selects (see ``out_indices``).

        Returns ``(forward_features(x), intermediates)``, or the intermediates alone. ``norm`` is accepted for
        timm's ``FeatureGetterNet`` (the stage outputs have no extra norm); ``stop_early`` skips later stages.
        """
        if output_fmt != "NCHW":
            raise ModelArgumentError(f"output_fmt: only 'NCHW' is supported, got {output_fmt!r}")
        take = check_feature_indices(indices, len(self.stages), name="indices")
        x = self.stem(x)
        stages = self.stages[:max(take) + 1] if stop_early else self.stages
        intermediates = []
        i = -1
        for i, stage in enumerate(stages):
            x = checkpoint(stage, x) if self.grad_checkpointing else stage(x)
            if i in take:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        if i == len(self.stages) - 1:
            x = self.final_conv(x)
        return x, intermediates

    @torch.jit.ignore
    def prune_intermediate_layers(
            self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True,
    ) -> list[int]:
        """Drop the stages after the last of ``indices`` and, as timm's FastViT does, ``final_conv`` and the classifier
        (``final_conv`` follows the last stage and never feeds the features). Returns the absolute indices kept.

        Afterwards the model describes itself as pruned: ``feature_info`` lists the kept stages (their indices are
        unchanged), ``num_features`` is the last kept stage's width and ``pretrained_cfg['pool_size']`` its map
        size. As after timm's ``reset_classifier(0, '')``, ``pretrained_cfg['classifier']`` still names
        ``head.fc``, now an ``Identity``: where ``reset_classifier`` would put a new classifier. ``genome`` still
        describes the whole architecture (the pruned network is a prefix of it).
        """
        take = check_feature_indices(indices, len(self.stages), name="indices")
        last = max(take)
        if prune_norm or prune_head or last < len(self.stages) - 1:
            self.final_conv = nn.Identity()
            self.num_features = self.feature_info[last]["num_chs"]
            self.head = RepNASHead(self.num_features, 0, pool_type="", use_norm=self.genome.head == "linear",
                                   drop_rate=self.drop_rate).train(self.training)
            self.num_classes = 0
            self.head_hidden_size = self.head.num_features
            cfg = self.__dict__.get("_pretrained_cfg_store")
            if cfg is not None and cfg.get("input_size"):  # a new dict: timm may share the config
                self.pretrained_cfg = {**cfg, "pool_size": pool_size_for(cfg["input_size"], STAGE_STRIDES[last])}
        self.stages = self.stages[:last + 1]
        self.feature_info = self.feature_info[:last + 1]
        return take


def build_model(genome: GenomeLike, *, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> RepNASNet:
    """Build the training-form network of ``genome`` (call :func:`reparameterize` to deploy it)."""
    return RepNASNet(genome, num_classes=num_classes, in_chans=in_chans, **kwargs)


def reparameterize(model: nn.Module, *, inplace: bool = True) -> nn.Module:
    """Fold every re-parameterizable block of ``model`` into its deployed form and return the model.

    Works on any module tree (a whole network or a single block), in place unless ``inplace=False``
    (then a deep copy is folded). Idempotent. Folding uses BatchNorm running statistics, so the result
    equals the training-form model in ``eval()`` mode; the training/eval flag itself is left as it is.
    ``timm.utils.reparameterize_model`` gives the same result: every block folds through its own
    ``reparameterize()`` method.
    """
    if not inplace:
        model = copy.deepcopy(model)

    def _walk(m: nn.Module) -> None:
        for child in m.children():
            if hasattr(child, "reparameterize"):
                child.reparameterize()
            _walk(child)

    if hasattr(model, "reparameterize"):
        model.reparameterize()
    _walk(model)
    return model
