"""
Small language models in one file: a GPT (GPT-2 by default, with modern options) and BDH, Pathway's Dragon
Hatchling. No argv, no files: scripts build them from a dict of config fields with create_model().

Every model here keeps one contract:

    logits, loss = model(idx, targets=None, cache=None)   # idx, targets: (B, T) int64

targets[b, t] is the token that FOLLOWS idx[b, t]. The batch loader (dataloader.BatchLoader) shifts inputs against
targets, once; no model shifts again. logits has config.padded_vocab_size columns. The columns past vocab_size pad
the matmuls to a fast width and hold -inf: they are never targets, the loss's softmax leaves them out (a
65-character vocabulary starts at ln 65, not ln 128), and generation never samples them.

cache is the explicit decoding state from model.new_cache(): GPT's keys and values per layer, or BDH's recurrent
state. Passed to forward, it is read and then extended by the new tokens; generate() does this for you. A cache takes
a prompt first, then one token per row at a time. Those one-token steps compute each row on its own (per_row), so a
row's logits are the same bits whatever other rows share its batch: several streams generated together
(generation.Batch, serve.py) give each the text it gets alone.
"""

import math
import warnings
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from optim import configure_optimizers

# compiled BDH runs its rotary's complex product eagerly, on purpose (bdh_apply_rope): not a slowdown to warn of
warnings.filterwarnings("ignore", message="Torchinductor does not support code generation for complex")


def pad_vocab(vocab_size, multiple=64):
    """Round the vocabulary up to a multiple of 64: matmuls of such widths run much faster on GPUs."""
    return ((vocab_size + multiple - 1) // multiple) * multiple


def mask_padding(logits, vocab_size):
    """-inf in the padding columns, in place: the softmax (loss, sampling) then covers the real vocabulary only.
    Writing B*T*(padded - vocab_size) numbers costs nothing measurable; slicing the logits instead copies them all
    (23% of a training step at GPT-2's vocabulary on a CPU)."""
    if logits.size(-1) > vocab_size:
        with torch.no_grad():  # their gradient is exactly 0 (softmax of -inf): no need to track the write
            logits[..., vocab_size:] = float("-inf")
    return logits


def per_row(x, w):
    """x (B, 1, K) @ w (K, N) as B separate vector-matrix products (one batched product). A single (B, K) x (K, N)
    product may sum a row's terms in another order when B changes (the library picks its kernel by shape), which
    moves a logit by ~1e-7 and can flip a sampled token; each row on its own is the same bits at any B. It reads w
    once per row: the price of that sameness when several streams decode together."""
    return torch.bmm(x, w.unsqueeze(0).expand(x.size(0), -1, -1))


class Linear(nn.Linear):
    """nn.Linear whose one-token steps of decoding (x (B, 1, K)) compute each row on its own (per_row)."""

    def forward(self, x):
        if x.dim() != 3 or x.size(1) != 1:
            return super().forward(x)
        y = per_row(x, self.weight.t())
        return y if self.bias is None else y + self.bias


def next_token_loss(logits, targets):
    """Mean cross-entropy of logits (B, T, V) against targets (B, T), or None without targets.
    No shift here: targets are already the next tokens."""
    if targets is None:
        return None
    return F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.view(-1), ignore_index=-1)


def sample_next_token(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """Pick the next token from (B, V) logits. Temperature 0 is greedy. Returns (B, 1)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the tokens ranked above it already reach top_p; the top token always stays
        drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p
        drop = drop_sorted.scatter(-1, sorted_idx, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = F.softmax(logits.float(), dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


class LanguageModel(nn.Module):
    """What GPT and BDH share. A subclass defines forward(idx, targets=None, cache=None), new_cache(),
    embedding_modules() and flops_per_token(seq_len)."""

    def metrics(self):
        """Extra numbers of the last forward for the training log: none by default."""
        return {}

    def metric_names(self):
        """The keys metrics() returns, known before any forward: the training log's columns."""
        return []

    def head_modules(self):
        """The output head's modules where it is not the token embedding's (the optimizer's head_lr): none here."""
        return []

    def num_params(self, non_embedding=False):
        """Parameters, each shared tensor counted once. non_embedding leaves out the token and position tables and
        the head (a factorized embedding's projections are embedding parameters too)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            embedding = {id(p): p for m in self.embedding_modules() for p in m.parameters()}
            n -= sum(p.numel() for p in embedding.values())
        return n

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type, optimizer="adamw",
                             muon_learning_rate=0.02, muon_momentum=0.95, embedding_lr=0.0, head_lr=0.0, scalar_lr=0.0,
                             muon_ns_steps=5, muon_normuon=False, muon_polar_express=False):
        """A list of optimizers that together hold every parameter once: optim.configure_optimizers."""
        return configure_optimizers(self, weight_decay, learning_rate, betas, device_type, optimizer,
                                    muon_learning_rate, muon_momentum, embedding_lr, head_lr, scalar_lr, muon_ns_steps,
                                    muon_normuon, muon_polar_express)

    def estimate_mfu(self, tokens_per_iter, dt, peak_flops, seq_len):
        """Model FLOPs utilization: achieved training FLOP/s (forward and backward) over the device's peak."""
        return self.flops_per_token(seq_len) * tokens_per_iter / dt / peak_flops

    @torch.no_grad()
    def generate_stream(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, generator=None,
                        use_cache=True):
        """Yield max_new_tokens new tokens after the prompt idx (B, T), one (B, 1) tensor at a time. With use_cache
        the model reads the earlier tokens from its cache; without, it recomputes the whole context every token."""
        context = getattr(self.config, "block_size", None)  # BDH has no context limit
        tokens = idx  # the whole sequence so far
        new = idx  # the tokens the cache has not seen yet
        cache = None
        for _ in range(max_new_tokens):
            # past block_size the context is the last block_size tokens: each sees less than before (and with
            # learned positions sits elsewhere), so no cached key stays valid and the window is prefilled again
            if cache is None or (context and cache.pos + new.size(1) > context):
                cache = self.new_cache() if use_cache else None
                new = tokens[:, -context:] if context else tokens
            logits, _ = self(new, cache=cache)
            token = sample_next_token(logits[:, -1, : self.config.vocab_size], temperature, top_k, top_p, generator)
            tokens = torch.cat((tokens, token), dim=1)
            new = token
            yield token

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, generator=None, use_cache=True):
        """idx (B, T) extended by max_new_tokens tokens."""
        new = self.generate_stream(idx, max_new_tokens, temperature, top_k, top_p, generator, use_cache)
        return torch.cat((idx, *new), dim=1)


