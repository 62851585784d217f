#!/usr/bin/env python3
"""Writes the T5 parity fixtures of clrun's C++ T5 tests (run by hand, not by CI).

Reference: a self-contained PyTorch T5ForConditionalGeneration written from the math of
/work/shared/specs/lm-track.md ("T5"), checked against Hugging Face transformers' modeling_t5.py
(not imported; transformers is not needed). Run with Debian's python3-torch (1.13):

    /usr/bin/python3 scripts/make_t5_fixtures.py [OUT_DIR]

OUT_DIR defaults to tests/models/fixtures. For each case (v10: relu FFN, tied embeddings, 2
encoder / 3 decoder layers; gated: gated-gelu FFN, untied lm_head) it writes
  t5_<case>_config.json       a Hugging Face-style config.json
  t5_<case>.safetensors       the weights under Hugging Face's names, float32. Tied case:
                              shared.weight and encoder.embed_tokens.weight (same values), no
                              lm_head.weight. Untied case: shared.weight and lm_head.weight.
  t5_<case>_io.safetensors    input_ids, attention_mask [3, 7] (lengths 7, 5, 3 incl. </s>, right-
                              padded with 0); labels [3, 4] (row 1 is 3 long incl. </s>, then -100);
                              decoder_input_ids [3, 4] (labels shifted right, start 0, -100 -> 0);
                              encoder_states [3, 7, d_model] (after encoder.final_layer_norm, every
                              position incl. padding); logits [3, 4, vocab]; loss (scalar, mean CE over
                              labels != -100); generated [3, T] (greedy, max_new_tokens 8, start token
                              0 not included, 0 after a row's </s>, T = steps taken);
                              position_bucket_encoder / position_bucket_decoder [12, 12] (bucket of
                              query i, key j) and *_wide [40, 40] (reach past max_distance, so the
                              clamp at buckets - 1 is exercised too; it changes a value only for
                              |key - query| >= max_distance, which 12 positions never reach).
Eval mode (no dropout), float32.

Weights (every parameter redrawn so activations are O(1) and greedy decoding is not near-tied;
the Mesh-TF init of the spec, e.g. q ~ N(0, (d_model d_kv)^-0.5), gives near-uniform attention
and tiny logit gaps, which would hide mistakes such as a missing position bias):
  shared.weight ~ N(0, 1) (as Mesh-TF);  q, k ~ N(0, 1) / sqrt(fan_in);
  v, o, wi, wi_0, wi_1, wo, lm_head ~ N(0, 1) * 1.5 / sqrt(fan_in);  relative_attention_bias ~ N(0, 1);
  layer_norm / final_layer_norm weights ~ U(0.5, 1.5).
The weight seed of each case is the first of 1000, 1001, ... for which greedy decoding's top-1 /
top-2 logit gap is >= MIN_MARGIN at every step of every unfinished row and the output shows the
wanted </s> behaviour (v10: some rows stop early, one runs to max_new_tokens; gated: every row
stops before max_new_tokens, so generation ends early). Inputs are drawn from a fixed seed.

Generation re-runs the decoder on the whole prefix at every step (no key/value cache), so it is
independent of the C++ cache. The script asserts: the loss recomputed from the logits; the tied
case's logits recomputed with the written encoder.embed_tokens.weight (read back) as lm_head; greedy's first token equal
to the argmax of a one-step decoder call; bucket values recomputed by hand from the formula; and
every file read back equal to what was written.

numpy and the safetensors package are not needed: the files are written by hand.
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_io import DTYPES, read_safetensors, write_safetensors  # noqa: E402

MAX_NEW_TOKENS = 8
MIN_MARGIN = 0.05
PAD, EOS, START = 0, 1, 0

CASES = {
    "v10": dict(feed_forward_proj="relu", tie_word_embeddings=True, d_model=16, d_ff=24, d_kv=6, num_heads=2,
                num_layers=2, num_decoder_layers=3, vocab_size=40, relative_attention_num_buckets=8,
                relative_attention_max_distance=20, layer_norm_epsilon=1e-6),
    "gated": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False, d_model=16, d_ff=20, d_kv=4,
                  num_heads=4, num_layers=2, num_decoder_layers=2, vocab_size=48, relative_attention_num_buckets=8,
                  relative_attention_max_distance=16, layer_norm_epsilon=1e-6),
}
EXTRA_CONFIG = {"model_type": "t5", "dropout_rate": 0.1, "decoder_start_token_id": 0, "eos_token_id": 1,
                "pad_token_id": 0, "is_encoder_decoder": True}


# ----------------------------------------------------------------------------- parameters
def param_shapes(c):
    """(name, shape) of every parameter under Hugging Face's names, excluding tied aliases."""
    d, inner, h = c["d_model"], c["num_heads"] * c["d_kv"], c["num_heads"]
    gated = c["feed_forward_proj"] == "gated-gelu"
    out = [("shared.weight", (c["vocab_size"], d))]

    def attn(prefix, with_bias):
        r = [(f"{prefix}.q.weight", (inner, d)), (f"{prefix}.k.weight", (inner, d)),
             (f"{prefix}.v.weight", (inner, d)), (f"{prefix}.o.weight", (d, inner))]
        if with_bias:
            r.append((f"{prefix}.relative_attention_bias.weight", (c["relative_attention_num_buckets"], h)))
        return r

    def ffn(prefix):
        wi = [(f"{prefix}.wi_0.weight", (c["d_ff"], d)), (f"{prefix}.wi_1.weight", (c["d_ff"], d))] if gated \
            else [(f"{prefix}.wi.weight", (c["d_ff"], d))]
        return wi + [(f"{prefix}.wo.weight", (d, c["d_ff"]))]

    for i in range(c["num_layers"]):
        b = f"encoder.block.{i}.layer"
        out += attn(f"{b}.0.SelfAttention", i == 0) + [(f"{b}.0.layer_norm.weight", (d,))]
        out += ffn(f"{b}.1.DenseReluDense") + [(f"{b}.1.layer_norm.weight", (d,))]
    out.append(("encoder.final_layer_norm.weight", (d,)))
    for i in range(c["num_decoder_layers"]):
        b = f"decoder.block.{i}.layer"
        out += attn(f"{b}.0.SelfAttention", i == 0) + [(f"{b}.0.layer_norm.weight", (d,))]
        out += attn(f"{b}.1.EncDecAttention", False) + [(f"{b}.1.layer_norm.weight", (d,))]
        out += ffn(f"{b}.2.DenseReluDense") + [(f"{b}.2.layer_norm.weight", (d,))]
    out.append(("decoder.final_layer_norm.weight", (d,)))
    if not c["tie_word_embeddings"]:
        out.append(("lm_head.weight", (c["vocab_size"], d)))
    return out


