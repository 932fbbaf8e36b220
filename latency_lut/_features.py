"""Graph-level cost features of any ``nn.Module``, read from its deployed ONNX graph.

The module is re-parameterized (a deep copy: the caller's module is left alone), exported to ONNX
with :func:`search_space.export_onnx` and shape-inferred. Nodes that only compute shapes (all
inputs constant, or integer outputs) are left out: a compiler folds them away. Elementwise functions of a
single tensor (GELU exported as five nodes, SiLU as two, layer scales, biases) are then fused into one
layer, and into the convolution / matrix product / norm that produces their input where nothing else
reads it (see :func:`fuse_elementwise`), as Core ML's compiler does. Every resulting layer is priced by op
class:

- ``macs``: multiply-accumulates (convolutions, matrix products) or output elements (the rest);
- ``bytes``: activation traffic, i.e. every float tensor a layer reads or writes, at
  ``bytes_per_element`` bytes (2 by default: Core ML runs fp16 on the Neural Engine);
- ``weight_bytes``: parameter traffic (initializers read by the layer);
- ``ops``: layer count (the fixed per-layer dispatch cost of a runtime);
- ``spill128k`` ... ``spill2m``: large-tensor traffic, i.e. for every activation tensor a layer reads or
  writes, its bytes beyond 128 KiB, 256 KiB, 512 KiB, 1 MiB or 2 MiB (:data:`SPILL_THRESHOLDS`). A
  tensor that does not fit an accelerator's on-chip buffers goes through DRAM; small ones do not.

Beside the op-class grid, :data:`BLOCK_FEATURES` describe what the op classes blur together: the
activation function a layer applies (GELU, SiLU, hard-swish; ReLU and clipping are free), LayerNorm
against an unfolded BatchNorm, depthwise kernels 3 / 5 / 7, global poolings (squeeze-excite gates and the
head), attention (softmax layers) and layout ops (reshape/transpose, MobileViT's unfold/fold).

Every quantity is a sum over layers, so the features of a network are the sums of those of its parts
(up to elementwise chains that straddle a part boundary). The result is a flat ``dict[str, float]`` with
keys ``"<class>.<quantity>"`` plus ``"total.<quantity>"``, in a fixed order, deterministic for a given
module and input size.
"""

from __future__ import annotations

import copy
import logging
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path

from torch import nn

__all__ = [
    "ACTIVATION_KINDS",
    "BLOCK_FEATURES",
    "DW_KERNELS",
    "OP_CLASSES",
    "QUANTITIES",
    "SPILL_THRESHOLDS",
    "classify_node",
    "features_from_records",
    "fuse_elementwise",
    "graph_features",
    "graph_node_records",
    "onnx_graph_features",
    "onnx_node_records",
]

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

SPILL_THRESHOLDS: dict[str, int] = {
    "spill128k": 128 * 1024,
    "spill256k": 256 * 1024,
    "spill512k": 512 * 1024,
    "spill1m": 1024 * 1024,
    "spill2m": 2048 * 1024,
}
"""Large-tensor traffic quantities: name -> bytes of a tensor that are free (see the module docstring)."""

QUANTITIES: tuple[str, ...] = ("macs", "bytes", "weight_bytes", "ops", *SPILL_THRESHOLDS)

ACTIVATION_KINDS: tuple[str, ...] = ("gelu", "silu", "hardswish", "sigmoid")
"""Activation functions with a price of their own: elements through each (fused into a layer or not).
``silu`` is ``x * sigmoid(x)``; ``sigmoid`` alone is a gate (squeeze-excite); ReLU, clipping and affine
maps are free."""

DW_KERNELS: tuple[int, ...] = (3, 5, 7)
"""Depthwise kernel sizes with a feature of their own, cumulative: ``dw3.macs`` counts every depthwise MAC
(k > 1), ``dw5.macs`` those of kernels of 5 x 5 and more, ``dw7.macs`` of 7 x 7 and more. With non-negative
prices a larger kernel then never costs less per MAC than a smaller one: the ``dw5`` price is what a 5 x 5
MAC costs beyond a 3 x 3 one."""

BLOCK_FEATURES: tuple[str, ...] = (
    *(f"act_{k}.elems" for k in ACTIVATION_KINDS),
    "layernorm.bytes",
    "batchnorm.bytes",
    *(f"dw{k}.macs" for k in DW_KERNELS),
    "globalpool.ops",
)
"""Block-level features (see the module docstring), after the op-class grid and the totals. Attention and
layout op counts are ``softmax.ops`` and ``data_movement.ops`` of the grid."""

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
        fuse: bool = True,
) -> dict[str, float]:
    """Cost features of ``module``'s deployed form at batch size 1.

    Args:
        module: Any module taking one ``(1, *input_size)`` image tensor. It is not modified: a deep copy is
            put in ``eval()`` mode and re-parameterized (RepNAS blocks and timm ``fuse``/``reparameterize``
            blocks alike) before export, so the features price what would be deployed.
        input_size: ``(C, H, W)`` of one input.
        bytes_per_element: Storage size of one activation or weight element.
        fuse: Price fused layers (:func:`fuse_elementwise`, the default) rather than raw ONNX nodes.

    Returns:
        Feature name -> value, see the module docstring.

    Raises:
        CostModelError: The module cannot be copied, re-parameterized, exported or analysed.
    """
    records = graph_node_records(module, input_size)
    return features_from_records(fuse_elementwise(records) if fuse else records, bytes_per_element=bytes_per_element)