# -----------------------------------------------------------------------------
# embeddings and rotary positions, shared by GPT and BDH


class TokenEmbedding(nn.Module):
    """The V x d token table, or with rank r > 0 a V x r table times an r x d projection, which saves
    V*d - (V*r + r*d) parameters. unembed() is its transpose, the output head: GPT ties its head to its input
    embedding, BDH has a second TokenEmbedding as its head.
    The table starts at GPT-2's std 0.02 and the projection at std 1/sqrt(r), so a factorized embedding (and tied
    logits) starts at the same scale as a full one. Larger factor inits are a known cause of early divergence."""

    def __init__(self, vocab_size, n_embd, rank=0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_size, rank or n_embd).normal_(std=0.02))  # (V, r) or (V, d)
        self.proj = nn.Parameter(torch.empty(rank, n_embd).normal_(std=rank**-0.5)) if rank else None  # (r, d)

    def forward(self, idx):  # (B, T) -> (B, T, d)
        x = F.embedding(idx, self.weight)
        if self.proj is None:
            return x
        return per_row(x, self.proj) if x.size(1) == 1 else x @ self.proj

    def unembed(self, x):  # (B, T, d) -> (B, T, V)
        one = x.dim() == 3 and x.size(1) == 1  # a decoding step: each row on its own
        if self.proj is not None:
            x = per_row(x, self.proj.t()) if one else x @ self.proj.t()
        return per_row(x, self.weight.t()) if one else F.linear(x, self.weight)

    def full(self, vocab_size=None):
        """The (V, d) table as one float32 matrix: a factorized one multiplied out; vocab_size drops the padding rows
        (export, int8)."""
        w = self.weight.detach().float()
        if self.proj is not None:
            w = w @ self.proj.detach().float()
        return w[:vocab_size].clone()

    def matmul_weights(self, embed=True, unembed=True):
        """Weights multiplied per token. Embedding, only the projection: a lookup is free. Unembedding, all."""
        r = 0 if self.proj is None else self.proj.numel()
        return (r if embed else 0) + (self.weight.numel() + r if unembed else 0)


def rope_cos_sin(positions, dim, theta):
    """cos and sin (..., T, dim) of rotary embeddings for positions (..., T): (T,) for a batch that shares them, (B, T)
    for rows at positions of their own. Dims 2i and 2i+1 form a pair, turned by pos * theta^(-2i/dim)."""
    inv_freq = theta ** (-torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) / dim)  # (dim/2,)
    angles = (positions.float()[..., None] * inv_freq).repeat_interleave(2, dim=-1)  # (..., T, dim), a pair shares
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """Rotate each pair (x[2i], x[2i+1]) of x (..., T, dim) by its position's angle. On a CPU in float32, one
    complex product per pair (rotate_pairs): the same numbers, faster (with RMSNormCPU, about 10% of a GPT training
    step at width 128: BENCHMARKS.md); elsewhere the real formula, which torch.compile fuses (it makes no code for
    complex numbers)."""
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        return rotate_pairs(x, cos[..., 0::2], sin[..., 0::2])
    return rotate_pairs_real(x, cos, sin)


def rotate_pairs_real(x, cos, sin):
    """apply_rope's real formula, cos and sin (..., T, dim) with a pair's angle twice. In x's dtype: half-size
    temporaries matter at BDH's widths, and bf16 rounds the rotation as it rounds x itself."""
    x_rot = torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2)  # (-x1, x0, -x3, x2, ...)
    return x * cos.to(x.dtype) + x_rot * sin.to(x.dtype)


def rotate_pairs(x, cos, sin):
    """apply_rope for float32/float64 x (..., T, dim) with cos and sin (..., T, dim / 2), one per pair: one complex
    product (x0 + i x1) * (cos + i sin), one pass forward and one backward where the real formula (slices, stack,
    two products, a sum) makes several."""
    pairs = torch.view_as_complex(x.unflatten(-1, (-1, 2)))  # (..., T, dim / 2), a view: pairs are adjacent
    return torch.view_as_real(pairs * torch.complex(cos, sin).to(pairs.dtype)).flatten(-2)


