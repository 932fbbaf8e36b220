"""timm registration: ``repnas_<zoo name>`` entrypoints, built through ``build_model_with_cfg``.

Importing ``search_space`` runs this module, so ``timm.create_model('repnas_fastvit_t8', num_classes=10)``
works afterwards. A caller may pass ``genome=`` to any entrypoint to build another architecture
under that name's pretrained config.
"""

from __future__ import annotations

from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ._genome import Genome
from ._model import RepNASNet
from ._zoo import zoo

__all__ = ["create_repnas", "default_cfg_for", "entrypoint_name"]


def entrypoint_name(name: str) -> str:
    return name if name.startswith("repnas_") else f"repnas_{name}"


def default_cfg_for(genome: Genome, **kwargs: Any) -> dict[str, Any]:
    res = genome.resolution
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, res, res),
        "pool_size": (res // 32, res // 32),
        "crop_pct": 0.95,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem",
        "classifier": "head.fc",
        "license": "apache-2.0",
        **kwargs,
    }


def create_repnas(variant: str, genome: Genome, pretrained: bool = False, **kwargs: Any) -> RepNASNet:
    """Build ``genome`` under the timm variant name ``variant`` (pretrained weights from its cfg)."""
    return build_model_with_cfg(
        RepNASNet,
        variant,
        pretrained,
        genome=kwargs.pop("genome", genome),
        feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2, 3)),
        **kwargs,
    )


default_cfgs = generate_default_cfgs({entrypoint_name(n): default_cfg_for(g) for n, g in zoo.items()})


def _make_entrypoint(name: str):
    variant = entrypoint_name(name)

    def _entry(pretrained: bool = False, **kwargs: Any) -> RepNASNet:
        return create_repnas(variant, zoo[name], pretrained=pretrained, **kwargs)

    _entry.__name__ = _entry.__qualname__ = variant
    _entry.__module__ = __name__
    _entry.__doc__ = f"RepNAS genome of ``{name}`` (see ``search_space.zoo['{name}']``)."
    return _entry


for _name in zoo:
    globals()[entrypoint_name(_name)] = register_model(_make_entrypoint(_name))
