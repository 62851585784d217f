#!/usr/bin/env python3
"""Writes the T5 tokenizer fixture that the C++ tokenizer test compares libsentencepiece against.

An independent reference for the T5 SentencePiece vocabulary, written from the Hugging Face
fast-tokenizer file alone (../shared/data/t5/tokenizer.json): it does not use the sentencepiece
library (the C++ code under test uses it, so it would not be an independent check). Run by hand,
not by CI, from the project root:

    /usr/bin/python3 scripts/make_tokenizer_fixtures.py [OUT]

OUT defaults to tests/data/fixtures/t5_tokenizer.json. The data is read from ../shared/data (set
CLRUN_SHARED_DATA to point elsewhere); nothing of it is copied except the few prompts and labels
that the fixture holds as test inputs. Standard library only.

Encoder (what libsentencepiece's SentencePieceProcessor::Encode does with T5's spiece.model):
  1. Normalizer: the Precompiled charsmap of tokenizer.json (SentencePiece's nmt_nfkc rules: NFKC,
     control characters removed, "\\n", "\\t" and other spaces mapped to " ") applied as
     SentencePiece applies it: at each byte position, the longest match in the charsmap's
     double-array trie replaces the matched bytes, else one UTF-8 character is copied. With
     remove_extra_whitespaces (the file's WhitespaceSplit pre-tokenizer): leading spaces dropped,
     runs of spaces collapsed to one, trailing spaces dropped; then add_dummy_prefix (Metaspace
     add_prefix_space) puts "\u2581" first and every " " becomes "\u2581" (Metaspace replacement).
  2. Unigram model: Viterbi over the normalized UTF-8 bytes, maximising the sum of piece scores
     (as SentencePiece 0.1.97's EncodeOptimized: path scores stored as float32, a piece's
     candidate sum compared in double, ties keep the first candidate found); only
     normal pieces take part (not <pad>, </s>, <unk> nor the <extra_id_N> added tokens, so such
     strings in the text are spelled out, as libsentencepiece does). A character with no piece of
     its own becomes <unk> (id 2) with score min_score - 10; consecutive <unk> are fused into one.
  3. </s> (id 1) is appended; the empty (or all-space) text encodes to [1].
Decoder: Hugging Face T5TokenizerFast.decode(ids, skip_special_tokens=True,
clean_up_tokenization_spaces=True): pad 0, eos 1, unk 2 and the sentinels 32000..32099 are
dropped (ids >= 32100, which have no piece, are dropped too, as the fast tokenizer does), "\u2581"
becomes " " with the first remaining piece's leading space removed (the Metaspace decoder), and
transformers' clean_up_tokenization replaces " ." " ?" " !" " ," " ' " " n't" " 'm" " 's" " 've"
" 're" by the same without the space (" ' " -> "'").

Fixture: {"cases": [{"text", "ids", "source"}...], "decode": [{"ids", "text"[, "note"]}...]};
cases are the spec's label encodings (../shared/specs/lm-track.md, Tokenizer; checked here),
every label of every labels.json, one full prompt per data set (built by the spec's prompt rule from
the first test record whose prompt encodes to <= 120 ids; "source" names it), the spec's SST-2
prompt example and edge cases (whitespace, newlines, punctuation, special-token strings, which
SentencePiece spells out, non-ASCII text through the charsmap, equal-score segmentations). A
decode case with a "note" is one where Hugging Face and libsentencepiece's DecodeIds differ.
Checked against python3-sentencepiece 0.1.97 (Debian) during development: every fixture text,
every prompt of every train/test record here and 20000 random Unicode strings encode the same.
"""

import base64
import json
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("CLRUN_SHARED_DATA", os.path.join(ROOT, "..", "shared", "data"))
TOKENIZER_JSON = os.path.join(SHARED, "t5", "tokenizer.json")
BENCH = os.path.join(SHARED, "cl_benchmark")
DEFAULT_OUT = os.path.join(ROOT, "tests", "data", "fixtures", "t5_tokenizer.json")

SPACE = "\u2581"
SPACE_BYTES = SPACE.encode("utf-8")
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
UNK_PENALTY = 10.0
MAX_PROMPT_IDS = 120


def f32(x):
    """Rounds a Python float to float32 (SentencePiece keeps scores and path sums in float)."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def one_char_len(first_byte):
    """SentencePiece's OneCharLen: UTF-8 length from the lead byte (1 for continuation bytes)."""
    return b"\1\1\1\1\1\1\1\1\1\1\1\1\2\2\3\4"[first_byte >> 4]