class RMSNormCPU(torch.autograd.Function):
    """F.rms_norm's arithmetic, its backward written out: on a CPU, torch's rms_norm kernel and autograd's backward
    through it are slower than these few passes (with rotate_pairs, about 10% of a training step: BENCHMARKS.md)."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        r = torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)  # (..., 1): 1 / RMS
        xhat = x * r
        ctx.save_for_backward(xhat, weight, r)
        return xhat if weight is None else xhat * weight

    @staticmethod
    def backward(ctx, dy):
        xhat, weight, r = ctx.saved_tensors
        dw = (dy * xhat).flatten(0, -2).sum(0) if ctx.needs_input_grad[1] else None
        g = dy if weight is None else dy * weight  # the gradient at xhat
        return (g - xhat * (g * xhat).mean(-1, keepdim=True)) * r, dw, None


def rms_norm(x, weight=None, eps=1e-5):
    """RMSNorm over the last dimension: RMSNormCPU on a CPU in float32, F.rms_norm elsewhere (GPU kernels, bf16)."""
    if x.device.type == "cpu" and x.dtype == torch.float32:
        return RMSNormCPU.apply(x, weight, eps)
    return F.rms_norm(x, x.shape[-1:], weight, eps)


# -----------------------------------------------------------------------------
# GPT

GPT_ROPE_THETA = 10000.0
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "gelu_tanh", "swiglu", "relu2")  # gelu_tanh: GPT-2's own tanh approximation (pretrained GPT-2
# weights); relu2: ReLU(x)^2 (modded-nanogpt, nanochat), GELU's shape at GELU's cost
QK_NORM_SCALE = 1.2**2  # with qk_norm, scores are (q . k) * 1.44 / sqrt(hs) of unit-RMS q and k (nanochat's 1.2 each)


def check_fields(config, positive=(), non_negative=(), choices=None):
    """A config dataclass's values that can't build a model are a ValueError naming the field."""
    for key in positive + non_negative:
        value, low = getattr(config, key), 1 if key in positive else 0
        if type(value) is not int or value < low:
            raise ValueError(f"{key}={value!r} must be a whole number >= {low}")
    if not (isinstance(config.dropout, (int, float)) and 0 <= config.dropout < 1):
        raise ValueError(f"dropout={config.dropout!r} must be at least 0 and below 1")
    for key, options in (choices or {}).items():
        if getattr(config, key) not in options:
            raise ValueError(f"{key}={getattr(config, key)!r}: choose one of {', '.join(options)}")


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50257  # the tokenizer's; the embedding table is padded to padded_vocab_size
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    n_kv_head: int = 0  # grouped-query attention: key/value heads, each read by n_head // n_kv_head queries; 0: n_head
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm layers, as GPT-2
    rope: bool = False  # rotary position embeddings on queries and keys instead of the learned position table
    norm: str = "layernorm"  # or 'rmsnorm'
    mlp: str = "gelu"  # or 'gelu_tanh' (GPT-2's approximation, for its pretrained weights), 'swiglu' or 'relu2'
    embedding_rank: int = 0  # > 0: factorized token table and (tied) head, see TokenEmbedding
    gradient_checkpointing: bool = False  # recompute each block's activations in backward: less memory, more time
    # the small-model recipe's options (modded-nanogpt, nanochat), all off for GPT-2:
    qk_norm: bool = False  # queries and keys at unit RMS per head (RMSNorm without a gain), scores scaled by 1.44
    tie_embeddings: bool = True  # False: an output head of its own instead of the token table's transpose
    zero_init: bool = False  # projections into the residual stream start at zero (each block starts as the
    # identity), and an untied head at std 0.001
    logit_softcap: float = 0.0  # > 0: logits squashed smoothly into (-cap, cap): cap * tanh(logits / cap)
    x0_skip: bool = False  # before each block, x = a_i * x + b_i * x0 with learned per-layer scalars (a_i from 1,
    # b_i from 0): every layer reads the token embedding x0 directly
    value_embeds: bool = False  # every other layer (the last included) adds a token embedding of its own to its
    # values, through a learned gate per head (ResFormer's value residual, as nanochat)

    def __post_init__(self):
        check_fields(self, positive=("block_size", "vocab_size", "n_layer", "n_head", "n_embd"),
                     non_negative=("n_kv_head", "embedding_rank"), choices={"norm": NORMS, "mlp": MLPS})
        if not (isinstance(self.logit_softcap, (int, float)) and self.logit_softcap >= 0):
            raise ValueError(f"logit_softcap={self.logit_softcap!r} must be a number >= 0 (0: off; 15 is nanochat's)")
        if self.n_embd % self.n_head:
            divisors = [h for h in range(1, self.n_embd + 1) if self.n_embd % h == 0]
            n_head = min(divisors, key=lambda h: abs(h - self.n_head))
            raise ValueError(f"n_embd={self.n_embd} must be a multiple of n_head={self.n_head} (each head gets "
                             f"n_embd / n_head dimensions), e.g. n_head={n_head} or "
                             f"n_embd={self.n_head * max(1, round(self.n_embd / self.n_head))}")
        if self.n_kv_head and self.n_head % self.n_kv_head:
            raise ValueError(f"n_head={self.n_head} must be a multiple of n_kv_head={self.n_kv_head} (each key/value "
                             "head serves the same number of query heads)")
        if self.rope and (self.n_embd // self.n_head) % 2:
            raise ValueError(f"rope rotates pairs of dimensions: the head size n_embd / n_head = "
                             f"{self.n_embd // self.n_head} must be even")

    @property
    def padded_vocab_size(self):
        return pad_vocab(self.vocab_size)


class Norm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's has no bias=False before 2.1), or RMSNorm (a gain only)."""

    def __init__(self, ndim, kind="layernorm", bias=True):
        super().__init__()
        self.kind = kind
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias and kind == "layernorm" else None

    def forward(self, x):
        if self.kind == "rmsnorm":
            return rms_norm(x, self.weight, 1e-5)
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class KVCache:
    """GPT's decoding state: each layer's keys and values in (B, nkv, block_size, hs) buffers, allocated at the
    prompt, filled up to pos: an int while the rows are one batch of prompts, a (B,) tensor for rows of streams that
    started apart (generation.Batch builds those with rows() and concat())."""

    def __init__(self, n_layer, block_size):
        self.k = [None] * n_layer
        self.v = [None] * n_layer
        self.block_size = block_size
        self.pos = 0  # how many positions each row holds: the position of its next token

    def append(self, layer, k, v):
        """Write one layer's new keys and values (B, nkv, T, hs) at the rows' positions; return its buffers."""
        if self.k[layer] is None:
            B, nkv, _, hs = k.shape
            self.k[layer] = k.new_zeros(B, nkv, self.block_size, hs)
            self.v[layer] = v.new_zeros(B, nkv, self.block_size, hs)
        if isinstance(self.pos, int):
            self.k[layer][:, :, self.pos : self.pos + k.size(2)] = k
            self.v[layer][:, :, self.pos : self.pos + k.size(2)] = v
        else:  # one new position per row, each at its own
            rows = torch.arange(k.size(0), device=k.device)
            self.k[layer][rows, :, self.pos.to(k.device)] = k[:, :, 0]
            self.v[layer][rows, :, self.pos.to(k.device)] = v[:, :, 0]
        return self.k[layer], self.v[layer]

    def rows(self, index):
        """A cache of some of the rows (index: a list of row numbers)."""
        out = KVCache(len(self.k), self.block_size)
        out.k, out.v = [k[index] for k in self.k], [v[index] for v in self.v]
        out.pos = row_positions(self.pos, len(self.k[0]))[index]
        return out

    @staticmethod
    def concat(caches):
        """One cache of the rows of several, in order."""
        out = KVCache(len(caches[0].k), caches[0].block_size)
        out.k = [torch.cat([c.k[i] for c in caches]) for i in range(len(out.k))]
        out.v = [torch.cat([c.v[i] for c in caches]) for i in range(len(out.v))]
        out.pos = torch.cat([row_positions(c.pos, len(c.k[0])) for c in caches])
        return out


