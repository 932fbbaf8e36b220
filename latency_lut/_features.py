"""Graph-level cost features of any ``nn.Module``, read from its deployed ONNX graph.

The module is re-parameterized (a deep copy: the caller's module is left alone), exported to ONNX
with :func:`search_space._export.export_onnx`, shape-inferred, and every node is priced by op class:

- ``macs``: multiply-accumulates (convolutions, matrix products) or element operations (the rest);
- ``bytes``: activation traffic, i.e. every float tensor a node reads or writes, at
  ``bytes_per_element`` bytes (2 by default: Core ML runs fp16 on the Neural Engine);
- ``weight_bytes``: parameter traffic (initializers read by the node);
- ``ops``: node count (the fixed per-layer dispatch cost of a runtime).

Nodes that only compute shapes (all inputs constant, or integer outputs) are left out: a compiler
folds them away. The result is a flat ``dict[str, float]`` with keys ``"<class>.<quantity>"`` plus
``"total.<quantity>"``, in a fixed order, deterministic for a given module and input size.
"""

from __future__ import annotations

import copy
import logging
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path

from torch import nn

__all__ = ["OP_CLASSES", "QUANTITIES", "classify_node", "graph_features", "onnx_graph_features"]

_logger = logging.getLogger(__name__)

OP_CLASSES: tuple[str, ...] = (
    "conv_dense",
    "conv_pointwise",
    "conv_depthwise",
    "conv_grouped",
    "matmul",
    "matmul_dynamic",
    "norm",
    "activation",
    "elementwise",
    "softmax",
    "pool",
    "data_movement",
    "other",
)
"""Op classes, in the order their features appear. ``conv_dense`` is a k x k (k > 1) dense convolution,
``conv_pointwise`` a dense 1 x 1 one. ``matmul`` multiplies by a weight (linear layers), ``matmul_dynamic``
multiplies two activations (attention's ``Q K^T`` and ``A V``)."""

QUANTITIES: tuple[str, ...] = ("macs", "bytes", "weight_bytes", "ops")

_NORM = {"BatchNormalization", "LayerNormalization", "GroupNormalization", "InstanceNormalization",
         "LpNormalization", "MeanVarianceNormalization", "RMSNormalization", "SimplifiedLayerNormalization"}
_ACT = {"Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Gelu", "Sigmoid", "HardSigmoid", "HardSwish",
        "Swish", "Silu", "Mish", "Tanh", "Erf", "Softplus", "Softsign", "Clip", "ThresholdedRelu", "Exp", "Log",
        "Sqrt", "Reciprocal", "Neg", "Abs", "Sin", "Cos"}
_ELTWISE = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "Equal", "Less", "Greater",
            "And", "Or", "Not", "Mod", "BitShift", "Cast"}
_SOFTMAX = {"Softmax", "LogSoftmax"}
_POOL = {"GlobalAveragePool", "GlobalMaxPool", "AveragePool", "MaxPool", "LpPool", "ReduceMean", "ReduceMax",
         "ReduceMin", "ReduceSum", "ReduceL2", "ReduceProd", "ReduceSumSquare", "ReduceLogSumExp"}
_MOVE = {"Reshape", "Transpose", "Concat", "Split", "Slice", "Gather", "GatherElements", "Flatten", "Squeeze",
         "Unsqueeze", "Expand", "Tile", "Pad", "Resize", "Upsample", "DepthToSpace", "SpaceToDepth", "Identity",
         "ScatterND", "ScatterElements"}
_FREE = {"Constant", "ConstantOfShape", "Shape", "Size", "Range", "Dropout"}
_FLOAT_TYPES = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16 (onnx.TensorProto enum)


