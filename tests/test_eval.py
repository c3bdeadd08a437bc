"""eval.py: bits per byte is the tokenizer-independent loss, computed over every token of a file."""

import math
import os

import numpy as np
import pytest
import torch

from tests.helpers import SHARED_DATA
from eval import evaluate
from model import GPT, GPTConfig
from tokenizer import get_tokenizer

TEXT = "Once upon a time, a little dog named Max found a red ball in the park. He was very happy. " * 6


def check_bits_per_byte(enc):
    tokens = np.array(enc.encode(TEXT), dtype=np.uint16)
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=enc.vocab_size, n_layer=1, n_head=2, n_embd=32)).eval()
    r = evaluate(model, tokens, enc.byte_lengths(), batch_size=4)
    T = 16
    n = (len(tokens) - 1) // T * T  # the targets evaluate() scores: whole windows only
    x = torch.tensor(tokens[:n].astype(np.int64)).view(-1, T)
    y = torch.tensor(tokens[1 : n + 1].astype(np.int64)).view(-1, T)
    with torch.no_grad():
        mean_nats = model(x, y)[1].item()
    n_bytes = len(enc.decode(y.flatten().tolist()).encode("utf-8"))
    assert r["tokens"] == n and r["bytes"] == n_bytes
    assert r["loss"] == pytest.approx(mean_nats, rel=1e-5)
    # bits per byte = mean nats per token x tokens per byte / ln 2
    assert r["bits_per_byte"] == pytest.approx(mean_nats * (n / n_bytes) / math.log(2), rel=1e-5)
    assert r["perplexity"] == pytest.approx(math.exp(mean_nats), rel=1e-5)


def test_bits_per_byte_with_byte_tokens():
    check_bits_per_byte(get_tokenizer("bytes"))


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_DATA, "tiktoken_cache")),
                    reason="needs the GPT-2 tiktoken files in ../shared/data/tiktoken_cache (offline test data)")
def test_bits_per_byte_with_gpt2_tokens(monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", os.path.join(SHARED_DATA, "tiktoken_cache"))
    enc = get_tokenizer("gpt2")
    assert len(enc.encode(TEXT)) < len(TEXT.encode()) / 3  # several bytes per token: the ratio matters here
    check_bits_per_byte(enc)


def test_bits_per_byte_with_a_trained_bpe(tmp_path):
    pytest.importorskip("tokenizers", reason="bpe:N needs the tokenizers package (requirements-test.txt)")
    from tokenizer import train_bpe

    train_bpe([TEXT, "Café naïve — déjà vu 🐉. " * 20], 300, str(tmp_path / "tokenizer.json"))
    enc = get_tokenizer("bpe:300", str(tmp_path))
    lengths = enc.byte_lengths()
    for text in (TEXT, "déjà vu 🐉 über"):  # multi-byte characters, some split across tokens
        assert sum(lengths[i] for i in enc.encode(text)) == len(text.encode("utf-8"))
    assert lengths[enc.eot_token] == 0
    check_bits_per_byte(enc)


def test_tokens_outside_the_vocabulary_are_a_clear_error():
    model = GPT(GPTConfig(block_size=8, vocab_size=257, n_layer=1, n_head=2, n_embd=16)).eval()
    with pytest.raises(ValueError, match="token id 5000, but meta.json.s vocab_size is 257"):
        evaluate(model, np.full(100, 5000, dtype=np.uint16), [1] * 257, batch_size=2)