def row_positions(pos, rows):
    """A cache's positions as a (rows,) tensor, from an int (every row at one) or a tensor already."""
    return pos.clone() if torch.is_tensor(pos) else torch.full((rows,), pos, dtype=torch.long)


def decode_attention(q, k, v, lengths, scale):
    """One new query per row (B, nh, 1, hs) against that row's first lengths[b] keys and values in the cache's
    buffers (B, nkv, L, hs), every row's products on their own (their shapes don't depend on the other rows')."""
    B, nh, _, hs = q.shape
    nkv, L = k.size(1), k.size(2)
    att = (q.view(B, nkv, nh // nkv, hs) @ k.mT) * scale  # (B, nkv, g, L): g query heads per key/value head
    unseen = torch.arange(L, device=q.device) >= lengths.to(q.device)[:, None]  # (B, L)
    att = att.float().masked_fill(unseen[:, None, None, :], float("-inf")).softmax(dim=-1).to(v.dtype)
    return (att @ v).view(B, nh, 1, hs)


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer):
        super().__init__()
        self.layer = layer  # its index: where its keys and values go in a KVCache
        self.n_head = config.n_head
        self.n_kv_head = config.n_kv_head or config.n_head
        self.head_size = config.n_embd // config.n_head
        kv_dim = self.n_kv_head * self.head_size
        self.c_attn = Linear(config.n_embd, config.n_embd + 2 * kv_dim, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.residual_projection = True  # scaled init, see GPT._init_weights
        self.resid_dropout = nn.Dropout(config.dropout)
        self.dropout = config.dropout
        self.qk_norm = config.qk_norm
        # value embeddings: a gate per key/value head, read from the first channels of x, in (0, 3)
        self.ve_gate = Linear(min(12, config.n_embd), self.n_kv_head, bias=False) if has_ve(config, layer) else None
        if self.ve_gate is not None:
            self.ve_gate.gate = True  # starts near 1.5, see GPT._init_weights

    def forward(self, x, rope=None, cache=None, ve=None):
        B, T, C = x.size()
        hs = self.head_size
        kv_dim = self.n_kv_head * hs
        q, k, v = self.c_attn(x).split([C, kv_dim, kv_dim], dim=2)
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_kv_head, hs).transpose(1, 2)  # (B, nkv, T, hs)
        v = v.view(B, T, self.n_kv_head, hs).transpose(1, 2)  # (B, nkv, T, hs)
        if ve is not None:  # (B, T, kv_dim), the layer's own embedding of the tokens
            gate = 3 * torch.sigmoid(self.ve_gate(x[..., : self.ve_gate.in_features]))  # (B, T, nkv)
            v = v + gate.transpose(1, 2).unsqueeze(-1) * ve.view(B, T, self.n_kv_head, hs).transpose(1, 2)
        if rope is not None:
            q = apply_rope(q, *rope)
            k = apply_rope(k, *rope)
        if self.qk_norm:  # a rotation keeps the RMS: before or after rope is the same
            q, k = rms_norm(q, eps=1e-5), rms_norm(k, eps=1e-5)  # Qwen3's eps: exports exactly
        scale = (QK_NORM_SCALE if self.qk_norm else 1.0) / math.sqrt(hs)
        if cache is not None and T == 1:  # one new token per row: it reads the keys and values its row has
            keys, values = cache.append(self.layer, k, v)  # (B, nkv, block_size, hs)
            y = decode_attention(q, keys, values, row_positions(cache.pos, B) + 1, scale)
            return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(B, T, C)))
        if cache is not None:  # a prompt: it fills the cache's first T positions and attends causally to itself
            assert cache.pos == 0, "a cache takes a prompt first, then one token at a time"
            cache.append(self.layer, k, v)
        if self.n_kv_head != self.n_head:  # each group of query heads reads one key/value head
            k = k.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
            v = v.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
        dropout_p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=T > 1, scale=scale)  # (B,nh,T,hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.residual_projection = True
        self.dropout = nn.Dropout(config.dropout)
        self.kind = config.mlp

    def forward(self, x):
        h = self.c_fc(x)
        if self.kind == "relu2":
            h = F.relu(h).square()
        else:
            h = F.gelu(h, approximate="tanh" if self.kind == "gelu_tanh" else "none")
        return self.dropout(self.c_proj(h))


def swiglu_hidden(n_embd):
    """SwiGLU's hidden width, about 8d/3: its three d x h matrices then hold as many weights as GELU's d x 4d and
    4d x d. Rounded to a multiple of 32 for fast matmuls."""
    return 32 * max(1, round(n_embd / 12))


class SwiGLU(nn.Module):
    def __init__(self, config):
        super().__init__()
        h = swiglu_hidden(config.n_embd)
        self.c_fc = Linear(config.n_embd, 2 * h, bias=config.bias)  # gate and up projections in one matmul
        self.c_proj = Linear(h, config.n_embd, bias=config.bias)
        self.c_proj.residual_projection = True
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        gate, up = self.c_fc(x).chunk(2, dim=-1)
        return self.dropout(self.c_proj(F.silu(gate) * up))


class Block(nn.Module):
    def __init__(self, config, layer):
        super().__init__()
        self.ln_1 = Norm(config.n_embd, config.norm, config.bias)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = Norm(config.n_embd, config.norm, config.bias)
        self.mlp = SwiGLU(config) if config.mlp == "swiglu" else MLP(config)

    def forward(self, x, rope=None, cache=None, ve=None):
        x = x + self.attn(self.ln_1(x), rope, cache, ve)
        x = x + self.mlp(self.ln_2(x))
        return x


def has_ve(config, layer):
    """Whether a layer has value embeddings: every other layer, the last one included (nanochat)."""
    return config.value_embeds and layer % 2 == (config.n_layer - 1) % 2


