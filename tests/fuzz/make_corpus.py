#!/usr/bin/env python3
"""Writes the fuzzers' seed corpora under tests/fuzz/corpus/<target>/ (small, deterministic).

fuzz_config: real configs, each optionally followed by NUL-separated --set overrides.
fuzz_idx:    tiny IDX files, plain and gzipped (one, and two concatenated members).
fuzz_report: metrics.json files (up to three, NUL-separated) from a real run, trimmed.
fuzz_cifar:  a format byte, then tiny CIFAR-10/100 batch files (good, bad label, truncated) or names files.
Run from the repository root: python3 tests/fuzz/make_corpus.py
"""
import gzip, json, os, shutil, struct

root = os.path.join("tests", "fuzz", "corpus")


def put(target, name, data):
    os.makedirs(os.path.join(root, target), exist_ok=True)
    with open(os.path.join(root, target, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def gz(data):
    return gzip.compress(data, compresslevel=9, mtime=0)


for t in ("fuzz_config", "fuzz_idx", "fuzz_report"):  # generated seeds; finding_* ones are kept
    for name in os.listdir(os.path.join(root, t)) if os.path.isdir(os.path.join(root, t)) else []:
        if not name.startswith("finding_"):
            os.remove(os.path.join(root, t, name))

# ---- fuzz_config
def config(name):
    with open(os.path.join("configs", name), "rb") as f:
        return f.read()

for name in ("finetune_split_fmnist.yaml", "ewc_permuted_fmnist.yaml", "migu_cnn_split_fmnist.yaml",
             "replay_split_fmnist.yaml", "lwf_split_fmnist.yaml", "protocols/mammoth_der_500_seq_fmnist.yaml"):
    put("fuzz_config", os.path.basename(name), config(name))
put("fuzz_config", "empty.yaml", "")
put("fuzz_config", "flow.yaml", "{seed: 1, stream: {name: rotated, num_tasks: 3}, strategy: {name: si}}\n")
put("fuzz_config", "overrides.yaml", config("finetune_split_fmnist.yaml") +
    b"\0train.optimizer.lr=0.1\0backbone.hidden=[8, 8]\0stream.class_order={numpy_seed: 1993}\0seed=7")
put("fuzz_config", "overrides_new_keys.yaml", b"name: x\n\0strategy={name: agem, memory: 100}\0train.iterations=5"
    b"\0train.scheduler={name: step, milestones: [1]}\0device=cpu")

# ---- fuzz_idx
def idx(dims, payload):
    return struct.pack(">BBBB", 0, 0, 8, len(dims)) + b"".join(struct.pack(">I", d) for d in dims) + payload

labels = idx([6], bytes([0, 1, 2, 3, 4, 5]))
images = idx([2, 3, 3], bytes(range(18)))
put("fuzz_idx", "labels-idx1-ubyte", labels)
put("fuzz_idx", "images-idx3-ubyte", images)
put("fuzz_idx", "labels-idx1-ubyte.gz", gz(labels))
put("fuzz_idx", "images-idx3-ubyte.gz", gz(images))
put("fuzz_idx", "two-members-idx3-ubyte.gz", gz(images[:10]) + gz(images[10:]))
put("fuzz_idx", "empty-idx2-ubyte", idx([0, 5], b""))

# ---- fuzz_report
run = "results/runs/split/ewc_split_fmnist_seed2_fbf64d4a/metrics.json"
if os.path.exists(run):
    with open(run) as f:
        m = json.load(f)
    for key in ("environment", "per_task", "stream", "strategy_hooks", "strategy_state", "model", "conventions"):
        m.pop(key, None)
else:  # hand-written, the same shape
    m = {"status": "complete", "seed": 2, "scenario": "class-il",
         "config": {"name": "ewc_split_fmnist", "seed": 2, "stream": {"name": "split", "dataset": {"name": "fashion-mnist"}},
                    "strategy": {"name": "ewc", "lambda": 100}},
         "metrics": {"average_accuracy_curve": [98.6, 48.3], "final_average_accuracy": 48.3, "bwt": -97.4, "fwt": None},
         "accuracy": {"matrix": [[98.6, 0.0], [0.0, 96.6]], "random_init": [10.1, 9.8]},
         "task_aware_accuracy": {"matrix": [[99.0, 50.0], [90.0, 99.0]], "metrics": {"final_average_accuracy": 94.5}},
         "timing": {"wall_seconds": 3.2, "train_seconds": 2.9}}
one = json.dumps(m, separators=(",", ":"))
m2 = json.loads(one)
m2["seed"] = 3
m2["config"]["seed"] = 3
m2["metrics"]["final_average_accuracy"] = 22.5
m3 = json.loads(one)
m3["config"]["strategy"]["lambda"] = 7
put("fuzz_report", "one_run.json", one)
put("fuzz_report", "three_runs.json", one + "\0" + json.dumps(m2, separators=(",", ":")) + "\0" + json.dumps(m3))
put("fuzz_report", "running.json", '{"status": "running", "seed": 0}\0' + one)
put("fuzz_report", "small.json", '{"status":"complete","config":{"name":"a","stream":{"name":"split"}},'
    '"metrics":{"final_average_accuracy":null,"average_accuracy_curve":[1,2.5]},'
    '"accuracy":{"matrix":[[1],[2,3]],"random_init":[]}}')

# ---- fuzz_cifar: the first byte picks the format (0 cifar10, 1 cifar100 fine, 2 cifar100 coarse),
# the rest is a batch file (label bytes + 3072 pixel bytes per record) or a class-names file.
shutil.rmtree(os.path.join(root, "fuzz_cifar"), ignore_errors=True)

def cifar_records(labels):
    return b"".join(bytes(l) + bytes((7 * i + k) % 256 for k in range(3072)) for i, l in enumerate(labels))

put("fuzz_cifar", "cifar10_two_records", b"\0" + cifar_records([[3], [9]]))
put("fuzz_cifar", "cifar100_fine_two_records", b"\1" + cifar_records([[19, 99], [0, 4]]))
put("fuzz_cifar", "cifar100_coarse_one_record", b"\2" + cifar_records([[7, 35]]))
put("fuzz_cifar", "cifar10_bad_label", b"\0" + cifar_records([[1], [10]]))
put("fuzz_cifar", "cifar10_truncated", b"\0" + cifar_records([[1], [2]])[:-5])
put("fuzz_cifar", "cifar10_names", b"\0" + b"airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n")
put("fuzz_cifar", "cifar100_coarse_names", b"\2" + "".join("c%d\r\n" % k for k in range(20)).encode())


# ---- fuzz_safetensors: tiny files in the format (8-byte LE header length, JSON padded with spaces, data)
def safetensors_corpus():
    shutil.rmtree(os.path.join(root, "fuzz_safetensors"), ignore_errors=True)

    def st(entries, metadata=None, pad=True, tail=b""):
        """entries: (name, dtype, shape, raw bytes) laid out in order."""
        header, data = {}, b""
        if metadata is not None:
            header["__metadata__"] = metadata
        for name, dtype, shape, raw in entries:
            header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
            data += raw
        text = json.dumps(header, separators=(",", ":")).encode()
        if pad:
            text += b" " * (-len(text) % 8)
        return struct.pack("<Q", len(text)) + text + data + tail

    put("fuzz_safetensors", "f32.safetensors", st([("attn.0", "F32", [1, 2, 3], struct.pack("<6f", 0, 1, 2, 3, 4, 5))]))
    put("fuzz_safetensors", "mixed.safetensors", st([
        ("w", "F16", [2], struct.pack("<2e", 1.0, -2.5)), ("b", "BF16", [1], b"\x49\x40"),
        ("ids", "I64", [2], struct.pack("<2q", -1, 7)), ("mask", "BOOL", [3], b"\x00\x01\x01"),
        ("x", "F64", [], struct.pack("<d", 0.5)), ("e", "I32", [0, 4], b""), ("u", "U8", [2], b"\x00\xff"),
        ("s", "I16", [1], struct.pack("<h", -3)), ("c", "I8", [1], b"\x80"), ("d", "U16", [1], b"\x01\x02"),
    ], metadata={"format": "pt"}))
    put("fuzz_safetensors", "empty.safetensors", st([]))
    put("fuzz_safetensors", "metadata.safetensors", st([], metadata={"framework": "pt", "k": "v"}))
    put("fuzz_safetensors", "unpadded.safetensors", st([("a", "I32", [1], struct.pack("<i", 9))], pad=False))
    put("fuzz_safetensors", "gap.safetensors", st([("a", "U8", [1], b"\x01")], tail=b"\x00"))


safetensors_corpus()
