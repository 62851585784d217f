"""safetensors writing and reading for the fixture scripts (make_*_fixtures.py), by hand: numpy
and the safetensors package are not needed. Only F32 and I64 tensors, little-endian (x86)."""
import json
import struct

import torch

DTYPES = {torch.float32: "F32", torch.int64: "I64"}
RDTYPES = {v: k for k, v in DTYPES.items()}


def write_safetensors(path, tensors, dtype=None):
    """`tensors`: (name, tensor) pairs, written in that order; `dtype` converts every tensor first."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors:
        t = t.detach().contiguous().cpu()
        if dtype is not None:
            t = t.to(dtype)
        data = bytes(t.reshape(-1).view(torch.uint8).tolist())  # little-endian on x86
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, e in header.items():
        b, en = e["data_offsets"]
        buf = torch.tensor(list(raw[8 + n + b:8 + n + en]), dtype=torch.uint8)
        out[name] = buf.view(RDTYPES[e["dtype"]]).reshape(e["shape"])
    return out


# ----------------------------------------------------------------------------- io