class GPT(LanguageModel):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.wte = TokenEmbedding(config.padded_vocab_size, config.n_embd, config.embedding_rank)
        self.wpe = None if config.rope else nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config, i) for i in range(config.n_layer)])
        self.ln_f = Norm(config.n_embd, config.norm, config.bias)
        # tied: the head is the token embedding's transpose (TokenEmbedding.unembed); untied: a table of its own
        self.lm_head = self.wte if config.tie_embeddings else TokenEmbedding(config.padded_vocab_size, config.n_embd,
                                                                             config.embedding_rank)
        if config.x0_skip:
            self.resid_lambdas = nn.Parameter(torch.ones(config.n_layer))  # a_i: the residual stream's scale
            self.x0_lambdas = nn.Parameter(torch.zeros(config.n_layer))  # b_i: how much x0 each layer reads
        kv_dim = (config.n_kv_head or config.n_head) * (config.n_embd // config.n_head)
        self.value_embeds = nn.ModuleDict({str(i): nn.Embedding(config.padded_vocab_size, kv_dim)
                                           for i in range(config.n_layer) if has_ve(config, i)})
        self.apply(self._init_weights)
        if config.zero_init and not config.tie_embeddings:
            nn.init.normal_(self.lm_head.weight, std=0.001)  # small logits at first: every token about equally likely

    def _init_weights(self, module):
        # GPT-2's init: N(0, 0.02). Projections into the residual stream get 1/sqrt(2 * n_layer) of that, since
        # every layer adds two of them to the stream (or 0 with zero_init). TokenEmbedding initializes itself.
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "residual_projection", False):
                std = 0.0 if self.config.zero_init else 0.02 / math.sqrt(2 * self.config.n_layer)
            torch.nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
            if getattr(module, "gate", False):
                torch.nn.init.uniform_(module.weight, 0.0, 0.02)  # a value-embedding gate starts near 3 * 0.5
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def embedding_modules(self):
        return [m for m in (self.wte, self.wpe, self.lm_head, *self.value_embeds.values()) if m is not None]

    def head_modules(self):
        return [] if self.lm_head is self.wte else [self.lm_head]

    def new_cache(self):
        return KVCache(self.config.n_layer, self.config.block_size)

    def forward(self, idx, targets=None, cache=None):
        T = idx.size(1)
        pos = 0 if cache is None else cache.pos  # the position of idx's first token: an int, or (B,) each row's
        last = pos + T if isinstance(pos, int) else int(pos.max()) + T
        if last > self.config.block_size:
            raise ValueError(f"sequence length {last} exceeds block_size {self.config.block_size}")
        steps = torch.arange(T, dtype=torch.long, device=idx.device)
        positions = steps + pos if isinstance(pos, int) else pos.to(idx.device)[:, None] + steps  # (T,) or (B, T)
        x = self.wte(idx)  # (B, T, C)
        rope = None
        if self.config.rope:
            rope = rope_cos_sin(positions, self.config.n_embd // self.config.n_head, GPT_ROPE_THETA)  # (..., T, hs)
            rope = tuple(r.unsqueeze(-3) for r in rope) if positions.dim() == 2 else rope  # (B, 1, T, hs): per head
        else:
            x = x + self.wpe(positions)
        x = x0 = self.drop(x)
        for i, block in enumerate(self.h):
            if self.config.x0_skip:
                x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            ve = self.value_embeds[str(i)](idx) if str(i) in self.value_embeds else None  # (B, T, kv_dim)
            if self.config.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, rope, None, ve, use_reentrant=False)
            else:
                x = block(x, rope, cache, ve)
        if cache is not None:
            cache.pos += T
        logits = self.lm_head.unembed(self.ln_f(x))  # (B, T, padded_vocab)
        if self.config.logit_softcap:
            cap = self.config.logit_softcap
            logits = cap * torch.tanh(logits.float() / cap)  # in float32: tanh's flat ends lose bf16's few bits
        logits = mask_padding(logits, self.config.vocab_size)
        return logits, next_token_loss(logits, targets)

    def flops_per_token(self, seq_len):
        """Training FLOPs per token: 6 per matrix weight (forward 2, backward 4; lookups are free), plus causal
        attention's score and value matmuls, 6 * 2 * n_layer * n_embd * T / 2 (SDPA skips the masked half)."""
        c = self.config
        n_weights = sum(p.numel() for p in self.h.parameters() if p.dim() >= 2)
        n_weights += self.wte.matmul_weights(unembed=False) + self.lm_head.matmul_weights(embed=False)
        return 6 * n_weights + 6 * c.n_layer * c.n_embd * seq_len


# -----------------------------------------------------------------------------
# BDH: the Dragon Hatchling, BDH-GPU in the paper's reference shape (arXiv 2509.26507)
# symbols as in the paper: D = n_embd, nh = n_head, N neurons per head, E and E_v encoders, D_x decoder

BDH_ROPE_THETA = 2.0**16


@dataclass
class BDHConfig:
    vocab_size: int = 50257  # the tokenizer's; tables are padded to padded_vocab_size
    n_layer: int = 6
    n_embd: int = 256  # D
    n_head: int = 4  # nh
    mlp_internal_dim_multiplier: int = 128  # N = multiplier * D / nh neurons per head
    dropout: float = 0.1
    embedding_rank: int = 0  # > 0: factorized token table and (untied) head, see TokenEmbedding
    gradient_checkpointing: bool = False  # recompute each layer's activations in backward: less memory, more time

    def __post_init__(self):
        check_fields(self, positive=("vocab_size", "n_layer", "n_embd", "n_head", "mlp_internal_dim_multiplier"),
                     non_negative=("embedding_rank",))
        if (self.mlp_internal_dim_multiplier * self.n_embd) % (2 * self.n_head):
            raise ValueError(f"N = mlp_internal_dim_multiplier * n_embd / n_head = {self.mlp_internal_dim_multiplier}"
                             f" * {self.n_embd} / {self.n_head} must be a whole, even number (rope rotates pairs)")

    @property
    def padded_vocab_size(self):
        return pad_vocab(self.vocab_size)

    @property
    def N(self):
        return self.mlp_internal_dim_multiplier * self.n_embd // self.n_head


def ln(x):
    """BDH's LayerNorm: no affine parameters."""
    return F.layer_norm(x, x.shape[-1:])


