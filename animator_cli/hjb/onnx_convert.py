"""Exact conversion of antelopev2's glintr100.onnx to an arcface_torch iresnet state dict.

The ONNX file is arcface_torch's iresnet exported by torch in eval mode, which folds every BatchNorm that directly
follows a Conv or the fc Gemm (stem bn1, block bn2/bn3, the shortcut BN, the ``features`` BN) into that layer's
weights and bias. The torch model keeps those BNs, so a folded one becomes an identity BN that carries the bias
(weight 1, running mean 0, running variance 1 − eps, so x / sqrt(var + eps) is x): the converted network computes
the same function. BNs that follow an Add or a PReLU (block bn1, the final bn2) stay BatchNormalization nodes and
are copied with their statistics (a different epsilon is moved into the variance).

The graph is walked in its (topological) node order. Each residual block ends at an Add; inside a block, the BN
and the Conv that read the block's input are bn1 and the shortcut conv, the other Convs are conv1 and conv2.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from animator_cli.hjb.iresnet import BN_EPS

_BN = ("weight", "bias", "running_mean", "running_var")


class NotIResNet(ValueError):
    """The graph does not have the iresnet layout."""


@dataclass
class _Layer:
    """One weight-bearing node: a Conv/Gemm with its (possibly folded) BN, a lone BN, or a PReLU."""

    kind: str  # "conv", "gemm", "bn", "prelu", "add"
    source: str  # name of the tensor it reads
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    bn: dict[str, torch.Tensor] | None = None  # the BN applied after a conv/gemm


def _identity_bn(bias: torch.Tensor) -> dict[str, torch.Tensor]:
    ones = torch.ones_like(bias)
    return dict(zip(_BN, (ones, bias.clone(), torch.zeros_like(bias), ones - BN_EPS), strict=True))


def _layers(path: Path) -> list[_Layer]:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    init = {t.name: torch.from_numpy(numpy_helper.to_array(t).astype(np.float32).copy()) for t in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    layers: list[_Layer] = []
    attached: set[str] = set()  # outputs of BN nodes already taken as the BN of the conv/gemm before them
    for node in graph.node:
        if node.op_type == "BatchNormalization" and node.output[0] in attached:
            continue
        if node.op_type in ("Conv", "Gemm"):
            weight = init[node.input[1]]
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "Gemm" and not attrs.get("transB", 0):
                weight = weight.T.contiguous()
            bias = init[node.input[2]] if len(node.input) > 2 and node.input[2] else torch.zeros(weight.shape[0])
            layer = _Layer("conv" if node.op_type == "Conv" else "gemm", node.input[0], {"weight": weight})
            after = consumers.get(node.output[0], [])
            if len(after) == 1 and after[0].op_type == "BatchNormalization":
                layer.bn = _bn_params(after[0], init)
                if node.op_type == "Gemm":
                    layer.tensors["bias"] = bias
                elif bias.abs().max() > 0:
                    raise NotIResNet(f"conv {node.name} has a bias and an unfolded BN")
                attached.add(after[0].output[0])
            elif node.op_type == "Gemm":  # the features BN is folded into the fc
                layer.tensors["bias"], layer.bn = bias, _identity_bn(torch.zeros_like(bias))
            else:
                layer.bn = _identity_bn(bias)
            layers.append(layer)
        elif node.op_type == "BatchNormalization":
            layers.append(_Layer("bn", node.input[0], bn=_bn_params(node, init)))
        elif node.op_type == "PRelu":
            layers.append(_Layer("prelu", node.input[0], {"weight": init[node.input[1]].flatten()}))
        elif node.op_type == "Add":
            layers.append(_Layer("add", node.output[0]))
    return layers


def _bn_params(node, init: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    import onnx

    eps = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "epsilon"), 1e-5)
    scale, bias, mean, var = (init[name] for name in node.input[1:5])
    return dict(zip(_BN, (scale, bias, mean, var + (eps - BN_EPS)), strict=True))


def _put_bn(state: dict[str, torch.Tensor], prefix: str, bn: dict[str, torch.Tensor]) -> None:
    for name, value in bn.items():
        state[f"{prefix}.{name}"] = value


def _expect(layers: Iterator[_Layer], kind: str) -> _Layer:
    layer = next(layers, None)
    if layer is None or layer.kind != kind:
        raise NotIResNet(f"expected {kind}, found {layer.kind if layer else 'the end of the graph'}")
    return layer


def state_dict_from_onnx(path: Path) -> dict[str, torch.Tensor]:
    """arcface_torch state dict (without ``num_batches_tracked``) of an iresnet exported to ONNX; raises
    NotIResNet when the graph has another layout."""
    layers = _layers(Path(path))
    stream = iter(layers)
    state: dict[str, torch.Tensor] = {}
    stem = _expect(stream, "conv")
    state["conv1.weight"] = stem.tensors["weight"]
    _put_bn(state, "bn1", stem.bn)
    state["prelu.weight"] = _expect(stream, "prelu").tensors["weight"]
    stage, index, width = 0, 0, None
    while True:
        block = []
        for layer in stream:
            block.append(layer)
            if layer.kind in ("add", "gemm"):
                break
        if not block or block[-1].kind == "gemm":
            break
        block_input = block[0].source
        convs = [layer for layer in block if layer.kind == "conv"]
        shortcut = [layer for layer in convs if layer.source == block_input]
        main = [layer for layer in convs if layer.source != block_input]
        bns = [layer for layer in block if layer.kind == "bn"]
        prelus = [layer for layer in block if layer.kind == "prelu"]
        if len(main) != 2 or len(bns) != 1 or len(prelus) != 1 or len(shortcut) > 1 or bns[0].source != block_input:
            raise NotIResNet(f"residual block {len(state)} does not have the IBasicBlock layout")
        if shortcut or main[0].tensors["weight"].shape[0] != width:
            stage, index, width = stage + 1, 0, main[0].tensors["weight"].shape[0]
        prefix = f"layer{stage}.{index}"
        _put_bn(state, f"{prefix}.bn1", bns[0].bn)
        state[f"{prefix}.conv1.weight"] = main[0].tensors["weight"]
        _put_bn(state, f"{prefix}.bn2", main[0].bn)
        state[f"{prefix}.prelu.weight"] = prelus[0].tensors["weight"]
        state[f"{prefix}.conv2.weight"] = main[1].tensors["weight"]
        _put_bn(state, f"{prefix}.bn3", main[1].bn)
        if shortcut:
            state[f"{prefix}.downsample.0.weight"] = shortcut[0].tensors["weight"]
            _put_bn(state, f"{prefix}.downsample.1", shortcut[0].bn)
        index += 1
    if len(block) != 2 or block[0].kind != "bn":
        raise NotIResNet("the head is not bn2 → fc → features")
    _put_bn(state, "bn2", block[0].bn)
    fc = block[1]
    state["fc.weight"], state["fc.bias"] = fc.tensors["weight"], fc.tensors["bias"]
    _put_bn(state, "features", fc.bn)
    return state
