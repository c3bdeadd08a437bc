"""Fixtures for test_smoke.py and tests/: a tiny prepared dataset that needs no generator, download or tokenizer;
a tiny GPT run and a tiny BDH run of it, and serve.py serving both."""

import fcntl
import json
import os

import numpy as np
import pytest
import torch

from tests.helpers import ServeProcess, train_gpt_and_bdh

# tiny models, one test worker per core: a second torch thread per process costs more than it gives (threads waiting
# for each other's turn on a shared core); the scripts the tests start inherit it
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


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


@pytest.fixture(scope="session")
def tiny_runs(tiny_dataset, tmp_path_factory):
    """{"gpt": path, "bdh": path}: two runs trained once per session, shared by xdist's workers (the first to come
    trains them while the others wait)."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # this session's folder, above each worker's own
    folder = shared / "tiny_runs"
    with open(shared / "tiny_runs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "trained").exists():
            folder.mkdir(exist_ok=True)
            train_gpt_and_bdh(tiny_dataset, folder)
            (folder / "trained").touch()
    return {"gpt": str(folder / "gpt"), "bdh": str(folder / "bdh")}


@pytest.fixture(scope="session")
def tiny_server(tiny_runs, tmp_path_factory):
    """serve.py serving tiny_runs on a free port, with a check of a user's own beside the defaults: checks:short."""
    folder = tmp_path_factory.mktemp("serve")
    (folder / "checks.py").write_text("def short(text):\n    return len(text) < 30\n")
    server = ServeProcess(f"--out_dir={tiny_runs['gpt']},{tiny_runs['bdh']}", "--validate=checks:short", cwd=folder)
    yield server
    server.close()