def bdh_attention_direct(qr, v):
    """BDH's causal linear attention, by its definition: yKV_t = sum over s < t of (qr_t . qr_s) v_s. Queries and
    keys are both qr, the rotated x_sparse (nh, B, T, N); values are v = x (1, B, T, D), shared by the heads. No
    softmax, and a position never reads itself. The T x T scores make time and memory grow with T^2 (see the
    chunked form below)."""
    scores = (qr @ qr.mT).tril(diagonal=-1)  # (nh, B, T, T), strictly earlier positions
    return scores @ v  # (nh, B, T, D)


class DirectAttention(torch.autograd.Function):
    """The rotation and bdh_attention_direct for training, with the backward written out. Queries and keys are the
    same qr, so the gradient of the scores reaches qr in one product, (dA + dA^T) qr, where autograd makes two (one
    for the queries, one for the keys). qr is not kept: backward rotates x_sparse again (one cheap pass), whose
    storage the ReLU keeps anyway, so the layer saves one (nh, B, T, N) tensor less."""

    @staticmethod
    def forward(ctx, x_sparse, v, cos, sin):
        qr = bdh_apply_rope(x_sparse, cos, sin)  # (nh, B, T, N)
        scores = (qr @ qr.mT).tril_(diagonal=-1)  # (nh, B, T, T)
        ctx.save_for_backward(x_sparse, v, cos, sin, scores)
        return scores @ v

    @staticmethod
    def backward(ctx, dy):  # dy: (nh, B, T, D)
        x_sparse, v, cos, sin, scores = ctx.saved_tensors
        dA = (dy @ v.mT).tril_(diagonal=-1)  # (nh, B, T, T)
        dqr = (dA + dA.mT) @ bdh_apply_rope(x_sparse, cos, sin)
        dv = (scores.mT @ dy).sum_to_size(v.shape)  # v is shared by the heads
        return bdh_apply_rope(dqr, cos, -sin), dv, None, None  # the rotation's gradient turns back by -angle


def bdh_rope(positions, N):
    """BDH's rotary angles (T, N / 2) as cos and sin: neuron pair (2i, 2i+1) turns by pos * theta^(-2i/N)."""
    cos, sin = rope_cos_sin(positions, N, BDH_ROPE_THETA)
    return cos[..., ::2], sin[..., ::2]


def bdh_apply_rope(x, cos, sin):
    """apply_rope on (..., T, N) with BDH's angles (T, N / 2): rotate_pairs on any device, 4-7x faster than the real
    formula on a CPU at BDH's widths. Complex numbers exist for fp32/fp64, so half precision takes the real formula.
    torch.compile generates no code for complex numbers and runs this product as an eager op between its kernels: on
    a CPU that beats its kernels for the real formula, which read the pairs at stride 2 (BENCHMARKS.md)."""
    if x.dtype not in (torch.float32, torch.float64):
        return rotate_pairs_real(x, cos.repeat_interleave(2, dim=-1), sin.repeat_interleave(2, dim=-1))
    return rotate_pairs(x, cos, sin)