def graph_node_records(module: nn.Module, input_size: Sequence[int] = (3, 224, 224)) -> list[dict]:
    """:func:`onnx_node_records` of ``module``'s deployed ONNX graph (see :func:`graph_features`).

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
            from search_space import export_onnx

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
    return onnx_node_records(proto)


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


def onnx_node_records(proto) -> list[dict]:
    """One record per priced node of a shape-inferred ``onnx.ModelProto``, in graph order.

    Each record holds ``op_type``, ``cls`` (see :data:`OP_CLASSES`), ``macs``, the convolution ``kernel``
    taps, element counts ``in_elems`` (activation inputs), ``out_elems`` (float outputs) and
    ``weight_elems`` (initializers read), the activation ``inputs`` and ``outputs`` names and their element
    counts ``in_sizes`` / ``out_sizes``. Shape-only nodes are left out (a compiler folds them).
    """
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

    records: list[dict] = []
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

        weight_elems = 0
        act_inputs: list[str] = []
        in_sizes: list[int] = []
        for i in ins:
            info = shapes.get(i)
            if info is None or info[0] not in _FLOAT_TYPES:
                continue
            n = math.prod(info[1])
            if i in constants:
                weight_elems += n
            else:
                act_inputs.append(i)
                in_sizes.append(int(n))
        out_sizes = [int(math.prod(info[1])) for info in out_info if info is not None and info[0] in _FLOAT_TYPES]
        out_elems = sum(out_sizes)
        trans_a = bool(attrs["transA"].i) if "transA" in attrs else False
        x_dims = shapes.get(act_inputs[0], (0, ()))[1] if act_inputs else ()
        global_pool = (cls == "pool" and len(x_dims) == 4 and x_dims[2] * x_dims[3] > 1
                       and out_elems == x_dims[0] * x_dims[1])
        kind = _activation_kind([node.op_type])
        records.append({
            "op_type": node.op_type, "cls": cls,
            "macs": int(_macs(node.op_type, ins, out_elems, shapes, trans_a=trans_a)),
            "in_elems": sum(in_sizes), "out_elems": int(out_elems), "weight_elems": int(weight_elems),
            "kernel": kernel, "inputs": tuple(act_inputs), "in_sizes": tuple(in_sizes), "outputs": tuple(outs),
            "out_sizes": tuple(out_sizes), "global_pool": global_pool,
            "acts": ((kind, int(out_elems)),) if kind else (),
        })
    return records


def _activation_kind(op_types: Sequence[str]) -> str | None:
    """Which of :data:`ACTIVATION_KINDS` a node or a fused elementwise chain computes (``None``: a free one)."""
    ops = set(op_types)
    if ops & {"Gelu", "Erf"}:
        return "gelu"
    if "HardSwish" in ops or ("HardSigmoid" in ops and "Mul" in ops):
        return "hardswish"
    if ops & {"Swish", "Silu"} or ("Sigmoid" in ops and "Mul" in ops):
        return "silu"
    if ops & {"Sigmoid", "HardSigmoid"}:
        return "sigmoid"
    return None


_UNARY_CLASSES = ("elementwise", "activation")
_FUSE_INTO = ("conv_dense", "conv_pointwise", "conv_depthwise", "conv_grouped", "matmul", "matmul_dynamic", "norm")


def fuse_elementwise(records: Sequence[dict]) -> list[dict]:
    """Deployed layers of :func:`onnx_node_records`: elementwise functions of one tensor fused, as Core ML does.

    An elementwise or activation node whose activation inputs all derive, through such nodes only, from one
    tensor ``x`` is a pointwise function of ``x`` (GELU exported as Div/Erf/Add/Mul/Mul, SiLU as
    Sigmoid/Mul, a layer scale, a bias): every such chain becomes one ``activation``/``elementwise`` layer
    reading ``x`` and writing the chain's outputs. When ``x`` comes from a convolution, matrix product or
    norm and nothing else reads ``x``, the chain is folded into that layer (it adds its weights, and no
    layer, traffic or MACs). Binary operations on two different tensors (residual adds, gating products)
    stay layers of their own. The records are not modified; new ones are returned in graph order.
    """
    producer: dict[str, int] = {}
    consumers: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        for o in r["outputs"]:
            producer[o] = i
        for t in r["inputs"]:
            consumers.setdefault(t, []).append(i)
    root: dict[str, str] = {}
    chain_of: dict[int, str] = {}
    for i, r in enumerate(records):
        if r["cls"] in _UNARY_CLASSES and r["inputs"]:
            roots = {root.get(t, t) for t in r["inputs"]}
            if len(roots) == 1:
                chain_of[i] = rt = roots.pop()
                for o in r["outputs"]:
                    root[o] = rt
    chains: dict[str, list[int]] = {}
    for i, rt in chain_of.items():
        chains.setdefault(rt, []).append(i)

    layers: dict[int, dict] = {}
    for i, r in enumerate(records):
        if i not in chain_of:
            layers[i] = dict(r)
    for rt, nodes in chains.items():
        members = set(nodes)
        outs, out_sizes = [], []
        for j in nodes:
            for o, n in zip(records[j]["outputs"], records[j]["out_sizes"]):
                if not consumers.get(o) or any(c not in members for c in consumers[o]):
                    outs.append(o)
                    out_sizes.append(n)
        rt_size = next(n for j in nodes for t, n in zip(records[j]["inputs"], records[j]["in_sizes"]) if t == rt)
        weights = sum(records[j]["weight_elems"] for j in nodes)
        kind = _activation_kind([records[j]["op_type"] for j in nodes])
        acts = ((kind, rt_size),) if kind else ()
        p = producer.get(rt)
        if p is not None and p in layers and records[p]["cls"] in _FUSE_INTO and all(
                c in members for c in consumers.get(rt, ())):
            host = layers[p]
            host["outputs"] = tuple(o for o in host["outputs"] if o != rt) + tuple(outs)
            host["out_sizes"] = tuple(n for o, n in zip(records[p]["outputs"], records[p]["out_sizes"]) if o != rt) \
                + tuple(out_sizes)
            host["out_elems"] = sum(host["out_sizes"])
            host["weight_elems"] += weights
            host["acts"] = tuple(host.get("acts", ())) + acts
            continue
        cls = "activation" if any(records[j]["cls"] == "activation" for j in nodes) else "elementwise"
        layers[nodes[0]] = {
            "op_type": records[nodes[0]]["op_type"] if len(nodes) == 1 else "FusedElementwise", "cls": cls,
            "macs": sum(out_sizes), "in_elems": rt_size, "out_elems": sum(out_sizes), "weight_elems": weights,
            "kernel": 1, "inputs": (rt,), "in_sizes": (rt_size,), "outputs": tuple(outs),
            "out_sizes": tuple(out_sizes), "global_pool": False, "acts": acts,
        }
    return [layers[i] for i in sorted(layers)]


def onnx_graph_features(
        proto,
        *,
        bytes_per_element: int = 2,
        fuse: bool = True,
) -> dict[str, float]:
    """Cost features of a shape-inferred ``onnx.ModelProto`` (see the module docstring)."""
    records = onnx_node_records(proto)
    return features_from_records(fuse_elementwise(records) if fuse else records, bytes_per_element=bytes_per_element)


def features_from_records(records: Sequence[dict], *, bytes_per_element: int = 2) -> dict[str, float]:
    """Sum node or layer records (:func:`onnx_node_records`, :func:`fuse_elementwise`) into the feature dict."""
    feats = {f"{c}.{q}": 0.0 for c in OP_CLASSES for q in QUANTITIES}
    for r in records:
        cls = r["cls"]
        sizes = [n * bytes_per_element for n in (*r["in_sizes"], *r["out_sizes"])]
        feats[f"{cls}.macs"] += float(r["macs"])
        feats[f"{cls}.bytes"] += float(sum(sizes))
        feats[f"{cls}.weight_bytes"] += float(r["weight_elems"] * bytes_per_element)
        feats[f"{cls}.ops"] += 1.0
        for q, limit in SPILL_THRESHOLDS.items():
            feats[f"{cls}.{q}"] += float(sum(b - limit for b in sizes if b > limit))
    for q in QUANTITIES:
        feats[f"total.{q}"] = float(sum(feats[f"{c}.{q}"] for c in OP_CLASSES))
    feats.update(_block_features(records, bytes_per_element))
    return feats


def _block_features(records: Sequence[dict], bytes_per_element: int) -> dict[str, float]:
    """The :data:`BLOCK_FEATURES` of layer records."""
    out = dict.fromkeys(BLOCK_FEATURES, 0.0)
    for r in records:
        for kind, elems in r.get("acts", ()):
            out[f"act_{kind}.elems"] += float(elems)
        if r["cls"] == "norm":
            key = "batchnorm.bytes" if r["op_type"] == "BatchNormalization" else "layernorm.bytes"
            out[key] += float(sum((*r["in_sizes"], *r["out_sizes"])) * bytes_per_element)
        elif r["cls"] == "conv_depthwise" and r["kernel"] > 1:
            k = math.isqrt(r["kernel"] - 1) + 1  # ceil(sqrt(taps)): 9 -> 3, 25 -> 5, 49 -> 7
            for d in DW_KERNELS:  # cumulative: a k x k kernel counts for every size up to k
                if d == DW_KERNELS[0] or k >= d:
                    out[f"dw{d}.macs"] += float(r["macs"])
        elif r.get("global_pool"):
            out["globalpool.ops"] += 1.0
    return out


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
