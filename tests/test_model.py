"""Properties of the models a user relies on: the next-token loss is right, learning works, counts are exact."""

import math
import os

import numpy as np
import pytest
import torch

import dataloader
import model as model_module
from checkpoints import load_checkpoint, save_checkpoint
from dataloader import BatchLoader
from model import BDHConfig, create_model, pick_model_args, sample_next_token, swiglu_hidden
from tests.helpers import REPO

# CPU float math slows down 10x or more on denormal numbers, which some of these trainings produce
torch.set_flush_denormal(True)
torch.set_num_threads(1)  # tiny models: a second thread costs more than it gives

TINY = dict(block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
TINY_BDH = dict(n_layer=2, n_head=2, n_embd=32, mlp_internal_dim_multiplier=4, dropout=0.0)  # N = 64 per head

# every variant: (model type, config fields on top of the tiny ones)
VARIANTS = {
    "gpt": ("gpt", {}),
    "rope": ("gpt", {"rope": True}),
    "rmsnorm": ("gpt", {"norm": "rmsnorm"}),
    "swiglu": ("gpt", {"mlp": "swiglu"}),
    "gqa": ("gpt", {"n_head": 4, "n_kv_head": 2}),
    "llama": ("gpt", {"rope": True, "norm": "rmsnorm", "mlp": "swiglu", "n_head": 4, "n_kv_head": 2}),
    "gpt_factorized": ("gpt", {"embedding_rank": 16}),
    # the small-model recipe's options together (untied head, x0 skip and value embeddings are parameters too)
    "recipe": ("gpt", {"rope": True, "norm": "rmsnorm", "mlp": "relu2", "qk_norm": True, "tie_embeddings": False,
                       "zero_init": True, "logit_softcap": 15.0, "x0_skip": True, "value_embeds": True,
                       "bias": False}),
    "bdh": ("bdh", {}),
    "bdh_factorized": ("bdh", {"embedding_rank": 16}),
}

# the forms the training tests train: each option above is in one of them (rope, rmsnorm, swiglu and gqa in llama)
TRAINED = ["gpt", "llama", "gpt_factorized", "recipe", "bdh", "bdh_factorized"]
META = {"dtype": "uint16", "vocab_size": 2**16}  # what BatchLoader reads from meta.json

def tiny(variant="gpt", vocab_size=64, **kw):
    model_type, extra = VARIANTS[variant]
    torch.manual_seed(0)
    base = TINY if model_type == "gpt" else TINY_BDH
    return create_model(model_type, {**base, **extra, "vocab_size": vocab_size, **kw})


def train_on(model, tokens, tmp_path, steps, lr=1e-2, batch_size=16, copy_bug=False):
    """Train through the real batch loader on a token file; returns the mean loss of the last 20 steps."""
    path = str(tmp_path / "train.bin")
    np.asarray(tokens, dtype=np.uint16).tofile(path)
    loader = BatchLoader(path, META, batch_size, TINY["block_size"], seed=0)
    (opt,) = model.configure_optimizers(0.0, lr, (0.9, 0.95), "cpu")
    losses = []
    for _ in range(steps):
        x, y = loader.next_batch()
        _, loss = model(x, x if copy_bug else y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return sum(losses[-20:]) / 20


@pytest.mark.parametrize("variant", VARIANTS)
def test_initial_loss_is_near_uniform(variant):
    model = tiny(variant, vocab_size=64)
    x = torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(2))
    _, loss = model(x, y)
    # padded to 64 columns, nothing to mask: a fresh model is close to uniform over the vocabulary
    assert abs(loss.item() - math.log(64)) < 0.1


@pytest.mark.parametrize("variant", TRAINED)
def test_random_tokens_loss_stays_at_ln_vocab(tmp_path, variant):
    # i.i.d. uniform tokens carry no information about the next token: the best possible loss is ln(V). A model
    # that can see its own target (the copy bug: targets not shifted, or attention leaking the future; for BDH,
    # attention reading the current token's own value) goes far lower.
    V = 64
    tokens = np.random.default_rng(0).integers(0, V, 20_000)
    loss = train_on(tiny(variant, V), tokens, tmp_path, steps=150)
    assert loss > math.log(V) - 0.15, f"loss {loss:.3f} fell below ln(V) = {math.log(V):.3f}: the model sees its target"
    # the control: the same training with the copy bug does drive the loss toward zero, so the check above can fail
    bug = train_on(tiny(variant, V), tokens, tmp_path, steps=150, copy_bug=True)
    assert bug < math.log(V) - 1.5


@pytest.mark.parametrize("variant", TRAINED)
def test_learns_a_deterministic_next_token_rule(tmp_path, variant):
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
    loss = train_on(tiny(variant, V), tokens, tmp_path, steps=250)
    assert loss < 0.1, f"loss {loss:.3f}"


def test_batch_loader_targets_are_inputs_shifted_by_one(tmp_path):
    path = str(tmp_path / "t.bin")
    np.arange(1000, dtype=np.uint16).tofile(path)
    x, y = BatchLoader(path, META, 4, 8, seed=0).next_batch()
    assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:, -1], x[:, -1] + 1)


