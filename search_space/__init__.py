"""RepNAS block space: genomes, the model builder, re-parameterization, the seed zoo and the search space.

Importing this package registers ``repnas_<zoo name>`` models with timm.
"""

from __future__ import annotations

from ._errors import InvalidGenomeError as InvalidGenomeError
from ._errors import ModelArgumentError as ModelArgumentError
from ._errors import ModelDirError as ModelDirError
from ._errors import RepNASError as RepNASError
from ._genome import DOWNSAMPLES as DOWNSAMPLES
from ._genome import HEADS as HEADS
from ._genome import MIXERS as MIXERS
from ._genome import STEMS as STEMS
from ._genome import Genome as Genome
from ._genome import StageGenome as StageGenome
from ._model import RepNASNet as RepNASNet
from ._model import build_model as build_model
from ._model import reparameterize as reparameterize
from ._registry import create_model_from_dir as create_model_from_dir
from ._registry import create_repnas as create_repnas
from ._registry import register_dir as register_dir
from ._space import SearchSpace as SearchSpace
from ._zoo import ZOO_REFERENCES as ZOO_REFERENCES
from ._zoo import zoo as zoo

__version__ = "0.1.0"

__all__ = [
    "DOWNSAMPLES",
    "HEADS",
    "MIXERS",
    "STEMS",
    "Genome",
    "InvalidGenomeError",
    "ModelArgumentError",
    "ModelDirError",
    "RepNASError",
    "RepNASNet",
    "SearchSpace",
    "StageGenome",
    "ZOO_REFERENCES",
    "build_model",
    "create_model_from_dir",
    "create_repnas",
    "register_dir",
    "reparameterize",
    "zoo",
]
