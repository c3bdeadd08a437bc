"""Fixtures for test_smoke.py and tests/: a tiny prepared dataset that needs no generator, download or tokenizer."""

import json

import numpy as np
import pytest


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
        meta[f"{split}_tokens"] = len(tokens)
        meta[f"{split}_documents"] = n_docs
    (folder / "meta.json").write_text(json.dumps(meta))
    return str(folder)