class BDH(LanguageModel):
    """Every layer runs the same weights. attention_form ('auto', 'direct' or 'chunked') and chunk_size choose how
    training computes the attention. That is an implementation choice, not architecture, so not a config field.
    'auto' is chunked above CHUNKED_ABOVE tokens."""

    # the crossover measured on a 2-core CPU (BENCHMARKS.md); re-measure on your device with bench.py
    CHUNKED_ABOVE = 1024
    CHUNK_SIZE = 256

    def __init__(self, config):
        super().__init__()
        self.config = config
        nh, D, N, V = config.n_head, config.n_embd, config.N, config.padded_vocab_size
        self.embed = TokenEmbedding(V, D, config.embedding_rank)
        self.encoder = nn.Parameter(torch.empty(nh, D, N).normal_(std=0.02))  # E
        self.encoder_v = nn.Parameter(torch.empty(nh, D, N).normal_(std=0.02))  # E_v
        self.decoder = nn.Parameter(torch.empty(nh * N, D).normal_(std=0.02))  # D_x
        self.drop = nn.Dropout(config.dropout)
        self.lm_head = TokenEmbedding(V, D, config.embedding_rank)  # untied, used through unembed(): D -> V
        self.attention_form = "auto"
        self.chunk_size = self.CHUNK_SIZE
        self.activity = None  # (n_layer, 2, nh): fractions of active neurons in the last forward, see metrics()
        self.neuron_hook = None  # hook(layer, x_sparse, y_sparse) sees every layer's neurons (eval.py --neurons)
        self.track_activity = True  # count active neurons (two passes a layer): train.py asks only when it logs

    # Inside the layers activations are heads first, (nh, B, T, N): every weight product is then one matrix product
    # per head over all B * T positions, and the attention one per (head, sequence), with no copy of the weights
    # broadcast over the batch nor of the activations to put heads beside each other.

    def forward(self, idx, targets=None, cache=None):
        c = self.config
        B, T = idx.size()
        pos = 0 if cache is None else cache.pos  # an int, or (B,): each row's own
        steps = torch.arange(T, device=idx.device)
        rope = bdh_rope(steps + pos if isinstance(pos, int) else pos.to(idx.device)[:, None] + steps, c.N)
        x = ln(self.embed(idx)).view(1, B, T, c.n_embd)  # (1, B, T, D): one x that every head reads
        active = []
        for i in range(c.n_layer):
            if c.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x, counts = checkpoint(self.layer, x, rope, None, i, use_reentrant=False)
            else:
                x, counts = self.layer(x, rope, cache, i)
            active.append(counts)
        if cache is not None:
            cache.pos += T
        self.activity = torch.stack(active).detach() / (B * T * c.N) if self.track_activity else None  # (L, 2, nh)
        logits = mask_padding(self.lm_head.unembed(x[0]), self.config.vocab_size)  # (B, T, padded_vocab)
        return logits, next_token_loss(logits, targets)

    def layer(self, x, rope, cache=None, i=0):
        """One layer (the i-th, for the cache) on x (1, B, T, D). Returns x and the counts of active neurons in
        x_sparse and y_sparse per head, (2, nh). Its three products are methods (encode, encode_v, decode), so
        quantize.py can give them int8 weights without a second copy of the layer."""
        nh, D = self.config.n_head, self.config.n_embd
        _, B, T, _ = x.shape
        # ReLUs in place: a product's output is not needed for its backward, and a fresh 4-D buffer costs a pass
        x_sparse = self.encode(x[0]).relu_()  # (nh, B, T, N)
        yKV = self.attention(x_sparse, x, rope, cache, i)  # (nh, B, T, D)
        y_sparse = self.encode_v(ln(yKV)).relu_()  # (nh, B, T, N)
        xy_sparse = self.drop(x_sparse * y_sparse)  # (nh, B, T, N): the gate
        if self.neuron_hook is not None:
            self.neuron_hook(i, x_sparse.transpose(0, 1), y_sparse.transpose(0, 1))  # (B, nh, T, N) views
        x = ln(x + ln(self.decode(xy_sparse).view(1, B, T, D)))
        if not self.track_activity:
            return x, None
        # counted as a sum of signs (0 or 1 after the ReLU): count_nonzero's int64 copy cost 10x as much
        return x, torch.stack([a.reshape(nh, -1).sign().sum(dim=1, dtype=torch.float32) for a in (x_sparse, y_sparse)])

    # BDH's three products. A decoding step (T == 1) computes each row's products on their own (per_row), per head;
    # otherwise bmm, not @: matmul would fold the heads into one product and copy its output to put them first

    def encode(self, x):  # E: (B, T, D) -> (nh, B, T, N), every head reading the same x
        nh, N = self.config.n_head, self.config.N
        B, T, D = x.shape
        if T == 1:
            return torch.stack([per_row(x, self.encoder[h]) for h in range(nh)])
        return torch.bmm(x.view(1, B * T, D).expand(nh, -1, -1), self.encoder).view(nh, B, T, N)

    def encode_v(self, y):  # E_v: (nh, B, T, D) -> (nh, B, T, N), each head reading its own y
        nh, B, T, D = y.shape
        if T == 1:
            return torch.stack([per_row(y[h], self.encoder_v[h]) for h in range(nh)])
        return (y.view(nh, B * T, D) @ self.encoder_v).view(nh, B, T, self.config.N)

    def decode(self, xy):  # D_x: (nh, B, T, N) -> (B, T, D), the heads' products summed
        nh, B, T, N = xy.shape
        decoder = self.decoder.view(nh, N, -1)  # D_x as nh slices (N, D): a product per head
        if T == 1:
            return torch.stack([per_row(xy[h], decoder[h]) for h in range(nh)]).sum(dim=0)
        return (xy.view(nh, B * T, N) @ decoder).sum(dim=0).view(B, T, -1)

    def attention(self, x_sparse, x, rope, cache=None, i=0):
        """yKV (nh, B, T, D). Unnormalised scores summed over T overflow fp16 (max 65504), so under fp16 this runs
        in fp32 (bf16 has fp32's range). A recurrent state sums the whole sequence, so it is always fp32."""
        dtype = torch.float32 if cache is not None or x_sparse.dtype == torch.float16 else x_sparse.dtype
        with torch.autocast(x.device.type, enabled=False):
            x_sparse, v = x_sparse.to(dtype), x.to(dtype)  # (nh, B, T, N), (1, B, T, D)
            if cache is not None:
                return cache.attend(i, bdh_apply_rope(x_sparse, *rope), v, self.chunk_size)
            if self.uses_chunked(x_sparse.size(2)):
                return ChunkedAttention.apply(x_sparse, v, *rope, self.chunk_size)
            return DirectAttention.apply(x_sparse, v, *rope)

    def uses_chunked(self, T):
        """Whether training at length T runs the chunked form."""
        if self.attention_form == "auto":
            return T > self.CHUNKED_ABOVE
        return self.attention_form == "chunked"

    def metrics(self):
        """The fractions of active (positive) neurons in x_sparse and y_sparse in the last forward: over all layers,
        heads and positions (x_active, y_active), and per layer (x_active_l0...). Detached 0-dim tensors: logging
        them (.item()) is the only device sync. The paper reports about 5% once trained; a fresh model fires about
        half. Per head: self.activity, (n_layer, 2, nh). None of them when track_activity was off."""
        if self.activity is None:
            return {}
        a = self.activity.mean(dim=2)  # (n_layer, 2)
        out = {"x_active": a[:, 0].mean(), "y_active": a[:, 1].mean()}
        for i in range(len(a)):
            out[f"x_active_l{i}"], out[f"y_active_l{i}"] = a[i]
        return out

    def metric_names(self):
        return ["x_active", "y_active"] + [f"{v}_active_l{i}" for i in range(self.config.n_layer) for v in "xy"]

    def head_modules(self):
        return [self.lm_head]

    def embedding_modules(self):
        return [self.embed, self.lm_head]

    def new_cache(self):
        return RecurrentState(self.config.n_layer)

    def flops_per_token(self, seq_len):
        """Training FLOPs per token at length seq_len: 6 per weight per use (E, E_v and D_x run in every layer;
        lookups are free), plus the linear attention of the form that runs at that length, forward per layer and
        head. Direct: T * (N + D), the causal half of scores and values. Chunked, chunks of C: C * (N + D) inside
        chunks plus 4 * N * D to read and update the state."""
        c = self.config
        weights = c.n_layer * 3 * c.n_head * c.N * c.n_embd
        weights += self.embed.matmul_weights(unembed=False) + self.lm_head.matmul_weights(embed=False)
        chunked = self.uses_chunked(seq_len)
        C = min(seq_len, self.chunk_size) if chunked else seq_len
        attention = C * (c.N + c.n_embd) + (4 * c.N * c.n_embd if chunked else 0)
        return 6 * weights + 3 * c.n_layer * c.n_head * attention


# BDH's attention in two more forms, equal to the direct one (tests/test_bdh.py): chunked, for long training
# sequences, and recurrent, for generation.


