"""``RepNASNet``: the timm-style network any genome builds, plus ``build_model`` and ``reparameterize``."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from timm.layers import SelectAdaptivePool2d, trunc_normal_
from torch import nn

from ._blocks import NormLinearHead, RepNASStage, create_head, create_stem
from ._errors import InvalidGenomeError
from ._genome import STAGE_STRIDES, Genome

__all__ = ["RepNASNet", "build_model", "reparameterize"]

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


class RepNASNet(nn.Module):
    """A network of the RepNAS space, with timm's model interface.

    Args:
        genome: The architecture (a :class:`Genome`, its dict, or JSON).
        num_classes: Classifier outputs (0 for a feature extractor).
        in_chans: Input channels.
        global_pool: Pooling type for the head (timm's ``SelectAdaptivePool2d`` names).
        drop_rate: Dropout before the classifier.
        drop_path_rate: Stochastic-depth rate, increasing linearly over the blocks.
    """

    def __init__(
            self,
            genome: GenomeLike,
            num_classes: int = 1000,
            in_chans: int = 3,
            global_pool: str = "avg",
            drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.genome = genome = as_genome(genome)
        for name, value in (("num_classes", num_classes), ("in_chans", in_chans)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "num_classes" else 1):
                raise ValueError(f"{name}: expected a {'non-negative' if name == 'num_classes' else 'positive'} "
                                 f"integer, got {value!r}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        self.stem = create_stem(genome.stem, in_chans, genome.stages[0].width)
        total_blocks = sum(st.depth for st in genome.stages)
        dpr = [drop_path_rate * i / max(total_blocks - 1, 1) for i in range(total_blocks)]
        stages, in_chs, offset = [], genome.stages[0].width, 0
        self.feature_info: list[dict[str, Any]] = []
        for i, st in enumerate(genome.stages):
            stages.append(RepNASStage(in_chs, st, dpr[offset:offset + st.depth]))
            offset += st.depth
            in_chs = st.width
            self.feature_info.append(dict(num_chs=st.width, reduction=STAGE_STRIDES[i], module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.final_conv, self.num_features = create_head(genome.head, in_chs)
        self.head_hidden_size = self.num_features
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.head = NormLinearHead(self.num_features, num_classes, use_norm=genome.head == "linear",
                                   drop_rate=drop_rate)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

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
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.head.reset(num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            from timm.models import checkpoint_seq
            x = checkpoint_seq(self.stages, x)
        else:
            x = self.stages(x)
        return self.final_conv(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(self.global_pool(x), pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def build_model(genome: GenomeLike, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> RepNASNet:
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