def draw_params(c, seed):
    g = torch.Generator().manual_seed(seed)
    p = {}
    for name, shape in param_shapes(c):
        if name == "shared.weight" or name.endswith("relative_attention_bias.weight"):
            t = torch.randn(shape, generator=g)
        elif name.endswith("layer_norm.weight"):
            t = 0.5 + torch.rand(shape, generator=g)
        else:  # Linear [out, in]
            gain = 1.0 if name.endswith((".q.weight", ".k.weight")) else 1.5
            t = torch.randn(shape, generator=g) * (gain / shape[1] ** 0.5)
        p[name] = t
    return p


# ----------------------------------------------------------------------------- model
def rms_norm(x, w, eps):
    var = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


def relative_position_bucket(rp, bidirectional, num_buckets, max_distance):
    """rp = key_pos - query_pos (int64 tensor) -> bucket ids."""
    bucket = torch.zeros_like(rp)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (rp > 0).long() * num_buckets
        rp = rp.abs()
    else:
        rp = -torch.min(rp, torch.zeros_like(rp))
    max_exact = num_buckets // 2
    is_small = rp < max_exact
    # float32 log; rp = 0 gives -inf here but is always in the exact branch
    large = max_exact + (torch.log(rp.float() / max_exact) / math.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).long()
    large = torch.clamp(large, max=num_buckets - 1)
    return bucket + torch.where(is_small, rp, large)


def bucket_table(q_len, k_len, bidirectional, c):
    rp = torch.arange(k_len)[None, :] - torch.arange(q_len)[:, None]
    return relative_position_bucket(rp, bidirectional, c["relative_attention_num_buckets"],
                                    c["relative_attention_max_distance"])


