"""The project's exception hierarchy.

Every error RepNAS raises on purpose derives from :class:`RepNASError`. It lives in
``search_space`` because that package sits at the bottom of the dependency order
(``search_space`` <- ``latency_lut`` <- ``nas``); the other packages subclass it.
"""

from __future__ import annotations

__all__ = ["InvalidGenomeError", "ModelArgumentError", "ModelDirError", "RepNASError"]


class RepNASError(Exception):
    """Root of every error RepNAS raises on purpose."""


class InvalidGenomeError(RepNASError, ValueError):
    """A genome or search-space setting is malformed; the message names the field."""


class ModelDirError(RepNASError, ValueError):
    """An exported model folder (``config.json`` + ``model.safetensors``) is missing, malformed or clashes
    with a registered name."""


class ModelArgumentError(RepNASError, ValueError):
    """An argument of a model or its timm entrypoint (``num_classes``, ``global_pool``, ``out_indices``, ...)
    is invalid; the message names the argument."""