def graph_features(
        module: nn.Module,
        input_size: Sequence[int] = (3, 224, 224),
        *,
        bytes_per_element: int = 2,
) -> dict[str, float]:
    """Cost features of ``module``'s deployed form at batch size 1.

    Args:
        module: Any module taking one ``(1, *input_size)`` image tensor. It is not modified: a deep copy is
            put in ``eval()`` mode and re-parameterized (RepNAS blocks and timm ``fuse``/``reparameterize``
            blocks alike) before export, so the features price what would be deployed.
        input_size: ``(C, H, W)`` of one input.
        bytes_per_element: Storage size of one activation or weight element.

    Returns:
        Feature name -> value, see the module docstring.

    Raises:
        CostModelError: The module cannot be copied, re-parameterized, exported or analysed.
    """
    import onnx

    from ._costmodel import CostModelError

    input_size = tuple(int(s) for s in input_size)
    if len(input_size) != 3 or min(input_size) <= 0:
        raise CostModelError(f"input_size must be (C, H, W) with positive sizes, got {input_size!r}")
    name = type(module).__name__
    try:
        deployed = _deployed_copy(module)
    except Exception as e:  # noqa: BLE001 - any failure here means the module cannot be priced
        raise CostModelError(f"cannot re-parameterize {name} for pricing: {type(e).__name__}: {e}") from e
    with tempfile.TemporaryDirectory(prefix="repnas_features_") as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            from search_space._export import export_onnx

            export_onnx(deployed, path, input_size)
        except Exception as e:  # noqa: BLE001
            raise CostModelError(
                f"cannot price {name} at input {input_size}: ONNX export failed ({type(e).__name__}: {e})"
            ) from e
        try:
            proto = onnx.load(str(path))
            proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
        except Exception as e:  # noqa: BLE001
            raise CostModelError(f"cannot analyse the ONNX graph of {name}: {type(e).__name__}: {e}") from e
    return onnx_graph_features(proto, bytes_per_element=bytes_per_element)