def position_bias(p, prefix, q_len, k_len, bidirectional, c):
    """[1, heads, q, k] from block 0's relative_attention_bias."""
    buckets = bucket_table(q_len, k_len, bidirectional, c)
    return p[f"{prefix}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"][buckets].permute(2, 0, 1)[None]


def attention(p, prefix, x, kv, bias_plus_mask, c):
    """T5 attention: scores q k^T (no 1/sqrt(d_kv)), + bias/mask, softmax in fp32."""
    B, Lq, _ = x.shape
    Lk = kv.shape[1]
    H, dk = c["num_heads"], c["d_kv"]
    q = F.linear(x, p[f"{prefix}.q.weight"]).view(B, Lq, H, dk).transpose(1, 2)
    k = F.linear(kv, p[f"{prefix}.k.weight"]).view(B, Lk, H, dk).transpose(1, 2)
    v = F.linear(kv, p[f"{prefix}.v.weight"]).view(B, Lk, H, dk).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) + bias_plus_mask
    w = torch.softmax(scores.float(), dim=-1).type_as(scores)
    out = (w @ v).transpose(1, 2).reshape(B, Lq, H * dk)
    return F.linear(out, p[f"{prefix}.o.weight"])


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def ffn(p, prefix, x, c):
    if c["feed_forward_proj"] == "gated-gelu":
        h = gelu_tanh(F.linear(x, p[f"{prefix}.wi_0.weight"])) * F.linear(x, p[f"{prefix}.wi_1.weight"])
    else:
        h = torch.relu(F.linear(x, p[f"{prefix}.wi.weight"]))
    return F.linear(h, p[f"{prefix}.wo.weight"])


def additive_mask(mask01):
    """1 -> 0, 0 -> float32 min (as Hugging Face's extended attention mask)."""
    return (1.0 - mask01.to(torch.float32)) * torch.finfo(torch.float32).min


def encode(p, input_ids, attention_mask, c):
    eps = c["layer_norm_epsilon"]
    x = p["shared.weight"][input_ids]
    L = input_ids.shape[1]
    bias = position_bias(p, "encoder", L, L, True, c) + additive_mask(attention_mask)[:, None, None, :]
    for i in range(c["num_layers"]):
        b = f"encoder.block.{i}.layer"
        h = rms_norm(x, p[f"{b}.0.layer_norm.weight"], eps)
        x = x + attention(p, f"{b}.0.SelfAttention", h, h, bias, c)
        x = x + ffn(p, f"{b}.1.DenseReluDense", rms_norm(x, p[f"{b}.1.layer_norm.weight"], eps), c)
    return rms_norm(x, p["encoder.final_layer_norm.weight"], eps)


def decode_hidden(p, decoder_input_ids, enc, attention_mask, c):
    """Decoder output after decoder.final_layer_norm (before the tied scale and lm_head)."""
    eps = c["layer_norm_epsilon"]
    x = p["shared.weight"][decoder_input_ids]
    L = decoder_input_ids.shape[1]
    causal = torch.tril(torch.ones(L, L))
    self_bias = position_bias(p, "decoder", L, L, False, c) + additive_mask(causal)[None, None]
    cross_mask = additive_mask(attention_mask)[:, None, None, :]
    for i in range(c["num_decoder_layers"]):
        b = f"decoder.block.{i}.layer"
        h = rms_norm(x, p[f"{b}.0.layer_norm.weight"], eps)
        x = x + attention(p, f"{b}.0.SelfAttention", h, h, self_bias, c)
        h = rms_norm(x, p[f"{b}.1.layer_norm.weight"], eps)
        x = x + attention(p, f"{b}.1.EncDecAttention", h, enc, cross_mask, c)  # no position bias
        x = x + ffn(p, f"{b}.2.DenseReluDense", rms_norm(x, p[f"{b}.2.layer_norm.weight"], eps), c)
    return rms_norm(x, p["decoder.final_layer_norm.weight"], eps)


def lm_logits(p, h, c):
    if c["tie_word_embeddings"]:
        return F.linear(h * c["d_model"] ** -0.5, p["shared.weight"])
    return F.linear(h, p["lm_head.weight"])


def shift_right(labels):
    d = torch.full_like(labels, START)
    d[:, 1:] = labels[:, :-1]
    return d.masked_fill(d == -100, PAD)


