"""The seed zoo: published architectures written as genomes of the space.

Deployed parameter counts are compared with timm's model of the same name (after
``timm.utils.reparameterize_model``; ``poolformer_s12`` stands in for ``riformer_s12``) by
``tests/search_space_tests/test_zoo.py``. README lists what differs and why.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from ._genome import Genome, StageGenome

__all__ = ["ZOO_REFERENCES", "zoo"]


def _stages(depths, widths, **common) -> tuple[StageGenome, ...]:
    per_stage = {k: v for k, v in common.items() if isinstance(v, tuple)}
    shared = {k: v for k, v in common.items() if not isinstance(v, tuple)}
    downsample = shared.pop("downsample")
    out = []
    for i, (d, w) in enumerate(zip(depths, widths)):
        kw = dict(shared, **{k: v[i] for k, v in per_stage.items()})
        out.append(StageGenome(depth=d, width=w, downsample="none" if i == 0 else downsample, **kw))
    return tuple(out)


def _repvit(depths, widths) -> Genome:
    return Genome(
        stages=_stages(depths, widths, mixer="repdw", kernel_size=3, ffn_ratio=2, se="alternate",
                       downsample="repvit"),
        stem="repvit", head="linear", resolution=224,
    )


def _fastvit(depths, widths, ffn_ratio, mixers) -> Genome:
    return Genome(
        stages=_stages(depths, widths, mixer=mixers, kernel_size=3, ffn_kernel_size=7, ffn_ratio=ffn_ratio,
                       se="none", downsample="replk"),
        stem="mobileone", head="mobileone", resolution=256,
    )


zoo: Mapping[str, Genome] = MappingProxyType({
    # RepViT (arXiv 2307.09283): RepVGG-style dw mixer, cross-block SE, deeper downsampling, conv stem.
    "repvit_m0_9": _repvit((2, 2, 14, 2), (48, 96, 192, 384)),
    "repvit_m1_1": _repvit((2, 2, 12, 2), (64, 128, 256, 512)),
    # FastViT (arXiv 2303.14189): RepMixer, ConvFFN with 7x7 dw, MobileOne stem/head, large-kernel patch embed.
    "fastvit_t8": _fastvit((2, 2, 4, 2), (48, 96, 192, 384), 3, ("repmixer",) * 4),
    "fastvit_sa12": _fastvit((2, 2, 6, 2), (64, 128, 256, 512), 4, ("repmixer",) * 3 + ("attention",)),
    # MobileViT-XS (arXiv 2110.02178): MobileViT blocks (d = 1.5 C, L = 2/4/3, 2x2 patches) at strides 8-32.
    "mobilevit_xs": Genome(
        stages=_stages((2, 2, 4, 3), (48, 64, 80, 96), mixer=("repdw",) + ("mobilevit",) * 3, kernel_size=3,
                       ffn_ratio=(4, 2, 2, 2), se="none", downsample="metaformer", patch_size=2),
        stem="repvit", head="conv", resolution=256,
    ),
    # RIFormer-S12 (arXiv 2304.05659): identity mixer on the PoolFormer-S12 macro design.
    "riformer_s12": Genome(
        stages=_stages((2, 2, 6, 2), (64, 128, 320, 512), mixer="identity", ffn_ratio=4, se="none",
                       downsample="metaformer"),
        stem="patchify", head="linear", resolution=224,
    ),
    # ConvNeXt-Atto (arXiv 2201.03545): patchify stem, 7x7 dw, ratio-4 inverted bottleneck, separate downsampling.
    "convnext_atto": Genome(
        stages=_stages((2, 2, 6, 2), (40, 80, 160, 320), mixer="repdw", kernel_size=7, ffn_ratio=4, se="none",
                       downsample="convnext"),
        stem="patchify", head="linear", resolution=224,
    ),
})

#: timm model whose deployed form each zoo genome is checked against.
ZOO_REFERENCES: Mapping[str, str] = MappingProxyType({
    name: ("poolformer_s12" if name == "riformer_s12" else name) for name in zoo
})