def _deployed_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` in eval mode with every re-parameterizable block folded.

    :func:`search_space.reparameterize` folds every block with a ``reparameterize()`` method (RepNAS and
    timm's MobileOne/FastViT blocks); timm blocks that fold through ``fuse()`` instead (RepViT's
    ``ConvNorm``/``RepVggDw``, EfficientViT, ...) are then replaced by their fused module, as
    ``timm.utils.reparameterize_model`` does (that function is not used as is: timm's FastViT blocks do not
    tolerate a second ``reparameterize()``).
    """
    import search_space

    deployed = search_space.reparameterize(copy.deepcopy(module).eval())

    def _fuse(parent: nn.Module) -> None:
        for child_name, child in list(parent.named_children()):
            fuse = getattr(child, "fuse", None)
            if callable(fuse) and not hasattr(child, "reparameterize"):
                fused = fuse()
                if isinstance(fused, nn.Module):
                    setattr(parent, child_name, fused)
                    child = fused
            _fuse(child)

    _fuse(deployed)
    return deployed.eval()


def classify_node(
        op_type: str,
        *,
        group: int = 1,
        in_channels: int | None = None,
        kernel: int = 1,
        dynamic: bool = False,
) -> str:
    """Op class of one ONNX node (see :data:`OP_CLASSES`).

    Args:
        op_type: ONNX operator name.
        group: ``group`` attribute of a convolution.
        in_channels: Input channels of a convolution (to tell depthwise from grouped).
        kernel: Number of taps of a convolution kernel (1 for pointwise).
        dynamic: A matrix product whose operands are all activations (no weight).
    """
    if op_type in ("Conv", "ConvTranspose", "ConvInteger", "QLinearConv"):
        if group > 1 and in_channels is not None and group == in_channels:
            return "conv_depthwise"
        if group > 1:
            return "conv_grouped"
        return "conv_pointwise" if kernel == 1 else "conv_dense"
    if op_type in ("MatMul", "Gemm", "MatMulInteger", "QLinearMatMul", "Einsum"):
        return "matmul_dynamic" if dynamic else "matmul"
    if op_type in _NORM:
        return "norm"
    if op_type in _ACT:
        return "activation"
    if op_type in _ELTWISE:
        return "elementwise"
    if op_type in _SOFTMAX:
        return "softmax"
    if op_type in _POOL:
        return "pool"
    if op_type in _MOVE:
        return "data_movement"
    return "other"


def onnx_graph_features(
        proto,
        *,
        bytes_per_element: int = 2,
) -> dict[str, float]:
    """Cost features of a shape-inferred ``onnx.ModelProto`` (see the module docstring)."""
    graph = proto.graph
    shapes: dict[str, tuple[int, tuple[int, ...]]] = {}

    def _record(vi) -> None:
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            return
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in tt.shape.dim)
        shapes[vi.name] = (tt.elem_type, dims)

    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        _record(vi)
    constants = {init.name for init in graph.initializer}
    for init in graph.initializer:
        shapes[init.name] = (init.data_type, tuple(int(d) for d in init.dims))
    for node in graph.node:
        if node.op_type == "Constant":
            constants.update(node.output)
            for attr in node.attribute:
                if attr.name == "value":
                    shapes[node.output[0]] = (attr.t.data_type, tuple(int(d) for d in attr.t.dims))

    feats = {f"{c}.{q}": 0.0 for c in OP_CLASSES for q in QUANTITIES}
    for node in graph.node:
        if node.op_type in _FREE:
            constants.update(node.output)
            continue
        ins = [i for i in node.input if i]
        if all(i in constants for i in ins):  # folded at compile time
            constants.update(node.output)
            continue
        outs = [o for o in node.output if o]
        out_info = [shapes.get(o) for o in outs]
        if all(info is not None and info[0] not in _FLOAT_TYPES for info in out_info):
            continue  # shape / index arithmetic on integer tensors
        attrs = {a.name: a for a in node.attribute}
        group = int(attrs["group"].i) if "group" in attrs else 1
        in_ch = None
        kernel = 1
        if node.op_type in ("Conv", "ConvTranspose") and len(ins) > 1 and ins[1] in shapes:
            w_dims = shapes[ins[1]][1]
            in_ch = w_dims[1] * group if node.op_type == "Conv" else w_dims[0]
            kernel = int(math.prod(w_dims[2:])) if len(w_dims) > 2 else 1
        dynamic = not any(i in constants for i in ins[:2])
        cls = classify_node(node.op_type, group=group, in_channels=in_ch, kernel=kernel, dynamic=dynamic)

        act_elems = 0
        weight_elems = 0
        for i in ins:
            info = shapes.get(i)
            if info is None or info[0] not in _FLOAT_TYPES:
                continue
            n = math.prod(info[1])
            if i in constants:
                weight_elems += n
            else:
                act_elems += n
        out_elems = sum(math.prod(info[1]) for info in out_info if info is not None and info[0] in _FLOAT_TYPES)
        act_elems += out_elems

        trans_a = bool(attrs["transA"].i) if "transA" in attrs else False
        feats[f"{cls}.macs"] += float(_macs(node.op_type, ins, out_elems, shapes, trans_a=trans_a))
        feats[f"{cls}.bytes"] += float(act_elems * bytes_per_element)
        feats[f"{cls}.weight_bytes"] += float(weight_elems * bytes_per_element)
        feats[f"{cls}.ops"] += 1.0

    for q in QUANTITIES:
        feats[f"total.{q}"] = float(sum(feats[f"{c}.{q}"] for c in OP_CLASSES))
    return feats


def _macs(op_type: str, ins: list[str], out_elems: int, shapes: dict, *, trans_a: bool = False) -> int:
    """Multiply-accumulates of a convolution or matrix product; output elements for other nodes."""
    if op_type in ("Conv", "ConvTranspose") and len(ins) > 1 and ins[1] in shapes:
        w = shapes[ins[1]][1]
        if op_type == "Conv":  # each output element reads (C_in / group) * prod(kernel) inputs
            return out_elems * int(math.prod(w[1:]))
        x = shapes.get(ins[0])  # ConvTranspose: each input element scatters into C_out/group * prod(kernel)
        return (math.prod(x[1]) if x else out_elems) * int(math.prod(w[1:]))
    if op_type in ("MatMul", "Gemm") and ins and ins[0] in shapes:
        a = shapes[ins[0]][1]
        if not a:
            return out_elems
        k = a[0] if op_type == "Gemm" and trans_a and len(a) == 2 else a[-1]
        return out_elems * int(k)
    return out_elems
