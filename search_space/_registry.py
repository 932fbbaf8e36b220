"""timm registration: ``repnas_<zoo name>`` entrypoints, built through ``build_model_with_cfg``.

Importing ``search_space`` runs this module, so ``timm.create_model('repnas_fastvit_t8', num_classes=10)``
works afterwards. A caller may pass ``genome=`` to any entrypoint to build another architecture
under that name's pretrained config.

Exported architectures (``python -m nas.export``) are folders in timm's hub layout: ``config.json``
(``architecture``, ``num_classes``, ``pretrained_cfg``, ``model_args`` with the genome) beside
``model.safetensors``. :func:`register_dir` registers such a folder under its architecture name, with
the folder's weights as that name's pretrained weights; :func:`create_model_from_dir` registers and builds
in one call.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ._errors import InvalidGenomeError, ModelArgumentError, ModelDirError
from ._genome import Genome
from ._model import RepNASNet, as_genome, check_feature_indices, default_cfg_for, structural_cfg
from ._zoo import zoo

__all__ = ["create_model_from_dir", "create_repnas", "default_cfg_for", "entrypoint_name", "register_dir"]

_logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def entrypoint_name(name: str) -> str:
    return name if name.startswith("repnas_") else f"repnas_{name}"


def create_repnas(variant: str, genome: Genome, pretrained: bool = False, **kwargs: Any) -> RepNASNet:
    """Build ``genome`` under the timm variant name ``variant`` (pretrained weights from its cfg).

    ``features_only=True`` gives timm's feature extractor over the four stages (strides 4/8/16/32);
    ``out_indices`` selects among them (an int: the last n). Arguments are checked before anything is built.

    Raises:
        ModelArgumentError: ``out_indices``, ``global_pool`` or another model argument is invalid.
    """
    if kwargs.get("features_only"):
        if "out_indices" in kwargs:
            kwargs["out_indices"] = tuple(check_feature_indices(kwargs["out_indices"], name="out_indices"))
    elif "out_indices" in kwargs:
        raise ModelArgumentError("out_indices: only used with features_only=True")
    return build_model_with_cfg(
        RepNASNet,
        variant,
        pretrained,
        genome=genome,
        feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2, 3)),
        **kwargs,
    )


default_cfgs = generate_default_cfgs({entrypoint_name(n): default_cfg_for(g) for n, g in zoo.items()})


def _make_entrypoint(variant: str, genome: Genome, doc: str, *, check=None, defaults: dict[str, Any] | None = None):
    """A timm entrypoint building ``genome`` (or a caller's ``genome=``) under ``variant``.

    ``check(pretrained, kwargs)`` runs first; ``defaults`` fill keyword arguments the caller did not give.
    """

    def _entry(pretrained: bool = False, **kwargs: Any) -> RepNASNet:
        if check is not None:
            check(pretrained, kwargs)
        for k, v in (defaults or {}).items():
            kwargs.setdefault(k, v)
        g = as_genome(kwargs.pop("genome", genome))
        if g != genome:
            # another architecture under this name: the config's input fields must describe it (its deployment
            # resolution, stem), not the entrypoint's genome; the caller's own overlay still wins
            kwargs["pretrained_cfg_overlay"] = {**structural_cfg(g), **(kwargs.get("pretrained_cfg_overlay") or {})}
        return create_repnas(variant, g, pretrained=pretrained, **kwargs)

    _entry.__name__ = _entry.__qualname__ = variant
    _entry.__module__ = __name__
    _entry.__doc__ = doc
    return _entry


for _name, _genome in zoo.items():
    globals()[entrypoint_name(_name)] = register_model(_make_entrypoint(
        entrypoint_name(_name), _genome, f"RepNAS genome of ``{_name}`` (see ``search_space.zoo['{_name}']``)."))


# -- exported folders ---------------------------------------------------------------------------------
_registered_dirs: dict[str, Path] = {}


def check_model_name(name: str) -> str:
    """``name`` as a timm entrypoint name (``repnas_`` prefixed); lower-case letters, digits and ``_`` only."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ModelDirError(f"model name {name!r}: use lower-case letters, digits and '_' (starting with a letter)")
    variant = entrypoint_name(name)
    if variant[len("repnas_"):] in zoo:
        raise ModelDirError(f"model name {name!r} is the seed zoo model {variant!r}; choose another name")
    return variant


def read_model_dir(path: str | Path) -> tuple[str, Genome, dict[str, Any], dict[str, Any]]:
    """Parse an exported folder with timm's own reader: (architecture, genome, pretrained_cfg, other model_args)."""
    from timm.models._hub import load_model_config_from_path

    d = Path(path).expanduser()
    cfg_file = d / CONFIG_NAME
    if not d.is_dir():
        raise ModelDirError(f"{d} is not a folder (expected an exported model folder with {CONFIG_NAME})")
    if not cfg_file.is_file():
        raise ModelDirError(f"{d} has no {CONFIG_NAME}; export a trial with `python -m nas.export`")
    try:
        pcfg, arch, model_args = load_model_config_from_path(d)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ModelDirError(f"{cfg_file}: not valid JSON ({e})") from None
    except (KeyError, TypeError, AttributeError) as e:
        raise ModelDirError(f"{cfg_file}: not a timm model config ({type(e).__name__}: {e})") from None
    if not isinstance(arch, str) or not arch.startswith("repnas_"):
        raise ModelDirError(f"{cfg_file}: 'architecture' must name a repnas_ model, got {arch!r}")
    check_model_name(arch)
    model_args = dict(model_args or {})
    if "genome" not in model_args:
        raise ModelDirError(f"{cfg_file}: 'model_args' holds no 'genome'")
    try:
        genome = Genome.from_dict(model_args.pop("genome"))
    except (InvalidGenomeError, TypeError, KeyError) as e:
        raise ModelDirError(f"{cfg_file}: invalid genome: {e}") from None
    if not isinstance(pcfg, dict):
        raise ModelDirError(f"{cfg_file}: 'pretrained_cfg' must be an object")
    for key in ("file", "source"):  # timm's local-dir markers; register_dir points at the weights file itself
        pcfg.pop(key, None)
    return arch, genome, pcfg, model_args


def register_dir(path: str | Path) -> str:
    """Register an exported folder with timm under its ``architecture`` name and return that name.

    Afterwards ``timm.create_model(name, pretrained=True)`` builds the genome and loads the folder's
    ``model.safetensors`` (``pretrained_cfg_overlay=dict(file=...)`` may point elsewhere); any other
    ``num_classes`` re-initializes the classifier as timm does for every pretrained model.
    ``timm.create_model('local-dir:PATH', pretrained=True)`` works too once the folder is registered.
    Registering a folder again re-reads it; another folder with the same name replaces the earlier one.

    Raises:
        ModelDirError: The folder or its ``config.json`` is missing or malformed, or the name is a zoo model's.
    """
    import dataclasses

    from timm.models import PretrainedCfg

    d = Path(path).expanduser().resolve()
    arch, genome, pcfg, model_args = read_model_dir(d)
    fields = {f.name for f in dataclasses.fields(PretrainedCfg)}
    cfg = default_cfg_for(genome, **{k: tuple(v) if isinstance(v, list) and k.endswith(("size", "mean", "std"))
                                     else v for k, v in pcfg.items() if k in fields})
    # structural fields come from the genome, not the folder (older exports wrote first_conv='stem'); the folder's
    # input_size is kept, with the pool_size it gives
    cfg.update(structural_cfg(genome, cfg.get("input_size") or None))
    cfg.pop("architecture", None)
    weights = d / WEIGHTS_NAME
    cfg["file"] = str(weights) if weights.is_file() else None
    cfg["url"] = ""
    prev = _registered_dirs.get(arch)
    if prev is not None and prev != d:
        _logger.warning("%s was registered from %s; %s replaces it", arch, prev, d)
    default_cfgs[arch] = cfg  # read by register_model below (timm's old-style dict cfg)

    def needs_weights(pretrained: bool, kwargs: dict[str, Any]) -> None:
        overlay = kwargs.get("pretrained_cfg_overlay") or {}
        if pretrained and not cfg["file"] and not any(overlay.get(k) for k in ("file", "url", "state_dict")):
            raise ModelDirError(f"{d} holds no {WEIGHTS_NAME} (the trial kept no weights); use pretrained=False")

    entry = _make_entrypoint(arch, genome, f"RepNAS architecture exported to {d}.", check=needs_weights,
                             defaults={k: v for k, v in model_args.items() if k in ("global_pool",)})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm warns on re-registration; replacing another folder is logged above
        register_model(entry)
    globals()[arch] = entry
    _registered_dirs[arch] = d
    return arch


def create_model_from_dir(path: str | Path, *, pretrained: bool | None = None, **kwargs: Any) -> RepNASNet:
    """Register an exported folder and build its model (with its weights where the folder holds them).

    Args:
        path: The folder ``python -m nas.export`` wrote.
        pretrained: Load ``model.safetensors`` (None: when the folder holds it).
        **kwargs: Passed to ``timm.create_model`` (e.g. ``num_classes=100`` re-initializes the classifier).
    """
    import timm

    name = register_dir(path)
    if pretrained is None:
        pretrained = (Path(path).expanduser() / WEIGHTS_NAME).is_file()
    return timm.create_model(name, pretrained=pretrained, **kwargs)
