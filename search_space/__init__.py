"""RepNAS block space: genomes, the model builder, re-parameterization, the seed zoo and the search space.

Importing this package registers ``repnas_<zoo name>`` models with timm.
"""

from __future__ import annotations

from ._errors import InvalidGenomeError as InvalidGenomeError
from ._errors import ModelArgumentError as ModelArgumentError
from ._errors import ModelDirError as ModelDirError
from ._errors import RepNASError as RepNASError
from ._export import OPSET as OPSET
from ._export import export_onnx as export_onnx
from ._export import onnx_forward as onnx_forward
from ._export import onnx_session as onnx_session
from ._genome import DOWNSAMPLES as DOWNSAMPLES
from ._genome import HEADS as HEADS
from ._genome import MIXERS as MIXERS
from ._genome import STAGE_STRIDES as STAGE_STRIDES
from ._genome import STEMS as STEMS
from ._genome import Genome as Genome
from ._genome import StageGenome as StageGenome
from ._genome import check_resolution as check_resolution
from ._model import RepNASNet as RepNASNet
from ._model import as_genome as as_genome
from ._model import build_model as build_model
from ._model import default_cfg_for as default_cfg_for
from ._model import reparameterize as reparameterize
from ._registry import check_model_name as check_model_name
from ._registry import create_model_from_dir as create_model_from_dir
from ._registry import create_repnas as create_repnas
from ._registry import register_dir as register_dir
from ._space import SearchSpace as SearchSpace
from ._units import UNIT_TYPES as UNIT_TYPES
from ._units import build_unit as build_unit
from ._units import space_unit_signatures as space_unit_signatures
from ._units import unit_signatures as unit_signatures
from ._units import units_of as units_of
from ._util import EXPECTED as EXPECTED
from ._util import MUST_BE as MUST_BE
from ._util import atomic_path as atomic_path
from ._util import atomic_write as atomic_write
from ._util import check_int as check_int
from ._util import is_int as is_int
from ._util import is_number as is_number
from ._zoo import ZOO_REFERENCES as ZOO_REFERENCES
from ._zoo import zoo as zoo

__version__ = "0.1.0"

__all__ = [
    "DOWNSAMPLES",
    "EXPECTED",
    "HEADS",
    "MIXERS",
    "MUST_BE",
    "OPSET",
    "STAGE_STRIDES",
    "STEMS",
    "Genome",
    "InvalidGenomeError",
    "ModelArgumentError",
    "ModelDirError",
    "RepNASError",
    "RepNASNet",
    "SearchSpace",
    "StageGenome",
    "UNIT_TYPES",
    "ZOO_REFERENCES",
    "as_genome",
    "atomic_path",
    "atomic_write",
    "build_model",
    "build_unit",
    "check_int",
    "check_resolution",
    "check_model_name",
    "create_model_from_dir",
    "create_repnas",
    "default_cfg_for",
    "export_onnx",
    "is_int",
    "is_number",
    "onnx_forward",
    "onnx_session",
    "register_dir",
    "reparameterize",
    "space_unit_signatures",
    "unit_signatures",
    "units_of",
    "zoo",
]
