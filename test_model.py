"""Properties of the models a user relies on: the next-token loss is right, learning works, counts are exact."""

import math

import numpy as np
import pytest
import torch

import common
from model import GPT, GPTConfig, create_model, sample_next_token

TINY = dict(block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0)


def tiny_gpt(vocab_size=64, **kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=vocab_size, **{**TINY, **kw}))


def train_on(model, tokens, tmp_path, steps, lr=1e-2, batch_size=16, copy_bug=False):
    """Train through the real batch loader on a token file; returns the mean loss of the last 20 steps."""
    path = str(tmp_path / "train.bin")
    np.asarray(tokens, dtype=np.uint16).tofile(path)
    loader = common.BatchLoader(path, "uint16", batch_size, model.config.block_size, seed=0)
    opt = model.configure_optimizers(0.0, lr, (0.9, 0.95), "cpu")
    losses = []
    for _ in range(steps):
        x, y = loader.next_batch()
        _, loss = model(x, x if copy_bug else y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return sum(losses[-20:]) / 20


def test_initial_loss_is_near_uniform():
    model = tiny_gpt(vocab_size=64)
    x = torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(2))
    _, loss = model(x, y)
    # padded to 64 columns, nothing to mask: a fresh model is close to uniform over the vocabulary
    assert abs(loss.item() - math.log(64)) < 0.1


def test_random_tokens_loss_stays_at_ln_vocab(tmp_path):
    # i.i.d. uniform tokens carry no information about the next token: the best possible loss is ln(V). A model
    # that can see its own target (the copy bug: targets not shifted, or attention leaking the future) goes far lower.
    V = 64
    tokens = np.random.default_rng(0).integers(0, V, 20_000)
    loss = train_on(tiny_gpt(V), tokens, tmp_path, steps=150)
    assert loss > math.log(V) - 0.15, f"loss {loss:.3f} fell below ln(V) = {math.log(V):.3f}: the model sees its target"
    # the control: the same training with the copy bug does drive the loss toward zero, so the check above can fail
    bug = train_on(tiny_gpt(V), tokens, tmp_path, steps=150, copy_bug=True)
    assert bug < math.log(V) - 1.5


def test_learns_a_deterministic_next_token_rule(tmp_path):
    # next token = perm[current token]: fully predictable, so the loss must go to about zero
    V = 64
    perm = np.random.default_rng(0).permutation(V)
    tokens = [0]
    for _ in range(5000):
        tokens.append(perm[tokens[-1]])
    # the permutation's cycles are short; restart from random tokens so every token is seen
    rng = np.random.default_rng(1)
    for i in range(0, len(tokens), 200):
        tokens[i] = int(rng.integers(V))
        for j in range(i + 1, min(i + 200, len(tokens))):
            tokens[j] = perm[tokens[j - 1]]
    loss = train_on(tiny_gpt(V), tokens, tmp_path, steps=200)
    assert loss < 0.1


def test_batch_loader_targets_are_inputs_shifted_by_one(tmp_path):
    path = str(tmp_path / "t.bin")
    np.arange(1000, dtype=np.uint16).tofile(path)
    x, y = common.BatchLoader(path, "uint16", 4, 8, seed=0).next_batch()
    assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:, -1], x[:, -1] + 1)


def test_gradient_accumulation_equals_one_big_batch():
    model = tiny_gpt()
    x = torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(3))
    y = torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(4))
    model(x, y)[1].backward()
    big = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    for i in range(2):  # as train.py does: each micro-step's loss divided by the number of micro-steps
        (model(x[4 * i : 4 * i + 4], y[4 * i : 4 * i + 4])[1] / 2).backward()
    for a, p in zip(big, model.parameters()):
        torch.testing.assert_close(p.grad, a, rtol=1e-4, atol=1e-6)


def test_gpt2_parameter_count():
    # GPT-2 small: 124,439,808 parameters with the 50257 vocabulary; padding to 50304 adds 47 * 768 rows
    model = create_model("gpt", dict(block_size=1024, vocab_size=50257, n_layer=12, n_head=12, n_embd=768))
    assert model.num_params() == 124_439_808 + 47 * 768
    # non-embedding: everything but the (tied) token table and the position table
    assert model.num_params(non_embedding=True) == 124_439_808 - 50257 * 768 - 1024 * 768


def test_optimizer_groups_cover_every_parameter_once():
    model = tiny_gpt()
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in decayed) == (p.dim() >= 2), name  # no decay on biases and LayerNorm gains


def test_generate_never_samples_padding_columns():
    model = tiny_gpt(vocab_size=50)  # padded to 64
    with torch.no_grad():
        model.lm_head.weight[50:] = 10.0  # make padding rows win every argmax
    out = model.generate(torch.zeros((2, 1), dtype=torch.long), 20, temperature=1.0)
    assert out.max().item() < 50


def test_top_k_and_top_p_keep_exactly_the_intended_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    g = torch.Generator().manual_seed(0)
    seen_k = {sample_next_token(logits, top_k=2, generator=g).item() for _ in range(300)}
    assert seen_k == {0, 1}
    # top_p=0.8: 0.5 + 0.2 < 0.8, so the third token (0.15) is needed too, and no more
    seen_p = {sample_next_token(logits, top_p=0.8, generator=g).item() for _ in range(500)}
    assert seen_p == {0, 1, 2}
    assert sample_next_token(logits, temperature=0).item() == 0


def test_checkpoint_round_trip_gives_identical_logits(tmp_path):
    model = tiny_gpt()
    path = str(tmp_path / "ckpt.pt")
    common.save_checkpoint({"model_type": "gpt", "model_args": vars(model.config), "model": model.state_dict()}, path)
    ckpt = common.load_checkpoint(path)
    clone = create_model(ckpt["model_type"], ckpt["model_args"])
    clone.load_state_dict(ckpt["model"])
    x = torch.randint(0, 64, (2, 16))
    assert torch.equal(model(x)[0], clone(x)[0])


def test_sequence_longer_than_block_size_is_a_clear_error():
    with pytest.raises(ValueError, match="block_size"):
        tiny_gpt()(torch.zeros((1, 17), dtype=torch.long))


def test_gradient_checkpointing_gives_the_same_gradients():
    x = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(5))
    grads = []
    for flag in (False, True):
        model = tiny_gpt(gradient_checkpointing=flag)
        model(x, x.roll(-1, dims=1))[1].backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