def bdh_attention_chunked(qr, v, chunk_size, state=None, final_state=False):
    """T x T scores only inside chunks; earlier chunks come from a running state S = sum_s qr_s^T v_s, (N x D) per
    head, so time and memory grow linearly in T (training runs it through ChunkedAttention). state: S of the
    positions before qr's, or None. Returns yKV, and S after the last position when final_state (else None)."""
    T = qr.size(2)
    ys = []
    for t0 in range(0, T, chunk_size):
        q = qr[:, :, t0 : t0 + chunk_size]  # (nh, B, C, N)
        vc = v[:, :, t0 : t0 + chunk_size]  # (1, B, C, D)
        y = (q @ q.mT).tril(diagonal=-1) @ vc  # (nh, B, C, D): earlier positions inside the chunk
        if state is not None:
            y = y + q @ state  # and all positions before the chunk
        if final_state or t0 + chunk_size < T:
            state = q.mT @ vc if state is None else state + q.mT @ vc  # (nh, B, N, D)
        ys.append(y)
    return torch.cat(ys, dim=2), (state if final_state else None)


class ChunkedAttention(torch.autograd.Function):
    """The rotation and bdh_attention_chunked for training. Autograd would save the running state at every chunk,
    (T / C) x N x D per head: as much as the direct form's T x T scores at T = N * D / C. This backward recomputes
    the states in a forward sweep and their gradients in a reverse one, and rotates x_sparse again (as
    DirectAttention does), so nothing but x_sparse, which the ReLU keeps anyway, and v is saved, however long T is."""

    @staticmethod
    def forward(ctx, x_sparse, v, cos, sin, chunk_size):
        ctx.save_for_backward(x_sparse, v, cos, sin)
        ctx.chunk_size = chunk_size
        return bdh_attention_chunked(bdh_apply_rope(x_sparse, cos, sin), v, chunk_size)[0]

    @staticmethod
    def backward(ctx, dy):  # dy: (nh, B, T, D)
        x_sparse, v, cos, sin = ctx.saved_tensors
        qr = bdh_apply_rope(x_sparse, cos, sin)
        chunks = [slice(t0, t0 + ctx.chunk_size) for t0 in range(0, qr.size(2), ctx.chunk_size)]
        dq = torch.zeros_like(qr)
        dv = torch.zeros_like(v)
        S = None  # the state the chunk reads: the sum over the chunks before it
        for c in chunks:
            if S is not None:
                dq[:, :, c] = dy[:, :, c] @ S.mT
            S = qr[:, :, c].mT @ v[:, :, c] if S is None else S + qr[:, :, c].mT @ v[:, :, c]
        G = None  # the gradient of the state read by the chunks after this one
        for c in reversed(chunks):
            q, vc, dyc = qr[:, :, c], v[:, :, c], dy[:, :, c]
            dA = (dyc @ vc.mT).tril(diagonal=-1)  # (nh, B, C, C): the gradient of the scores inside the chunk
            dq_c = (dA + dA.mT) @ q
            dv_c = (q @ q.mT).tril(diagonal=-1).mT @ dyc
            if G is not None:
                dq_c = dq_c + vc @ G.mT
                dv_c = dv_c + q @ G
            dq[:, :, c] += dq_c
            dv[:, :, c] = dv_c.sum_to_size(dv[:, :, c].shape)  # v is shared by the heads
            G = q.mT @ dyc if G is None else G + q.mT @ dyc
        return bdh_apply_rope(dq, cos, -sin), dv, None, None, None  # the rotation's gradient: back by -angle


def bdh_attention_step(qr, v, state):
    """The recurrent form for one new position (T = 1): read the state of all earlier positions, then add this one,
    in place. One pass over the N x D state per head is the whole cost of a token, however many came before."""
    y = qr @ state  # (nh, B, 1, D)
    state.addcmul_(qr.mT, v)  # state += qr^T v, (nh, B, N, D)
    return y


class RecurrentState:
    """BDH's decoding state: each layer's (nh, B, N, D) state, the sum over the positions seen of keys x values.
    pos is an int while the rows are one batch of prompts, a (B,) tensor for rows of streams that started apart."""

    def __init__(self, n_layer):
        self.S = [None] * n_layer
        self.pos = 0  # how many positions it holds: the position of the next token

    def rows(self, index):
        """A state of some of the rows (index: a list of row numbers)."""
        out = RecurrentState(len(self.S))
        out.S = [S[:, index] for S in self.S]
        out.pos = row_positions(self.pos, self.S[0].size(1))[index]
        return out

    @staticmethod
    def concat(states):
        """One state of the rows of several, in order."""
        out = RecurrentState(len(states[0].S))
        out.S = [torch.cat([s.S[i] for s in states], dim=1) for i in range(len(out.S))]
        out.pos = torch.cat([row_positions(s.pos, s.S[0].size(1)) for s in states])
        return out

    def attend(self, layer, qr, v, chunk_size):
        """yKV of new positions, which read the state and then extend it: a prompt chunked, then token by token."""
        if self.S[layer] is not None and qr.size(2) == 1:
            return bdh_attention_step(qr, v, self.S[layer])
        y, self.S[layer] = bdh_attention_chunked(qr, v, chunk_size, self.S[layer], final_state=True)
        return y


# -----------------------------------------------------------------------------
# scripts pick a model by name

MODELS = {"gpt": (GPTConfig, GPT), "bdh": (BDHConfig, BDH)}


def model_classes(model_type):
    """(config class, model class) of a model by name."""
    if model_type not in MODELS:
        raise ValueError(f"unknown model {model_type!r}; choose one of {', '.join(MODELS)}")
    return MODELS[model_type]


def pick_model_args(model_type, config):
    """The fields of model_type's config class that the dict config sets (None values left out)."""
    config_class, _ = model_classes(model_type)
    return {f.name: config[f.name] for f in fields(config_class) if config.get(f.name) is not None}


def model_config(model_type, model_args):
    """The config of a model by name from a dict of its fields; a ValueError naming the field if it can't be built."""
    config_class, _ = model_classes(model_type)
    unknown = set(model_args) - {f.name for f in fields(config_class)}
    if unknown:
        raise ValueError(f"{model_type} has no field {', '.join(sorted(unknown))} (a checkpoint from another version?)")
    return config_class(**model_args)


def create_model(model_type, model_args):
    """Build a model from its name and a dict of its config fields (as stored in checkpoints)."""
    return model_classes(model_type)[1](model_config(model_type, model_args))
