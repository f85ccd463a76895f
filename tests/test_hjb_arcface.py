"""The HJB ArcFace: arcface_torch iresnet layout, strict .pth loading, exact conversion from glintr100.onnx."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from animator_cli.errors import WeightsError
from animator_cli.hjb import IResNet, IResNetConfig, iresnet_from_state_dict, load_arcface
from animator_cli.hjb.onnx_convert import state_dict_from_onnx
from animator_cli.weights.home import WeightsHome
from animator_cli.weights.tiny import arcface as tiny_arcface


def _bn_scale_shift(bn: torch.nn.Module) -> tuple[np.ndarray, np.ndarray]:
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()
    return scale, (bn.bias - bn.running_mean * torch.from_numpy(scale)).detach().numpy()


class _Exporter:
    """Writes an iresnet as torch's eval-mode ONNX export does: BNs after a conv or the fc folded into it."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def _name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"

    def _const(self, array: np.ndarray) -> str:
        name = self._name("w")
        self.inits.append(numpy_helper.from_array(np.asarray(array, np.float32), name))
        return name

    def conv_bn(self, x: str, conv: torch.nn.Conv2d, bn: torch.nn.Module) -> str:
        scale, shift = _bn_scale_shift(bn)
        weight = conv.weight.detach().numpy() * scale[:, None, None, None]
        out = self._name("conv")
        self.nodes.append(helper.make_node(
            "Conv", [x, self._const(weight), self._const(shift)], [out], kernel_shape=list(conv.kernel_size),
            strides=list(conv.stride), pads=[conv.padding[0]] * 4))
        return out

    def bn(self, x: str, bn: torch.nn.Module) -> str:
        out = self._name("bn")
        params = [self._const(t.detach().numpy()) for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var)]
        self.nodes.append(helper.make_node("BatchNormalization", [x, *params], [out], epsilon=bn.eps))
        return out

    def prelu(self, x: str, prelu: torch.nn.PReLU) -> str:
        out = self._name("prelu")
        self.nodes.append(helper.make_node("PRelu", [x, self._const(prelu.weight.detach().numpy()[:, None, None])],
                                           [out]))
        return out

    def add(self, a: str, b: str) -> str:
        out = self._name("add")
        self.nodes.append(helper.make_node("Add", [a, b], [out]))
        return out

    def export(self, model: IResNet, path: Path) -> None:
        x = self.prelu(self.conv_bn("input.1", model.conv1, model.bn1), model.prelu)
        for stage in range(1, len(model.config.layers) + 1):
            for block in getattr(model, f"layer{stage}"):
                out = self.conv_bn(self.prelu(self.conv_bn(self.bn(x, block.bn1), block.conv1, block.bn2),
                                              block.prelu), block.conv2, block.bn3)
                shortcut = x if block.downsample is None else self.conv_bn(x, *block.downsample)
                x = self.add(out, shortcut)
        flat = self._name("flat")
        self.nodes.append(helper.make_node("Flatten", [self.bn(x, model.bn2)], [flat], axis=1))
        scale, shift = _bn_scale_shift(model.features)
        weight = model.fc.weight.detach().numpy() * scale[:, None]
        bias = model.fc.bias.detach().numpy() * scale + shift
        self.nodes.append(helper.make_node("Gemm", [flat, self._const(weight), self._const(bias)], ["1333"],
                                           transB=1))
        graph = helper.make_graph(
            self.nodes, "iresnet", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])],
            [helper.make_tensor_value_info("1333", TensorProto.FLOAT, ["N", model.config.features])], self.inits)
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.fixture
def tiny_model() -> IResNet:
    return tiny_arcface.tiny_iresnet(3, IResNetConfig(layers=(2, 1, 2, 1), widths=(8, 16, 16, 24), stem=8,
                                                      features=16))


def test_full_size_layout_matches_arcface_torch():
    model = IResNet()
    keys = model.state_dict().keys()
    assert {k.split(".")[0] for k in keys} == {"conv1", "bn1", "prelu", "layer1", "layer2", "layer3", "layer4",
                                               "bn2", "fc", "features"}
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [3, 13, 30, 3]
    assert model.fc.weight.shape == (512, 512 * 7 * 7)
    assert tuple(model.state_dict()["layer3.0.downsample.0.weight"].shape) == (256, 128, 1, 1)
    assert sum(p.numel() for p in model.parameters()) == 65_156_160  # glintr100's 65.2M
    with torch.no_grad():
        assert IResNet(IResNetConfig(layers=(1, 1, 1, 1)))(torch.zeros(2, 3, 112, 112)).shape == (2, 512)


def test_loads_tiny_pth_strictly_frozen(tmp_path):
    path = tiny_arcface.write(tmp_path, seed=0)
    model = load_arcface(WeightsHome(tmp_path))
    assert model.config == tiny_arcface.CONFIG and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    saved = torch.load(path, weights_only=True)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0)
    # a missing key is refused (strict loading) with a WeightsError naming the file
    del saved["layer2.0.bn3.running_var"]
    torch.save(saved, path)
    with pytest.raises(WeightsError, match="glintr100_torch.pth"):
        load_arcface(WeightsHome(tmp_path))


def test_onnx_conversion_is_exact(tmp_path, tiny_model):
    import onnxruntime

    home = WeightsHome(tmp_path)
    home.antelopev2_dir.mkdir(parents=True)
    onnx_path = home.antelopev2_dir / "glintr100.onnx"
    _Exporter().export(tiny_model, onnx_path)
    converted = load_arcface(home)  # no .pth: converted from the ONNX file
    assert converted.config == tiny_model.config
    pixels = np.random.default_rng(0).uniform(-1, 1, (3, 3, 112, 112)).astype(np.float32)
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"input.1": pixels})[0]
    with torch.no_grad():
        got = converted(torch.from_numpy(pixels)).numpy()
        original = tiny_model(torch.from_numpy(pixels)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got, original, rtol=1e-4, atol=1e-5)
    # the weights of an unfolded BN are carried over as they are
    state = state_dict_from_onnx(onnx_path)
    torch.testing.assert_close(state["layer1.1.bn1.running_var"], tiny_model.layer1[1].bn1.running_var)
    assert iresnet_from_state_dict(state).config == tiny_model.config


def test_missing_or_foreign_weights_are_weights_errors(tmp_path, tiny_home):
    with pytest.raises(WeightsError, match="glintr100_torch.pth.*glintr100.onnx"):
        load_arcface(WeightsHome(tmp_path))
    # the tiny antelopev2 recogniser is not an iresnet: refused, not mis-converted
    foreign = WeightsHome(tmp_path / "home")
    foreign.antelopev2_dir.mkdir(parents=True)
    (foreign.antelopev2_dir / "glintr100.onnx").write_bytes((tiny_home.antelopev2_dir / "glintr100.onnx").read_bytes())
    with pytest.raises(WeightsError, match="cannot be converted"):
        load_arcface(foreign)
