#!/usr/bin/env python3
"""Writes the ViT parity fixtures of tests/models/test_vit_parity.cpp (run by hand, not by CI).

Reference: timm v0.9.16 (github.com/huggingface/pytorch-image-models, tag v0.9.16), on PyTorch
1.13 (Debian's python3-torch). timm is not vendored; export its source to /tmp and run:

    git --git-dir=<mirror of pytorch-image-models> archive v0.9.16 timm | tar -x -C /tmp/timm_src
    PYTHONPATH=/tmp/timm_src /usr/bin/python3 scripts/make_vit_fixtures.py [OUT_DIR]

OUT_DIR defaults to tests/models/fixtures. For each case it writes two safetensors files:
  vit_<case>.safetensors     the model's state_dict under timm's names (incl. head.weight/bias),
                             loaded by clrun with strict: true
  vit_<case>_io.safetensors  __input [4, C, H, W] (random normal),
                             __features = forward_head(forward_features(x), pre_logits=True),
                             __logits = model(x)
All float32, eval mode. Every parameter is redrawn at O(1) scale after timm's init (timm's
default init -- zero biases, cls_token ~1e-6, weights ~0.02 -- would hide mistakes such as a
missing bias, a wrong pooling token or a misplaced scale), so the fixtures hold the O(1) weights only.

numpy and the safetensors package are not needed: the files are written by hand.
"""
import os
import sys
import types

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_io import write_safetensors  # noqa: E402

# timm imports these optional hub packages at module level; pretrained=False never uses them.
for name in ("safetensors", "safetensors.torch", "huggingface_hub"):
    if name not in sys.modules:
        try:
            __import__(name)
        except ImportError:
            mod = types.ModuleType(name)
            sys.modules[name] = mod
sys.modules["safetensors.torch"].load_file = None
sys.modules["safetensors.torch"].save_file = None

from timm.models.vision_transformer import VisionTransformer  # noqa: E402
import timm  # noqa: E402

CASES = {
    # name: (VisionTransformer kwargs, input channels, input size)
    "token": (dict(img_size=32, patch_size=8, in_chans=3, num_classes=5, embed_dim=32, depth=2, num_heads=2,
                   global_pool="token"), 3, 32),
    "avg": (dict(img_size=32, patch_size=8, in_chans=3, num_classes=5, embed_dim=32, depth=2, num_heads=2,
                 global_pool="avg"), 3, 32),
    "gray_noqkvbias": (dict(img_size=28, patch_size=7, in_chans=1, num_classes=5, embed_dim=32, depth=2, num_heads=2,
                            qkv_bias=False, global_pool="token"), 1, 28),
}


def redraw_o1(model, gen):
    """Every parameter redrawn: LayerNorm weights 1 + 0.3 noise; biases, cls_token, pos_embed normal * 0.5."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            is_norm_weight = name.endswith(".weight") and p.dim() == 1
            if is_norm_weight:
                p.copy_(1.0 + 0.3 * noise)
            elif p.dim() >= 2 and name not in ("cls_token", "pos_embed"):
                # weights: normal * 1.5 / sqrt(fan_in), so each layer's outputs are O(1) (a plain
                # normal * 0.5 would grow activations ~3x per layer and saturate the softmax).
                fan_in = p[0].numel()
                p.copy_(noise * (1.5 / fan_in ** 0.5))
            else:
                p.copy_(0.5 * noise)  # biases, cls_token, pos_embed


def write_safetensors_f32(path, tensors):
    write_safetensors(path, tensors, dtype=torch.float32)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "models",
                                                              "fixtures")
    os.makedirs(out, exist_ok=True)
    print("timm", timm.__version__, "torch", torch.__version__)
    for i, (case, (kwargs, chans, size)) in enumerate(CASES.items()):
        torch.manual_seed(100 + i)
        model = VisionTransformer(**kwargs)
        gen = torch.Generator().manual_seed(200 + i)
        redraw_o1(model, gen)
        model.eval()
        x = torch.randn((4, chans, size, size), generator=gen)
        with torch.no_grad():
            features = model.forward_head(model.forward_features(x), pre_logits=True)
            logits = model(x)
        params = list(model.state_dict().items())
        write_safetensors_f32(os.path.join(out, f"vit_{case}.safetensors"), params)
        write_safetensors_f32(os.path.join(out, f"vit_{case}_io.safetensors"),
                          [("__input", x), ("__features", features), ("__logits", logits)])
        print(case, "features", tuple(features.shape), "std %.3f" % features.std().item(), "logits std %.3f"
              % logits.std().item(), "params", [n for n, _ in params if "blocks" not in n])


if __name__ == "__main__":
    main()