def test_a_token_id_past_the_vocabulary_never_reaches_the_model(tmp_path, monkeypatch):
    # a file too large to scan whole at start is sampled; the one bad id the samples miss is caught in its batch
    monkeypatch.setattr(dataloader, "SCAN_ALL_TOKENS", 1000)
    monkeypatch.setattr(dataloader, "SAMPLE_TOKENS", 10)
    tokens = np.ones(10_000, dtype=np.uint16)
    tokens[5010] = 300
    path = str(tmp_path / "train.bin")
    tokens.tofile(path)
    meta = {"dtype": "uint16", "vocab_size": 257}
    loader = BatchLoader(path, meta, 8, 64, seed=0)  # the start-up samples miss position 5010
    with pytest.raises(ValueError, match="train.bin holds token id 300, but meta.json's vocab_size is 257"):
        for _ in range(1000):
            loader.next_batch()
    monkeypatch.setattr(dataloader, "SCAN_ALL_TOKENS", 2**25)  # scanned whole, it fails at once
    with pytest.raises(ValueError, match="token id 300"):
        BatchLoader(path, meta, 8, 64)


@pytest.mark.parametrize("variant", ["gpt", "gqa", "bdh"])
def test_gradient_accumulation_equals_one_big_batch(variant):
    model = tiny(variant)
    x = torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(3))
    y = torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(4))
    model(x, y)[1].backward()
    big = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    for i in range(2):  # as train.py does: each micro-step's loss divided by the number of micro-steps
        (model(x[4 * i : 4 * i + 4], y[4 * i : 4 * i + 4])[1] / 2).backward()
    for a, p in zip(big, model.parameters()):
        torch.testing.assert_close(p.grad, a, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("variant", ["gpt", "rope", "bdh"])
def test_gradient_checkpointing_gives_the_same_gradients(variant):
    x = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(3))
    grads = []
    for on in (False, True):
        model = tiny(variant, gradient_checkpointing=on)
        model(x, x)[1].backward()
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