def greedy(p, input_ids, attention_mask, c, max_new_tokens):
    """Greedy decoding without a cache. Returns (generated [B, T] without the start token,
    smallest top-1/top-2 logit gap over the steps of unfinished rows)."""
    enc = encode(p, input_ids, attention_mask, c)
    B = input_ids.shape[0]
    seq = torch.full((B, 1), START, dtype=torch.long)
    unfinished = torch.ones(B, dtype=torch.bool)
    margin = float("inf")
    for _ in range(max_new_tokens):
        logits = lm_logits(p, decode_hidden(p, seq, enc, attention_mask, c), c)[:, -1]
        top2 = logits.topk(2, dim=-1).values
        margin = min(margin, (top2[:, 0] - top2[:, 1])[unfinished].min().item())
        nxt = torch.where(unfinished, logits.argmax(-1), torch.full_like(unfinished, PAD, dtype=torch.long))
        seq = torch.cat([seq, nxt[:, None]], dim=1)
        unfinished &= nxt != EOS
        if not unfinished.any():
            break
    return seq[:, 1:], margin


# ----------------------------------------------------------------------------- safetensors
def make_inputs(c, gen):
    V = c["vocab_size"]
    B, L, T = 3, 7, 4
    input_ids = torch.zeros(B, L, dtype=torch.long)
    attention_mask = torch.zeros(B, L, dtype=torch.long)
    for r, n in enumerate((7, 5, 3)):  # lengths incl. </s>
        input_ids[r, :n - 1] = torch.randint(2, V, (n - 1,), generator=gen)
        input_ids[r, n - 1] = EOS
        attention_mask[r, :n] = 1
    labels = torch.full((B, T), -100, dtype=torch.long)
    for r, n in enumerate((4, 3, 4)):
        labels[r, :n - 1] = torch.randint(2, V, (n - 1,), generator=gen)
        labels[r, n - 1] = EOS
    return input_ids, attention_mask, labels


def hand_bucket(rp, bidirectional, num_buckets, max_distance):
    """One bucket in plain Python (float64), for the self-check."""
    b = 0
    if bidirectional:
        num_buckets //= 2
        b = num_buckets if rp > 0 else 0
        rp = abs(rp)
    else:
        rp = max(-rp, 0)
    me = num_buckets // 2
    if rp < me:
        return b + rp
    return b + min(me + int(math.log(rp / me) / math.log(max_distance / me) * (num_buckets - me)), num_buckets - 1)


def wanted_stops(generated, want_all_stop):
    """Every row emits >= 2 real tokens before any </s>; want_all_stop: every row stops, at different
    steps (so generation ends before MAX_NEW_TOKENS and finished rows are padded); otherwise one row
    stops and one runs to MAX_NEW_TOKENS (with >= 2 distinct tokens)."""
    rows = generated.tolist()
    stops = [r.index(EOS) if EOS in r else None for r in rows]
    if any(s is not None and s < 2 for s in stops):
        return False
    if want_all_stop:
        done = [s for s in stops if s is not None]
        return len(done) == len(rows) and len(set(done)) == len(rows)
    long_rows = [r for r, s in zip(rows, stops) if s is None]
    return len(long_rows) < len(rows) and any(len(set(r)) >= 2 for r in long_rows)


