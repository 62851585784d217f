#!/usr/bin/env python3
"""Writes the ResNet parity fixtures of tests/models/test_resnet_parity.cpp (run by hand, not by CI).

References: torchvision's ResNet (Debian's python3-torchvision 0.14, on python3-torch 1.13) for
resnet18, resnet50 and resnet18_cifar (torchvision's resnet18 with the 3x3 stride-1 stem and no
max-pool, as PyCIL's convs/resnet.py and Mammoth build it), and PyCIL's convs/cifar_resnet.py
(github.com/G-U-N/PyCIL, commit 87cc4110d60765dc3f64af7ef7a693efed8418ff) for resnet32_cifar.
PyCIL is not vendored; export the one file and point PYCIL_SRC at it (the case is skipped without):

    git --git-dir=<mirror of PyCIL> show 87cc411:convs/cifar_resnet.py > /tmp/cifar_resnet.py
    PYCIL_SRC=/tmp/cifar_resnet.py /usr/bin/python3 scripts/make_resnet_fixtures.py [OUT_DIR]

OUT_DIR defaults to tests/models/fixtures. Per case it writes
  resnet_<case>_state_dict.txt   the reference's state_dict: one "name dtype shape" line per tensor
                                 (parameters and buffers, in state_dict order; shape as 64x3x7x7)
  resnet_<case>_io.safetensors   __input (random normal), __features (the pooled features before
                                 fc) and __logits (fc's output), float32, eval mode

The weights are not stored (torchvision's ResNet-18 alone is 45 MB in float32 and its constructor
has no narrower widths). Every tensor is instead a deterministic function of its index k in the
state_dict and its shape, computed with exact integer arithmetic and the same float64 operations
in this script and in the C++ test (which rebuilds the weights from the state_dict list, writes
them under the reference's names and loads them through backbone.init):
  i = 0..n-1, j = i mod 65521, h = (31 j^2 + 7919 j + 104729 k + 12345) mod 65521,
  u = h / 65521 in [0, 1), z = (u - 0.5) * sqrt(12) (mean 0, variance ~1); then
  running_var: 0.5 + u;  running_mean: 0.3 z;  num_batches_tracked: 0;
  weights with >= 2 dims (convs, fc): z * (1 / sqrt(fan_in)), fan_in = numel / shape[0];
  other weights (BatchNorm): 1 + 0.3 z;  biases: 0.3 z;  each cast to float32 at the end.
So every parameter and running statistic is O(1) and different (torchvision's init, BatchNorm
weight 1 / bias 0 / mean 0 / var 1, would hide a missing or misplaced BatchNorm), and the
features stay O(1) through the depth.

numpy and the safetensors package are not needed: the files are written by hand.
"""
import importlib.util
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_io import write_safetensors  # noqa: E402
import torchvision

P = 65521


def pattern_tensor(k, name, shape):
    """The weights formula of the docstring (mirrored by make_weight in test_resnet_parity.cpp)."""
    n = math.prod(shape)
    j = torch.arange(n, dtype=torch.int64) % P
    h = (j * j * 31 + j * 7919 + k * 104729 + 12345) % P
    u = h.to(torch.float64) / P
    z = (u - 0.5) * math.sqrt(12.0)
    if name.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
    if name.endswith("running_var"):
        v = 0.5 + u
    elif name.endswith("running_mean"):
        v = 0.3 * z
    elif len(shape) >= 2:
        v = z * (1.0 / math.sqrt(n // shape[0]))
    elif name.endswith(".weight"):
        v = 1.0 + 0.3 * z
    else:
        v = 0.3 * z
    return v.to(torch.float32).reshape(shape)


def fill(model):
    with torch.no_grad():
        for k, (name, t) in enumerate(model.state_dict(keep_vars=True).items()):
            t.copy_(pattern_tensor(k, name, tuple(t.shape)))


def torchvision_resnet18():
    return torchvision.models.resnet18(num_classes=5)


def torchvision_resnet50():
    return torchvision.models.resnet50(num_classes=5)


def cifar_resnet18_gray():
    """PyCIL's / Mammoth's CIFAR ResNet-18: torchvision's with a 3x3 stride-1 stem and no max-pool
    (here with one input channel, as clrun builds it for Fashion-MNIST)."""
    model = torchvision.models.resnet18(num_classes=5)
    model.conv1 = torch.nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False)  # keeps its state_dict slot
    model.maxpool = torch.nn.Identity()
    return model


def pycil_resnet32():
    path = os.environ.get("PYCIL_SRC")
    if not path:
        return None
    spec = importlib.util.spec_from_file_location("pycil_cifar_resnet", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.resnet32()
    model.fc = torch.nn.Linear(64, 5)
    return model


class PycilFeatures(torch.nn.Module):
    """PyCIL's CifarResNet returns {'fmaps', 'features'} and never applies its fc."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def features(self, x):
        return self.model(x)["features"]

    def logits(self, x):
        return self.model.fc(self.features(x))


CASES = {
    # name: (builder, input shape [B, C, H, W])
    "resnet18": (torchvision_resnet18, (2, 3, 64, 64)),
    "resnet50": (torchvision_resnet50, (1, 3, 64, 64)),
    "resnet18_cifar_gray": (cifar_resnet18_gray, (2, 1, 28, 28)),
    "resnet32_cifar": (pycil_resnet32, (2, 3, 32, 32)),
}


def torchvision_features(model, x):
    fc = model.fc
    model.fc = torch.nn.Identity()
    features = model(x)
    model.fc = fc
    return features, model(x)


def write_safetensors_f32(path, tensors):
    write_safetensors(path, tensors, dtype=torch.float32)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "models",
                                                              "fixtures")
    os.makedirs(out, exist_ok=True)
    print("torch", torch.__version__, "torchvision", torchvision.__version__)
    for i, (case, (build, input_shape)) in enumerate(CASES.items()):
        model = build()
        if model is None:
            print(case, "skipped: set PYCIL_SRC to PyCIL's convs/cifar_resnet.py")
            continue
        fill(model)
        model.eval()
        x = torch.randn(input_shape, generator=torch.Generator().manual_seed(300 + i))
        with torch.no_grad():
            if case == "resnet32_cifar":
                wrapped = PycilFeatures(model)
                features, logits = wrapped.features(x), wrapped.logits(x)
            else:
                features, logits = torchvision_features(model, x)
        lines = []
        for name, t in model.state_dict().items():
            dtype = {torch.float32: "F32", torch.int64: "I64"}[t.dtype]
            lines.append(f"{name} {dtype} {'x'.join(str(d) for d in t.shape) or '-'}")
        with open(os.path.join(out, f"resnet_{case}_state_dict.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
        write_safetensors_f32(os.path.join(out, f"resnet_{case}_io.safetensors"),
                          [("__input", x), ("__features", features), ("__logits", logits)])
        print(case, "tensors", len(lines), "features", tuple(features.shape), "std %.3f" % features.std().item(),
              "logits std %.3f" % logits.std().item())


if __name__ == "__main__":
    main()