class DoubleArray:
    """Read-only darts-clone double array (the trie of SentencePiece's precompiled charsmap)."""

    def __init__(self, blob):
        if len(blob) % 4:
            raise ValueError("double-array blob size is not a multiple of 4")
        self.units = struct.unpack("<%dI" % (len(blob) // 4), blob)

    @staticmethod
    def _offset(unit):
        return (unit >> 10) << ((unit & (1 << 9)) >> 6)

    def common_prefix_search(self, key, start):
        """(value, length) of every key in the trie that is a prefix of key[start:]."""
        units = self.units
        out = []
        node = self._offset(units[0])
        for i in range(start, len(key)):
            c = key[i]
            node ^= c
            if node >= len(units):
                break
            unit = units[node]
            if unit & ((1 << 31) | 0xFF) != c:  # label
                break
            node ^= self._offset(unit)
            if (unit >> 8) & 1:  # has_leaf
                out.append((units[node] & ((1 << 31) - 1), i + 1 - start))
        return out


class Normalizer:
    """SentencePiece's Normalizer::Normalize with a precompiled charsmap, add_dummy_prefix,
    remove_extra_whitespaces and escape_whitespaces (T5's settings)."""

    def __init__(self, precompiled_b64):
        blob = base64.b64decode(precompiled_b64)
        # <trie size: uint32 LE><double-array trie><NUL-terminated replacement strings>
        (trie_size,) = struct.unpack_from("<I", blob, 0)
        if trie_size >= len(blob):
            raise ValueError("bad precompiled charsmap")
        self.trie = DoubleArray(blob[4:4 + trie_size])
        self.strings = blob[4 + trie_size:]

    def _prefix(self, data, pos):
        """(replacement bytes, consumed bytes) at data[pos:] (SentencePiece's NormalizePrefix)."""
        longest_len, longest_val = 0, 0
        for value, length in self.trie.common_prefix_search(data, pos):
            if longest_len == 0 or length > longest_len:
                longest_len, longest_val = length, value
        if longest_len == 0:
            n = one_char_len(data[pos])
            try:  # a malformed byte becomes U+FFFD (not reachable from a Python str)
                data[pos:pos + n].decode("utf-8", "strict")
            except UnicodeDecodeError:
                return "\ufffd".encode("utf-8"), 1
            return data[pos:pos + n], n
        end = self.strings.index(b"\0", longest_val)
        return self.strings[longest_val:end], longest_len

    def normalize(self, text):
        """Normalized UTF-8 bytes ("\u2581"-escaped, with the dummy prefix) of text."""
        data = text.encode("utf-8")
        pos = 0
        while pos < len(data):  # leading whitespace
            rep, n = self._prefix(data, pos)
            if rep != b" ":
                break
            pos += n
        if pos == len(data):
            return b""
        out = bytearray(SPACE_BYTES)  # add_dummy_prefix
        is_prev_space = True
        while pos < len(data):
            rep, n = self._prefix(data, pos)
            if is_prev_space:
                rep = rep.lstrip(b" ")
            if rep:
                out += rep.replace(b" ", SPACE_BYTES)
                is_prev_space = rep.endswith(b" ")
            pos += n
        while out.endswith(SPACE_BYTES):  # trailing whitespace
            del out[-len(SPACE_BYTES):]
        return bytes(out)


class T5Tokenizer:
    def __init__(self, path=TOKENIZER_JSON):
        with open(path, encoding="utf-8") as f:
            tj = json.load(f)
        norm = tj["normalizer"]
        if norm["type"] != "Precompiled":
            raise ValueError("expected T5's Precompiled normalizer, got %s" % norm["type"])
        pre = tj["pre_tokenizer"]
        kinds = [p["type"] for p in pre["pretokenizers"]]
        if kinds != ["WhitespaceSplit", "Metaspace"]:
            raise ValueError("unexpected pre-tokenizer %s" % kinds)
        meta = pre["pretokenizers"][1]
        if meta["replacement"] != SPACE or not meta.get("add_prefix_space", True):
            raise ValueError("unexpected Metaspace settings %s" % meta)
        model = tj["model"]
        if model.get("type", "Unigram") != "Unigram" or model["unk_id"] != UNK_ID:
            raise ValueError("expected a Unigram model with unk id 2")
        self.normalizer = Normalizer(norm["precompiled_charsmap"])
        self.id_to_piece = [p for p, _ in model["vocab"]]
        self.special_ids = {t["id"] for t in tj["added_tokens"] if t["special"]}
        self.pieces = {}  # UTF-8 piece -> (id, float32 score), normal pieces only
        for i, (piece, score) in enumerate(model["vocab"]):
            if i in self.special_ids:
                continue
            self.pieces[piece.encode("utf-8")] = (i, f32(score))
        self.max_piece_len = max(len(p) for p in self.pieces)
        self.min_score = min(s for _, s in self.pieces.values())
        self.unk_score = f32(self.min_score - UNK_PENALTY)

    def encode_pieces(self, text):
        """[(piece bytes, id)] of the Viterbi segmentation (no </s>, unknowns fused)."""
        s = self.normalizer.normalize(text)
        size = len(s)
        # per end position: [best score, starts_at, id]
        best = [[0.0, -1, -1] for _ in range(size + 1)]
        start = 0
        while start < size:
            base = best[start][0]
            mblen = min(one_char_len(s[start]), size - start)
            has_single = False
            for end in range(start + 1, min(size, start + self.max_piece_len) + 1):
                hit = self.pieces.get(s[start:end])
                if hit is None:
                    continue
                pid, score = hit
                # SentencePiece's candidate is a double (its score expression has type double
                # because of the user-defined-symbol branch), compared in double with the stored
                # float and rounded to float when stored: this decides near-ties such as
                # "????" -> "???" "?" rather than "?" "???".
                cand = score + base
                node = best[end]
                if node[1] == -1 or cand > node[0]:
                    node[0], node[1], node[2] = f32(cand), start, pid
                if end - start == mblen:
                    has_single = True
            if not has_single:
                node = best[start + mblen]
                cand = f32(self.unk_score + base)
                if node[1] == -1 or cand > node[0]:
                    node[0], node[1], node[2] = cand, start, UNK_ID
            start += mblen
        result = []
        end = size
        while end > 0:
            _, st, pid = best[end]
            result.append((s[st:end], pid))
            end = st
        result.reverse()
        fused = []
        for piece, pid in result:
            if pid == UNK_ID and fused and fused[-1][1] == UNK_ID:
                fused[-1] = (fused[-1][0] + piece, UNK_ID)
            else:
                fused.append((piece, pid))
        return fused

    def encode(self, text):
        """Token ids of text followed by </s> (id 1)."""
        return [pid for _, pid in self.encode_pieces(text)] + [EOS_ID]

    def decode(self, ids):
        """Hugging Face decode(skip_special_tokens=True, clean_up_tokenization_spaces=True)."""
        pieces = [self.id_to_piece[i] for i in ids
                  if 0 <= i < len(self.id_to_piece) and i not in self.special_ids]
        parts = []
        for k, piece in enumerate(pieces):
            piece = piece.replace(SPACE, " ")
            if k == 0 and piece.startswith(" "):
                piece = piece[1:]
            parts.append(piece)
        return clean_up_tokenization("".join(parts))


def clean_up_tokenization(s):
    """transformers' PreTrainedTokenizerBase.clean_up_tokenization."""
    return (s.replace(" .", ".").replace(" ?", "?").replace(" !", "!").replace(" ,", ",")
            .replace(" ' ", "'").replace(" n't", "n't").replace(" 'm", "'m")
            .replace(" 's", "'s").replace(" 've", "'ve").replace(" 're", "'re"))


# The spec's label encodings (../shared/specs/lm-track.md, Tokenizer), without the final </s>.
SPEC_LABELS = [
    ("Artist", [9152]),
    ("Science or Technology", [2854, 42, 3669]),
    ("Society & Culture", [3467, 3, 184, 10160]),
    ("False", [10747, 7, 15]),
    ("entailment", [3, 35, 5756, 297]),
    ("A", [71]),
]

EDGE_TEXTS = [
    "",
    " ",
    "   \n\t  ",
    "a",
    "hello  world",
    "  leading and trailing  ",
    "Text: bad . ",
    "line one\nline two",
    "tab\tseparated\r\nwindows line",
    "Answer:",
    "Option: Good, Bad \n",
    "don't won't it's I'm we've they're",
    "1234567890 3.14 -5 $100 50%",
    "e-mail: a.b@c.org (see http://x.y/z?q=1&r=2)",
    "``quoted'' #39;s quot;x quot;",
    "<extra_id_0> </s> <pad>",
    "caf\u00e9",
    "na\u00efve \u2014 \u201cquoted\u201d",
    "\u00bfQu\u00e9 tal? \u00a1Bien!",
    "Stra\u00dfe \u00fcber M\u00fcller",
    "\u4f60\u597d\u4e16\u754c",
    "\u03b1\u03b2\u03b3 \u2192 \u221e",
    "fullwidth \uff21\uff22\uff23\uff11\uff12\uff13 and \ufb01 ligature",
    "non\u00a0breaking\u2003em\u2009thin spaces",
    "zero\u200bwidth soft\u00adhyphen",
    "e\u0301 combining",
    "emoji \U0001f600\U0001f601 done",
    # equal-score segmentations: SentencePiece's float/double comparison picks one
    "where????",
    "(NNN): B---- Hmmm!!!!!!!!!!!!!!",
]

DECODE_IDS = [
    [9152, 1],
    [0, 2854, 42, 3669, 1, 0, 0],
    [3467, 3, 184, 10160, 1],
    [3, 35, 5756, 297, 1],
    [0, 10747, 7, 15, 1],
    [32099, 9152, 32098, 1],
    [32000, 71, 1],
    [0, 1],
    [],
    [2, 2, 1],
    [3, 9, 2, 5, 1],
]

# Hugging Face's Metaspace decoder drops the "\u2581" of the first piece only, so a lone "\u2581"
# first leaves the next piece's space: " Science" (libsentencepiece's DecodeIds gives "Science").
DECODE_NOTED = [
    ([0, 3, 2854, 1], "first piece a lone \u2581: Hugging Face keeps the next piece's space; "
                      "sentencepiece DecodeIds gives \"Science\""),
]


def prompt(task_type, dataset, instruction, labels, sentence):
    """The spec's prompt rule (../shared/specs/lm-track.md, Data)."""
    if task_type == "COPA":
        return "Task:COPA\nDataset:COPA\n" + sentence + "\nAnswer:"
    return ("Task:" + task_type + "\n" + "Dataset:" + dataset + "\n" + instruction +
            "Option: " + ", ".join(labels) + " \n" + sentence + "\nAnswer:")


def datasets():
    """(TaskType, Dataset) of every data set with a labels.json, sorted."""
    out = []
    for tt in sorted(os.listdir(BENCH)):
        d = os.path.join(BENCH, tt)
        if not os.path.isdir(d):
            continue
        for ds in sorted(os.listdir(d)):
            if os.path.isfile(os.path.join(d, ds, "labels.json")):
                out.append((tt, ds))
    return out


def build_fixture(tok):
    cases, seen = [], set()

    def add(text, source=None):
        if text in seen:
            return
        seen.add(text)
        case = {"text": text, "ids": tok.encode(text)}
        if source:
            case["source"] = source
        cases.append(case)

    for text, want in SPEC_LABELS:
        got = tok.encode(text)
        if got != want + [EOS_ID]:
            raise SystemExit("spec label %r: spec %s, this encoder %s" % (text, want, got))
        add(text, "spec")

    with open(os.path.join(BENCH, "instruction_config.json"), encoding="utf-8") as f:
        instructions = json.load(f)
    for tt, ds in datasets():
        with open(os.path.join(BENCH, tt, ds, "labels.json"), encoding="utf-8") as f:
            labels = json.load(f)
        for label in labels:
            add(label, "%s/%s/labels.json" % (tt, ds))
    for tt, ds in datasets():
        with open(os.path.join(BENCH, tt, ds, "labels.json"), encoding="utf-8") as f:
            labels = json.load(f)
        with open(os.path.join(BENCH, tt, ds, "test.json"), encoding="utf-8") as f:
            records = json.load(f)
        instruction = "" if tt == "COPA" else instructions[tt][0]["instruction"]
        for i, rec in enumerate(records):
            p = prompt(tt, ds, instruction, labels, rec["sentence"])
            if len(tok.encode(p)) <= MAX_PROMPT_IDS:
                add(p, "%s/%s/test.json#%d" % (tt, ds, i))
                break
        else:
            raise SystemExit("no prompt of %s/%s fits %d ids" % (tt, ds, MAX_PROMPT_IDS))

    add(prompt("SC", "SST-2", instructions["SC"][0]["instruction"], ["Good", "Bad"],
               "Text: bad . "), "spec prompt example")
    for text in EDGE_TEXTS:
        add(text, "edge")

    decode = [{"ids": ids, "text": tok.decode(ids)} for ids in DECODE_IDS]
    decode += [{"ids": ids, "text": tok.decode(ids), "note": note} for ids, note in DECODE_NOTED]
    # "time ." style clean-up: the SST-2 prompt's sentence round trip, and a clean-up sampler.
    for text in ["stealing harvard aspires to comedic grand larceny but stands convicted of "
                 "nothing more than petty theft of your time . ",
                 "wait , what ? no ! it ' s fine . i don 't know ; we 've seen it , they 're "
                 "here , i 'm sure , he 's ok",
                 "Title: Up, down and away: NASA #39;s  #39;Weightless Wonder"]:
        ids = tok.encode(text)
        decode.append({"ids": ids, "text": tok.decode(ids)})
    return {"cases": cases, "decode": decode}


def main(argv):
    out = argv[1] if len(argv) > 1 else DEFAULT_OUT
    tok = T5Tokenizer()
    fixture = build_fixture(tok)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        f.write('{"cases": [\n')
        f.write(",\n".join(json.dumps(c, ensure_ascii=True) for c in fixture["cases"]))
        f.write('\n], "decode": [\n')
        f.write(",\n".join(json.dumps(c, ensure_ascii=True) for c in fixture["decode"]))
        f.write("\n]}\n")
    print("wrote %s: %d encode cases, %d decode cases" %
          (out, len(fixture["cases"]), len(fixture["decode"])))


if __name__ == "__main__":
    main(sys.argv)