def run_case(case, c, out):
    nb, md = c["relative_attention_num_buckets"], c["relative_attention_max_distance"]
    input_ids, attention_mask, labels = make_inputs(c, torch.Generator().manual_seed(7 + len(case)))
    want_all_stop = case == "gated"
    for seed in range(1000, 100000):
        p = draw_params(c, seed)
        with torch.no_grad():
            generated, margin = greedy(p, input_ids, attention_mask, c, MAX_NEW_TOKENS)
        ok = wanted_stops(generated, want_all_stop)
        if margin >= MIN_MARGIN and ok:
            break
    else:
        raise SystemExit(f"{case}: no seed found")

    with torch.no_grad():
        dec_in = shift_right(labels)
        enc = encode(p, input_ids, attention_mask, c)
        h = decode_hidden(p, dec_in, enc, attention_mask, c)
        logits = lm_logits(p, h, c)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)

        # self-checks
        lsm = torch.log_softmax(logits.double(), -1)
        keep = labels != -100
        manual = -(lsm.gather(-1, labels.clamp(min=0)[..., None])[..., 0][keep]).mean()
        assert abs(manual.item() - loss.item()) < 1e-5, (manual, loss)
        one = lm_logits(p, decode_hidden(p, torch.full((3, 1), START, dtype=torch.long), enc, attention_mask, c), c)
        assert torch.equal(one[:, 0].argmax(-1), generated[:, 0])
        assert torch.allclose(one[:, 0], logits[:, 0], atol=1e-5, rtol=0)  # causal: step 0 sees only the start
        # padded rows: done rows are 0 after their </s>
        for r in range(3):
            row = generated[r].tolist()
            if EOS in row:
                assert all(t == PAD for t in row[row.index(EOS) + 1:])

    be, bd = bucket_table(12, 12, True, c), bucket_table(12, 12, False, c)
    bew, bdw = bucket_table(40, 40, True, c), bucket_table(40, 40, False, c)
    for (i, j) in ((0, 11), (11, 0), (3, 5), (5, 3), (11, 2), (0, 39), (39, 0)):
        tab_e, tab_d = (be, bd) if max(i, j) < 12 else (bew, bdw)
        assert tab_e[i, j].item() == hand_bucket(j - i, True, nb, md), (i, j)
        assert tab_d[i, j].item() == hand_bucket(j - i, False, nb, md), (i, j)
    # the log branch is hit in the 12x12 tables; the clamp to buckets - 1 changes a value only for
    # |rp| >= max_distance, i.e. only in the wide tables
    assert (be % (nb // 2) > nb // 4).any() and (bd > nb // 2).any()
    assert md > 11 and bdw[39, 0].item() == nb - 1 and bew[0, 39].item() == nb - 1
    if case == "v10":  # spot values worked out by hand
        # encoder: 4 buckets per side, max_exact 2; rp = 11: 2 + floor(ln 5.5 / ln 10 * 2) = 2 + floor(1.48) = 3, +4 (rp > 0)
        assert be[0, 11].item() == 7 and be[11, 0].item() == 3
        # decoder: max_exact 4; rp = -11 -> 11: 4 + floor(ln 2.75 / ln 5 * 4) = 4 + floor(2.51) = 6
        assert bd[11, 0].item() == 6 and bd[0, 11].item() == 0

    config = dict(c)
    config.update(EXTRA_CONFIG)
    with open(os.path.join(out, f"t5_{case}_config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    weights = list(p.items())
    if c["tie_word_embeddings"]:
        weights.insert(1, ("encoder.embed_tokens.weight", p["shared.weight"]))
    io = [("input_ids", input_ids), ("attention_mask", attention_mask), ("labels", labels),
          ("decoder_input_ids", dec_in), ("encoder_states", enc), ("logits", logits), ("loss", loss),
          ("generated", generated), ("position_bucket_encoder", be), ("position_bucket_decoder", bd),
          ("position_bucket_encoder_wide", bew), ("position_bucket_decoder_wide", bdw)]
    for fname, tensors in ((f"t5_{case}.safetensors", weights), (f"t5_{case}_io.safetensors", io)):
        path = os.path.join(out, fname)
        write_safetensors(path, tensors)
        back = read_safetensors(path)
        assert list(back) == [n for n, _ in tensors]
        for n, t in tensors:
            assert back[n].dtype == t.dtype and torch.equal(back[n], t), n
        if "encoder.embed_tokens.weight" in back:  # tied: lm_head = the embedding, as read back from the file
            via = (h * c["d_model"] ** -0.5) @ back["encoder.embed_tokens.weight"].t()
            assert torch.allclose(via, logits, atol=1e-5, rtol=0)
        print(f"  {fname} ({os.path.getsize(path)} bytes)")
        for n, t in tensors:
            print(f"    {n} {DTYPES[t.dtype]} {list(t.shape)}")

    print(f"{case}: weight seed {seed}, greedy min top-2 gap {margin:.3f}, encoder_states std {enc.std():.3f}, "
          f"logits std {logits.std():.3f}, loss {loss.item():.5f}")
    print("  input_ids", input_ids.tolist())
    print("  labels", labels.tolist())
    print("  generated", generated.tolist())


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "models",
                                                              "fixtures")
    os.makedirs(out, exist_ok=True)
    print("torch", torch.__version__)
    torch.set_num_threads(1)
    for case, c in CASES.items():
        run_case(case, c, out)


if __name__ == "__main__":
    main()