# closed forms of the parameter count of every variant, in V (padded vocabulary), d (n_embd), L (n_layer),
# T (block_size), r (embedding_rank); GPT layer: attention 4d^2 + 4d biases, MLP 8d^2 + 5d biases, two LayerNorms 4d
GPT_LAYER = lambda d: 12 * d * d + 13 * d  # noqa: E731
COUNTS = {
    # tied token table V*d, position table T*d, final LayerNorm 2d
    "gpt": lambda V, d, L, T: V * d + T * d + L * GPT_LAYER(d) + 2 * d,
    # no position table
    "rope": lambda V, d, L, T: V * d + L * GPT_LAYER(d) + 2 * d,
    # RMSNorm: a gain only, so d instead of 2d per norm
    "rmsnorm": lambda V, d, L, T: V * d + T * d + L * (GPT_LAYER(d) - 2 * d) + d,
    # SwiGLU: three d x h matrices with h = 32 * round(d / 12), biases 2h + d
    "swiglu": lambda V, d, L, T: (
        V * d + T * d + L * (4 * d * d + 4 * d + 3 * d * swiglu_hidden(d) + 2 * swiglu_hidden(d) + d + 4 * d) + 2 * d
    ),
    # 4 query heads of size d/4, 2 key/value heads: qkv is d x (d + 2 * d/2), with as many biases
    "gqa": lambda V, d, L, T: V * d + T * d + L * (GPT_LAYER(d) - 2 * (d * d // 2 + d // 2)) + 2 * d,
    # rope + rmsnorm + swiglu + gqa: attention 3d^2 + 3d, SwiGLU 3dh + 2h + d, two gains per layer, one final
    "llama": lambda V, d, L, T: (
        V * d + L * (3 * d * d + 3 * d + 3 * d * swiglu_hidden(d) + 2 * swiglu_hidden(d) + d + 2 * d) + d
    ),
    # rank r = 16: V*r table and r*d projection instead of V*d
    "gpt_factorized": lambda V, d, L, T: V * 16 + 16 * d + T * d + L * GPT_LAYER(d) + 2 * d,
    # shared by all layers: E and E_v (nh x d x N) and D_x (nh*N x d), nh*N = 4d (multiplier 4); untied head
    "bdh": lambda V, d, L, T: 3 * 4 * d * d + 2 * V * d,
    "bdh_factorized": lambda V, d, L, T: 3 * 4 * d * d + 2 * (V * 16 + 16 * d),
    # untied head V*d; no biases: 12 d^2 and two RMSNorm gains per layer, one final; a_i and b_i per layer; every
    # other layer, the last included (ceil(L / 2) of them), a V x d value embedding and its 12 x n_head gate
    "recipe": lambda V, d, L, T: 2 * V * d + L * (12 * d * d + 2 * d) + d + 2 * L + -(-L // 2) * (V * d + 12 * 2),
}
NON_EMBEDDING = {
    "gpt": lambda d, L: L * GPT_LAYER(d) + 2 * d,
    "gpt_factorized": lambda d, L: L * GPT_LAYER(d) + 2 * d,
    "bdh": lambda d, L: 3 * 4 * d * d,
    "bdh_factorized": lambda d, L: 3 * 4 * d * d,
    "recipe": lambda d, L: L * (12 * d * d + 2 * d) + d + 2 * L + -(-L // 2) * 12 * 2,  # value embeddings: embedding
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_count_matches_its_closed_form(variant):
    model = tiny(variant, vocab_size=50)  # padded to 64
    assert model.num_params() == COUNTS[variant](64, 32, 2, 16)
    if variant in NON_EMBEDDING:
        assert model.num_params(non_embedding=True) == NON_EMBEDDING[variant](32, 2)


def test_gpt2_parameter_count():
    with torch.device("meta"):  # shapes only: no memory, no init time
        model = create_model("gpt", dict(block_size=1024, vocab_size=50257, n_layer=12, n_head=12, n_embd=768))
        factorized = create_model("gpt", {**vars(model.config), "embedding_rank": 128})
    # GPT-2 small: 124,439,808 parameters with the 50257 vocabulary; padding to 50304 adds 47 * 768 rows
    assert model.num_params() == 124_439_808 + 47 * 768
    # non-embedding: everything but the (tied) token table and the position table
    assert model.num_params(non_embedding=True) == 124_439_808 - 50257 * 768 - 1024 * 768
    # rank 128 saves V*d - (V*r + r*d) with V = 50304: 124.5M -> 92.4M
    saving = 50304 * 768 - (50304 * 128 + 128 * 768)
    assert factorized.num_params() == model.num_params() - saving == 92_379_648
    assert factorized.num_params(non_embedding=True) == model.num_params(non_embedding=True)


def test_bdh_default_shape_and_parameter_count():
    config = BDHConfig(vocab_size=50257)
    assert (config.n_layer, config.n_embd, config.n_head, config.mlp_internal_dim_multiplier) == (6, 256, 4, 128)
    assert config.dropout == 0.1 and config.N == 8192
    with torch.device("meta"):
        model = create_model("bdh", vars(config))
    # E, E_v: nh x D x N each, D_x: nh*N x D, shared by the 6 layers; token table and untied head V x D each
    assert model.num_params(non_embedding=True) == 3 * 4 * 256 * 8192 == 25_165_824
    assert model.num_params() == 25_165_824 + 2 * 50304 * 256


def test_flops_per_token_count_every_use_of_the_weights():
    gpt, bdh = tiny("gpt"), tiny("bdh")
    V, d, L, T, N, nh = 64, 32, 2, 16, 64, 2
    # GPT: 6 per matrix weight (the head's V*d; the position lookup is free) + 6 * L * d * T for causal attention
    assert gpt.flops_per_token(T) == 6 * (L * 12 * d * d + V * d) + 6 * L * d * T
    # BDH: E, E_v and D_x in each of L layers, the head; direct attention at T: 3 (fwd + bwd) * L * nh * T * (N + d)
    assert bdh.flops_per_token(T) == 6 * (L * 3 * nh * N * d + V * d) + 3 * L * nh * T * (N + d)


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_optimizer_groups_cover_every_parameter_once(variant, optimizer):
    model = tiny(variant)
    opts = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu", optimizer, embedding_lr=0.3, head_lr=0.004,
                                      scalar_lr=0.5)
    assert len(opts) == (2 if optimizer == "muon" else 1)
    held = [id(p) for opt in opts for g in opt.param_groups for p in g["params"]]
    assert len(held) == len(set(held))  # nothing twice
    assert set(held) == {id(p) for p in model.parameters()}  # everything once
    adam = {id(p): g for g in opts[0].param_groups for p in g["params"]}
    embedding = {id(p) for m in model.embedding_modules() for p in m.parameters()}
    head = {id(p) for m in model.head_modules() for p in m.parameters()}
    for name, p in model.named_parameters():
        if optimizer == "muon" and p.dim() >= 2 and id(p) not in embedding:
            assert id(p) not in adam, name  # the hidden matrices are Muon's
            continue
        group = adam[id(p)]
        assert (group["weight_decay"] > 0) == (p.dim() >= 2), name  # no decay on biases, gains and scalars
        lr = 0.004 if id(p) in head else 0.3 if id(p) in embedding else 0.5 if p.dim() < 2 else 1e-3
        assert group["lr"] == group["base_lr"] == lr, name  # each kind at its own rate
    if optimizer == "muon":
        assert opts[1].param_groups[0]["params"], "Muon got no matrices"


@pytest.mark.parametrize("variant", ["gpt_factorized", "bdh_factorized"])
def test_factorized_embeddings_start_like_unfactorized_ones(variant):
    # same scale of embeddings and of initial logits as the V x d table: a larger factor init is what diverges
    plain, factorized = tiny(variant.split("_")[0], vocab_size=4096), tiny(variant, vocab_size=4096)
    idx = torch.arange(4096).view(16, 256)
    embed = "embed" if variant.startswith("bdh") else "wte"
    assert abs(getattr(factorized, embed)(idx).std() / getattr(plain, embed)(idx).std() - 1) < 0.15
    x = torch.randn(4, 16, 32)  # what the head sees: normalized activations
    assert abs(factorized.lm_head.unembed(x).std() / plain.lm_head.unembed(x).std() - 1) < 0.15


@pytest.mark.parametrize("variant", ["gpt", "rope", "gpt_factorized", "bdh"])
@pytest.mark.parametrize("use_cache", [True, False])
def test_generate_never_samples_padding_columns(variant, use_cache):
    model = tiny(variant, vocab_size=50).eval()  # padded to 64
    unembed = model.lm_head.unembed
    model.lm_head.unembed = lambda x: unembed(x) + torch.cat((torch.zeros(50), torch.full((14,), 100.0)))
    out = model.generate(torch.zeros((2, 1), dtype=torch.long), 20, temperature=1.0, use_cache=use_cache)
    assert out.shape == (2, 21) and out.max().item() < 50


def logits_while_generating(model, idx, prompt_len, use_cache, monkeypatch):
    """The logits generate() sees at each step when the tokens it picks are forced to be idx's."""
    seen = []

    def forced(logits, *args):
        seen.append(logits.clone())
        return idx[:, prompt_len + len(seen) - 1 : prompt_len + len(seen)]

    monkeypatch.setattr(model_module, "sample_next_token", forced)
    model.generate(idx[:, :prompt_len], idx.size(1) - prompt_len, use_cache=use_cache)
    monkeypatch.undo()
    return seen


@pytest.mark.parametrize("variant", ["gpt", "rope", "gqa", "swiglu", "gpt_factorized"])
def test_kv_cache_generation_equals_recomputation(variant, monkeypatch):
    # the prompt (5) plus new tokens (35) run past block_size (16): the cropped context must match too
    model = tiny(variant).eval()
    idx = torch.randint(0, 64, (2, 40), generator=torch.Generator().manual_seed(5))
    cached, recomputed = (logits_while_generating(model, idx, 5, c, monkeypatch) for c in (True, False))
    assert len(cached) == len(recomputed) == 35
    for t, (a, b) in enumerate(zip(cached, recomputed)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=f"step {t}")
    # within block_size, the cache is exactly a forward over the whole sequence
    cache = model.new_cache()
    steps = [model(idx[:, :5], cache=cache)[0]] + [model(idx[:, t : t + 1], cache=cache)[0] for t in range(5, 16)]
    torch.testing.assert_close(torch.cat(steps, dim=1), model(idx[:, :16])[0], rtol=1e-5, atol=1e-5)
    assert cache.pos == 16
    outs = [model.generate(idx[:, :5], 30, generator=torch.Generator().manual_seed(0), use_cache=c) for c in (1, 0)]
    assert torch.equal(*outs)


def test_generate_stream_yields_the_tokens_of_generate():
    model = tiny("gpt").eval()
    idx = torch.zeros((2, 3), dtype=torch.long)
    stream = list(model.generate_stream(idx, 7, generator=torch.Generator().manual_seed(0)))
    assert len(stream) == 7 and all(t.shape == (2, 1) for t in stream)
    assert torch.equal(torch.cat((idx, *stream), 1), model.generate(idx, 7, generator=torch.Generator().manual_seed(0)))


def test_top_k_and_top_p_keep_exactly_the_intended_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    g = torch.Generator().manual_seed(0)
    seen_k = {sample_next_token(logits, top_k=2, generator=g).item() for _ in range(300)}
    assert seen_k == {0, 1}
    # top_p=0.8: 0.5 + 0.2 < 0.8, so the third token (0.15) is needed too, and no more
    seen_p = {sample_next_token(logits, top_p=0.8, generator=g).item() for _ in range(500)}
    assert seen_p == {0, 1, 2}
    assert sample_next_token(logits, temperature=0).item() == 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_checkpoint_round_trip_gives_identical_logits(tmp_path, variant):
    model = tiny(variant)
    path = str(tmp_path / "ckpt.pt")
    model_type = VARIANTS[variant][0]
    ckpt = {"model_type": model_type, "model_args": vars(model.config), "model": model.state_dict(), "iter_num": 0,
            "config": {}}
    save_checkpoint(ckpt, path)
    ckpt = load_checkpoint(path)
    clone = create_model(ckpt["model_type"], ckpt["model_args"])
    clone.load_state_dict(ckpt["model"])
    x = torch.randint(0, 64, (2, 16))
    assert torch.equal(model(x)[0], clone(x)[0])


def test_sequence_longer_than_block_size_is_a_clear_error():
    with pytest.raises(ValueError, match="block_size"):
        tiny("gpt")(torch.zeros((1, 17), dtype=torch.long))


def test_tinystories_configs_compare_gpt_and_bdh_at_equal_non_embedding_size():
    models = {}
    for name in ("tinystories_gpt", "tinystories_bdh", "tinystories_gpt_factorized"):
        cfg = {}
        with open(os.path.join(REPO, "config", f"{name}.py")) as f:
            exec(f.read(), {}, cfg)  # plain assignments, as configurator.py reads them
        args = pick_model_args(cfg["model"], cfg)
        with torch.device("meta"):
            models[name] = create_model(cfg["model"], {**args, "vocab_size": 50257})
    gpt, bdh, factorized = (models[n].num_params(non_embedding=True) for n in models)
    assert abs(gpt / bdh - 1) < 0.05 and factorized == gpt
    # the counts in the README's parameter table
    assert [m.num_params() for m in models.values()] == [76_816_896, 50_921_472, 38_314_496]


@pytest.mark.parametrize("variant", ["gpt", "bdh"])
def test_the_loss_sees_only_the_real_vocabulary(variant):
    # 65 tokens (nanoGPT's Shakespeare characters) are padded to 128 columns; the padding must not dilute the
    # softmax: a fresh model starts at ln 65, not ln 128, and the padding rows of the head learn nothing
    model = tiny(variant, vocab_size=65)
    idx = torch.randint(65, (4, 16), generator=torch.Generator().manual_seed(0))
    targets = torch.randint(65, (4, 16), generator=torch.Generator().manual_seed(1))
    logits, loss = model(idx, targets)
    assert logits.size(-1) == 128 and (logits[..., 65:] == float("-inf")).all()
    expected = torch.nn.functional.cross_entropy(logits[..., :65].reshape(-1, 65), targets.view(-1))
    torch.testing.assert_close(loss, expected)
    assert abs(loss.item() - math.log(65)) < 0.05, loss.item()
    loss.backward()
    head = model.lm_head.weight if variant == "bdh" else model.wte.weight
    assert head.grad[65:].abs().sum() == 0 and head.grad[:65].abs().sum() > 0


def test_cpu_rms_norm_computes_torch_rms_norm_and_its_gradients():
    """model.rms_norm's hand-written backward (RMSNormCPU, the CPU's fast path) against F.rms_norm's autograd, with
    and without a gain; the control: the backward without its mean term is wrong."""
    torch.manual_seed(0)
    x = torch.randn(3, 7, 16, dtype=torch.float32) * 3
    w = torch.rand(16) + 0.5
    dy = torch.randn(3, 7, 16)
    for weight in (w, None):
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        wa = weight.clone().requires_grad_() if weight is not None else None
        wb = weight.clone().requires_grad_() if weight is not None else None
        ours = model_module.rms_norm(a, wa, 1e-5)
        ref = torch.nn.functional.rms_norm(b, (16,), wb, 1e-5)
        torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
        ours.backward(dy)
        ref.backward(dy)
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)
        if weight is not None:
            torch.testing.assert_close(wa.grad, wb.grad, rtol=1e-5, atol=1e-5)
    a = x.clone().requires_grad_()
    model_module.rms_norm(a, w, 1e-5).backward(dy)
    no_mean_term = dy * w * torch.rsqrt(x.square().mean(-1, keepdim=True) + 1e-5)  # as if 1/RMS did not depend on x
    assert not torch.allclose(no_mean_term, a.grad, atol=1e-3)


def test_cpu_rope_is_the_real_rotation():
    """apply_rope's complex product on a CPU turns each pair (x[2i], x[2i+1]) as the real formula does (the form a GPU
    runs, and the one GPT exports to transformers and llama.cpp assume), values and gradients; the control: the
    other pairing, (x[i], x[i + dim/2]), differs."""
    torch.manual_seed(0)
    q = torch.randn(2, 8, 3, 4, 16).select(3, 1)  # (B, T, nh, hs) taken from a wider buffer: strided, as in attention
    q = q.transpose(1, 2)  # (B, nh, T, hs)
    cos, sin = model_module.rope_cos_sin(torch.arange(8), 16, 10000.0)
    real = lambda x: x * cos + torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2) * sin  # noqa: E731
    a, b = q.clone().requires_grad_(), q.clone().requires_grad_()
    ours, ref = model_module.apply_rope(a, cos, sin), real(b)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    dy = torch.randn_like(ref)
    ours.backward(dy)
    ref.backward(dy)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-6)
    x1, x2 = q[..., :8], q[..., 8:]
    halves = torch.cat([x1 * cos[..., ::2] - x2 * sin[..., ::2], x1 * sin[..., ::2] + x2 * cos[..., ::2]], -1)
    assert not torch.allclose(halves, ours, atol=1e-2)
