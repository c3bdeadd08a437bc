"""generation.Batch: streams generated together, one forward pass per token for all, each with its own prompt,
settings, seed and stopping point, give every stream exactly the text it gets alone (Completion, sample.py's)."""

import pytest
import torch

import model as model_module
from generation import Batch, Completion
from model import create_model
from tokenizer import get_tokenizer

torch.set_num_threads(1)
ENC = get_tokenizer("bytes")
MODELS = {
    "gpt": ("gpt", dict(n_layer=2, n_head=2, n_embd=32, block_size=24)),
    # rope, GQA and the recipe's options: per-row positions, value embeddings and x0 in the decoding rows
    "gpt_recipe": ("gpt", dict(n_layer=2, n_head=4, n_kv_head=2, n_embd=32, block_size=24, rope=True, norm="rmsnorm",
                               mlp="relu2", qk_norm=True, tie_embeddings=False, logit_softcap=15.0, x0_skip=True,
                               value_embeds=True, bias=False, embedding_rank=8)),
    "bdh": ("bdh", dict(n_layer=2, n_head=2, n_embd=32, mlp_internal_dim_multiplier=4, dropout=0.0)),
}
PROMPTS = ["Once upon a time", "", "The cat sat on the mat and", "Lily went to", "A", "é", "Tom and his dog"]


def trained_looking(kind):
    """A model whose logits are far from uniform (an untrained one would draw near-uniform tokens)."""
    model_type, args = MODELS[kind]
    torch.manual_seed(0)
    model = create_model(model_type, {**args, "vocab_size": 257}).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(std=0.3)
    return model


def completions(model):
    """Streams that differ in everything: prompt, length (past a GPT's block_size of 24), greedy or sampled, top_k,
    top_p, seed."""
    out = []
    for i, prompt in enumerate(PROMPTS * 2):
        settings = dict(temperature=0.0 if i % 3 == 0 else 1.0, top_k=20 if i % 2 else None,
                        top_p=0.9 if i % 4 == 1 else 1.0, generator=torch.Generator().manual_seed(i))
        out.append(Completion(model, ENC, prompt, 10 + 5 * i, **settings))
    return out


@pytest.mark.parametrize("kind", list(MODELS))
def test_a_batch_gives_each_stream_its_solo_text(kind):
    model = trained_looking(kind)
    with torch.no_grad():
        solo = []
        for c in completions(model):
            pieces = list(c)
            solo.append((c.tokens, c.finish_reason, "".join(pieces)))
    batch = Batch(model, torch.no_grad)
    streams = [batch.submit(c) for c in completions(model)]
    together = []
    for s in streams:
        pieces = []
        while (piece := s.read(timeout=60)) is not None:
            pieces.append(piece)
        together.append((s.completion.tokens, s.completion.finish_reason, "".join(pieces)))
    batch.close()
    assert together == solo
    assert {r for _, r, _ in solo} == {"stop", "length"} or all(r == "length" for _, r, _ in solo)
    assert max(len(t) for t, _, _ in solo) > 24  # some ran past the GPT's block_size and read their window again


def test_decoding_rows_do_not_depend_on_their_batch_and_a_plain_product_does():
    model = trained_looking("gpt")
    torch.manual_seed(1)
    x = torch.randn(9, 1, 32)
    layer = model.h[0].mlp.c_fc
    batched = layer(x)
    assert all(torch.equal(batched[i], layer(x[i : i + 1])[0]) for i in range(9))  # per_row: the same bits
    plain = torch.nn.functional.linear(x, layer.weight, layer.bias)
    alone = [torch.nn.functional.linear(x[i : i + 1], layer.weight, layer.bias)[0] for i in range(9)]
    assert not all(torch.equal(plain[i], alone[i]) for i in range(9))  # the control: one product of all rows differs
    torch.testing.assert_close(plain, batched)  # ...by rounding alone


def test_a_cancelled_stream_leaves_and_the_others_go_on():
    model = trained_looking("gpt")
    batch = Batch(model, torch.no_grad)
    cs = completions(model)[:3]
    streams = [batch.submit(c) for c in cs]
    streams[1].cancel()
    for i in (0, 2):
        while streams[i].read(timeout=60) is not None:
            pass
    batch.close()
    assert cs[0].finish_reason and cs[2].finish_reason and not cs[1].finish_reason


def test_an_error_in_the_batch_reaches_every_reader(monkeypatch):
    model = trained_looking("gpt")
    batch = Batch(model, torch.no_grad)

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory, say")

    monkeypatch.setattr(model_module, "decode_attention", broken)
    streams = [batch.submit(c) for c in completions(model)[:2]]
    for s in streams:
        with pytest.raises(RuntimeError, match="out of memory"):
            while s.read(timeout=60) is not None:
                pass
    monkeypatch.undo()
    c = completions(model)[2]
    s = batch.submit(c)  # and the batch serves the next
    while s.read(timeout=60) is not None:
        pass
    batch.close()
    assert c.finish_reason
