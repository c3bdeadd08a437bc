"""Shared test fixtures: a tiny prepared dataset that needs no generator, download or tokenizer files."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.abspath(__file__))
SHARED_DATA = os.path.join(REPO, "..", "shared", "data")  # offline test data beside a checkout, absent in a clone
# a model small enough that a training iteration takes milliseconds on a laptop CPU
TINY_MODEL = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=4", "--eval_iters=2",
              "--device=cpu", "--dtype=float32", "--compile=False"]


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """Byte-level tokens of a few repeated sentences, with an end-of-text (256) after each 'document'."""
    folder = tmp_path_factory.mktemp("tiny_dataset")
    rng = np.random.default_rng(0)
    sentences = [b"The cat sat on the mat.", b"Tom likes his red ball.", b"Lily went to the park with mom."]
    meta = {"tokenizer": "bytes", "vocab_size": 257, "dtype": "uint16", "eot_token": 256, "source": "test"}
    for split, n_docs in (("train", 400), ("val", 40)):
        docs = [b" ".join(sentences[i] for i in rng.integers(0, 3, 4)) for _ in range(n_docs)]
        tokens = np.concatenate([np.append(np.frombuffer(d, np.uint8), 256) for d in docs]).astype(np.uint16)
        tokens.tofile(folder / f"{split}.bin")
        meta[f"{split}_tokens"], meta[f"{split}_documents"] = len(tokens), n_docs
    (folder / "meta.json").write_text(json.dumps(meta))
    return str(folder)


def run_script(script, *args, check=True, timeout=300, env=None):
    """Run one of the repo's scripts as a user would; returns the CompletedProcess."""
    proc = subprocess.run([sys.executable, os.path.join(REPO, script), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def read_log(out_dir):
    """log.csv as a list of dicts (empty strings where a row has no value)."""
    lines = open(os.path.join(out_dir, "log.csv")).read().splitlines()
    header = lines[0].split(",")
    return [dict(zip(header, line.split(","))) for line in lines[1:]]
