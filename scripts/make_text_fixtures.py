#!/usr/bin/env python3
"""Writes the tiny text benchmark that the text-track tests use (run by hand, not by CI).

    /usr/bin/python3 scripts/make_text_fixtures.py [OUT_DIR]     (default tests/data/fixtures/text)

It needs Debian's python3-sentencepiece (the same library clrun loads). It writes:
  tiny_spm.model     a SentencePiece unigram model trained on the invented sentences below:
                     vocab 120, pad 0, eos 1, unk 2, no bos (T5's id layout), identity
                     normalisation (so the model stays a few KB)
  cl/                a CL_Benchmark-layout folder: instruction_config.json and two tasks,
                     SC/SST-2 (Good/Bad) and TC/agnews (World/Sports/Business/Science or
                     Technology), each train.json (12 rows), test.json (6 rows: the first 6
                     training rows, so that they can be learnt; the last test row of SST-2
                     labelled "-", a label outside labels.json), labels.json.
Every sentence is made up here; nothing comes from the real benchmark.
"""
import json
import os
import random
import sys
import tempfile

import sentencepiece as spm

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "data", "fixtures", "text")

INSTRUCTIONS = {
    "SC": [{"instruction_type": "zero-shot",
            "instruction": "What is the sentiment of the following paragraph? Choose one from the option.\n"}],
    "TC": [{"instruction_type": "zero-shot",
            "instruction": "What is the topic of the following paragraph? Choose one from the option.\n"}],
}
SENTIMENT = {"Good": ["a warm and funny film", "great acting and a clever plot", "i loved every minute",
                      "a joy to watch", "bright , moving and smart", "the best film of the year"],
             "Bad": ["a dull and lazy film", "bad acting and a silly plot", "i hated every minute",
                     "a chore to watch", "flat , slow and boring", "the worst film of the year"]}
TOPICS = {"World": ["leaders meet to discuss the border", "the election results came in late"],
          "Sports": ["the team won the final match", "a new record in the race"],
          "Business": ["shares fell as the market closed", "the bank raised its rates"],
          "Science or Technology": ["a new chip makes phones faster", "scientists found water on the moon"]}


def rows(table, n, rng, prefix):
    out = []
    labels = list(table)
    for i in range(n):
        label = labels[i % len(labels)]
        sentence = rng.choice(table[label])
        out.append({"sentence": f"{prefix}{sentence} . ", "label": label})
    return out


def main():
    rng = random.Random(7)
    cl = os.path.join(OUT, "cl")
    tasks = {("SC", "SST-2"): (SENTIMENT, "Text: "), ("TC", "agnews"): (TOPICS, "")}
    os.makedirs(cl, exist_ok=True)
    with open(os.path.join(cl, "instruction_config.json"), "w") as f:
        json.dump(INSTRUCTIONS, f, indent=1)
    corpus = []
    for (task_type, name), (table, prefix) in tasks.items():
        d = os.path.join(cl, task_type, name)
        os.makedirs(d, exist_ok=True)
        # Test rows repeat training sentences, so a tiny model can reach every labelled one.
        train = rows(table, 12, rng, prefix)
        test = [dict(r) for r in train[:6]]
        if name == "SST-2":
            test[-1]["label"] = "-"
        for split, data in (("train", train), ("test", test), ("labels", list(table))):
            with open(os.path.join(d, split + ".json"), "w") as f:
                json.dump(data, f, indent=1)
        corpus += [r["sentence"] for r in train + test] + list(table)
        corpus.append(INSTRUCTIONS[task_type][0]["instruction"].strip())
        corpus.append(f"Task:{task_type} Dataset:{name} Option: {', '.join(table)} Answer:")
    with tempfile.TemporaryDirectory() as tmp:
        text = os.path.join(tmp, "corpus.txt")
        with open(text, "w") as f:
            f.write("\n".join(corpus * 4) + "\n")
        spm.SentencePieceTrainer.train(
            input=text, model_prefix=os.path.join(tmp, "tiny_spm"), vocab_size=120, model_type="unigram",
            pad_id=0, eos_id=1, unk_id=2, bos_id=-1, normalization_rule_name="identity",
            character_coverage=1.0, seed_sentencepiece_size=2000, num_threads=1, minloglevel=2)
        with open(os.path.join(tmp, "tiny_spm.model"), "rb") as src, open(os.path.join(OUT, "tiny_spm.model"), "wb") as dst:
            dst.write(src.read())
    sp = spm.SentencePieceProcessor(model_file=os.path.join(OUT, "tiny_spm.model"))
    assert sp.pad_id() == 0 and sp.eos_id() == 1 and sp.unk_id() == 2 and sp.bos_id() == -1
    print("wrote", OUT, "vocab", sp.get_piece_size(), "Good ->", sp.encode("Good"))


if __name__ == "__main__":
    main()
