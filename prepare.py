"""
Prepare a dataset for train.py: tokenize documents into flat token streams, one per split, with an
end-of-text token after every document, plus meta.json saying how to read and decode them.

    python prepare.py --dataset=synthetic_stories                      # offline, generated here (~10 MB)
    python prepare.py --dataset=synthetic_stories --num_bytes=2000000 --seed=7

Writes data/<dataset>/train.bin, val.bin (np.memmap-readable, dtype in meta.json) and meta.json. Files are
written under temporary names and renamed at the end, meta.json last: an interrupted run never leaves data that
looks complete.
"""

import json
import os
import sys
import time

import numpy as np

from configurator import configure
from tokenizer import get_tokenizer

# -----------------------------------------------------------------------------
dataset = "synthetic_stories"
tokenizer = "bytes"
out_dir = ""  # default: data/<dataset>
num_bytes = 10_000_000  # synthetic_stories: size of the generated text
seed = 1337  # synthetic_stories: same seed, same corpus
val_fraction = 0.05  # share of documents held out for validation
# -----------------------------------------------------------------------------
config_keys = [k for k, v in globals().items() if not k.startswith("_") and isinstance(v, (int, float, bool, str))]


def load_documents():
    """Returns (source description, list of documents). Sources without a validation split are split here."""
    if dataset == "synthetic_stories":
        from synthetic_stories import generate_stories

        source = f"synthetic_stories (generated here: seed={seed}, num_bytes={num_bytes})"
        return source, list(generate_stories(num_bytes, seed))
    raise SystemExit(f"error: unknown --dataset={dataset!r}; available: synthetic_stories")


def tokenize(docs, enc, dtype):
    """Documents -> one flat array of token ids, end-of-text after each document."""
    arrays = []
    for doc in docs:
        arrays.append(np.asarray(enc.encode(doc), dtype=dtype))
        arrays.append(np.asarray([enc.eot_token], dtype=dtype))
    return np.concatenate(arrays)


def main():
    global out_dir
    configure(globals(), config_keys)
    out_dir = out_dir or os.path.join("data", dataset)
    enc = get_tokenizer(tokenizer)
    dtype = np.uint16 if enc.vocab_size <= 2**16 else np.uint32
    t0 = time.time()
    source, docs = load_documents()
    n_val = max(1, int(len(docs) * val_fraction))
    splits = {"train": docs[:-n_val], "val": docs[-n_val:]}  # the last documents are the validation split
    os.makedirs(out_dir, exist_ok=True)
    meta = {
        "tokenizer": tokenizer,
        "vocab_size": enc.vocab_size,
        "dtype": np.dtype(dtype).name,
        "eot_token": enc.eot_token,
        "source": source,
        "command": "python " + " ".join(sys.argv),
    }
    for split, split_docs in splits.items():
        tokens = tokenize(split_docs, enc, dtype)
        tokens.tofile(os.path.join(out_dir, f"{split}.bin.tmp"))
        meta[f"{split}_tokens"] = int(len(tokens))
        meta[f"{split}_documents"] = len(split_docs)
        print(f"{split}: {len(split_docs):,} documents, {len(tokens):,} tokens")
    with open(os.path.join(out_dir, "meta.json.tmp"), "w") as f:
        json.dump(meta, f, indent=2)
    # from here on the old dataset (if any) is replaced: drop its meta first, so a crash leaves no mixed state
    if os.path.exists(os.path.join(out_dir, "meta.json")):
        os.remove(os.path.join(out_dir, "meta.json"))
    for name in ("train.bin", "val.bin", "meta.json"):
        os.replace(os.path.join(out_dir, name + ".tmp"), os.path.join(out_dir, name))
    print(f"wrote {out_dir}/train.bin, val.bin, meta.json in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
