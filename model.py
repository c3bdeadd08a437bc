"""
Small language models in one file, sharing what is really shared: token embeddings and output head, the loss,
sampling and generation, optimizer groups, parameter counts and MFU.

GPT: GPT-2 by default (learned positions, LayerNorm, GELU MLP, multi-head attention, tied embeddings); options,
all off by default: rope, norm='rmsnorm', mlp='swiglu', grouped-query attention (n_kv_head), bias, dropout.
BDH: BDH-GPU from "The Dragon Hatchling" (Pathway, arXiv 2509.26507): one set of weights shared by every layer,
sparse positive neuron activations, and a causal linear attention that also runs as a recurrence.
Both: embedding_rank=r > 0 factorizes the V x d token table into V x r and r x d; the output head mirrors it.

The contract shared by every model here:
    logits, loss = model(idx, targets)   # idx, targets: (B, T) int64
targets[b, t] is the token that FOLLOWS idx[b, t]. The shift of inputs against targets is done once, by the
batch loader (common.BatchLoader.next_batch); no model shifts again. logits has config.padded_vocab_size columns: the
columns past vocab_size are padding for fast matmuls, never targets, and generate() never samples them.

No argv, no files: scripts (train.py, sample.py, bench.py) build these from a config dict.
"""

import inspect
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def pad_vocab(vocab_size, multiple=64):
    """Round the vocabulary up to a multiple of 64: matmuls on such widths run much faster on GPUs."""
    return ((vocab_size + multiple - 1) // multiple) * multiple


# -----------------------------------------------------------------------------
# what every model shares: loss, sampling, generation, optimizer groups, parameter counts, MFU


def sample_next_token(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """Pick the next token from (B, V) logits. temperature 0 means greedy. Returns (B, 1)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, dim=-1, descending=True)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # drop a token when the tokens ranked above it already cover top_p; the top token always stays
        drop_sorted = (cum - sorted_logits.softmax(dim=-1)) >= top_p
        drop = drop_sorted.scatter(-1, sorted_idx, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = F.softmax(logits.float(), dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


class LanguageModel(nn.Module):
    """Base class: subclasses define forward_logits(idx) -> (B, T, padded_vocab), embedding_modules() and
    flops_per_token(seq_len=None); they override start_decoding() with an incremental path (KV cache, recurrence)."""

    def forward(self, idx, targets=None):
        logits = self.forward_logits(idx)
        loss = None
        if targets is not None:
            # targets are already the next tokens (see the module docstring): no shift here
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.view(-1), ignore_index=-1)
        return logits, loss

    def num_params(self, non_embedding=False):
        """Parameters, each shared tensor counted once. non_embedding leaves out token/position tables and head
        (factorized embeddings included: their projections are embedding parameters too)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= sum(p.numel() for p in self.embedding_parameters())
        return n

    def embedding_parameters(self):
        """Token and position embedding tables and the output head, each tensor once."""
        seen, out = set(), []
        for module in self.embedding_modules():
            for p in module.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
        return out

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        """AdamW; weight decay on matrices and embeddings (dim >= 2) only, never on biases and norm gains."""
        params = [p for p in self.parameters() if p.requires_grad]  # parameters() yields a tied tensor once
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        use_fused = device_type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters
        extra = {"fused": True} if use_fused else {}
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **extra)

    def estimate_mfu(self, tokens_per_iter, dt, peak_flops, seq_len=None):
        """Model FLOPs utilization: achieved training FLOP/s (forward + backward) over the device's peak."""
        return self.flops_per_token(seq_len) * tokens_per_iter / dt / peak_flops

    def start_decoding(self, use_cache=True):
        """Return feed(tokens (B, t)) -> logits (B, padded_vocab) of the token after everything fed so far.
        This one recomputes the whole context at every call (cropped to block_size where the model has one)."""
        context = getattr(self.config, "block_size", None)
        seen = None

        def feed(tokens):
            nonlocal seen
            seen = tokens if seen is None else torch.cat((seen, tokens), dim=1)
            return self.forward_logits(seen if context is None else seen[:, -context:])[:, -1]

        return feed

    @torch.no_grad()
    def generate_stream(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, generator=None,
                        use_cache=True):
        """Yield max_new_tokens new tokens after the prompt idx (B, T), one (B, 1) tensor at a time."""
        feed, tokens = self.start_decoding(use_cache), idx
        for _ in range(max_new_tokens):
            logits = feed(tokens)[:, : self.config.vocab_size]  # padding columns are never sampled
            tokens = sample_next_token(logits, temperature, top_k, top_p, generator)
            yield tokens

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, generator=None, use_cache=True):
        """Extend idx (B, T) by max_new_tokens tokens; use_cache=False recomputes the context for every token."""
        new = self.generate_stream(idx, max_new_tokens, temperature, top_k, top_p, generator, use_cache)
        return torch.cat((idx, *new), dim=1)


# -----------------------------------------------------------------------------
# shared embeddings and head, rotary positions


class TokenEmbedding(nn.Module):
    """The V x d token table, or with rank r > 0 a V x r table times an r x d projection, which saves
    V*d - (V*r + r*d) parameters. unembed() is its transpose, the output head: GPT ties the head to its input
    embedding, BDH has a second TokenEmbedding as its head.
    Init: the table has GPT-2's std 0.02 and the projection std 1/sqrt(r), so embeddings (and tied logits) start with
    the same std as unfactorized; larger factor stds inflate both, a known cause of early divergence."""

    def __init__(self, vocab_size, n_embd, rank=0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_size, rank or n_embd).normal_(std=0.02))  # (V, r) or (V, d)
        self.proj = nn.Parameter(torch.empty(rank, n_embd).normal_(std=rank**-0.5)) if rank else None  # (r, d)

    def forward(self, idx):  # (B, T) -> (B, T, d)
        x = F.embedding(idx, self.weight)
        return x if self.proj is None else x @ self.proj

    def unembed(self, x):  # (B, T, d) -> (B, T, V)
        if self.proj is not None:
            x = x @ self.proj.t()
        return F.linear(x, self.weight)

    def matmul_weights(self, embed=True, unembed=True):
        """Weights multiplied per token: only the projection when embedding (a lookup is free), all when unembedding."""
        r = 0 if self.proj is None else self.proj.numel()
        return (r if embed else 0) + (self.weight.numel() + r if unembed else 0)


def rope_cos_sin(positions, dim, theta):
    """cos, sin (T, dim) of rotary embeddings: dims 2i and 2i+1 form a pair, turned by pos * theta^(-2i/dim)."""
    inv_freq = theta ** (-torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) / dim)  # (dim/2,)
    angles = (positions.float()[:, None] * inv_freq).repeat_interleave(2, dim=-1)  # (T, dim), a pair shares one
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """Rotate each pair (x[2i], x[2i+1]) of x (..., T, dim) by the angles of position t. In x's dtype: in bf16 the
    rotation's rounding is that of x itself, and half-size temporaries matter at BDH's widths."""
    x_rot = torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2)  # (-x1, x0, -x3, x2, ...)
    return x * cos.to(x.dtype) + x_rot * sin.to(x.dtype)


# -----------------------------------------------------------------------------
# GPT

GPT_ROPE_THETA = 10000.0


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
    mlp: str = "gelu"  # or 'swiglu'
    embedding_rank: int = 0  # > 0: factorized token table and (tied) head, see TokenEmbedding
    gradient_checkpointing: bool = False  # recompute each block's activations in backward: less memory, more time

    def __post_init__(self):
        if self.n_embd % self.n_head or self.n_head % (self.n_kv_head or self.n_head):
            raise ValueError(f"n_embd {self.n_embd}, n_head {self.n_head} and n_kv_head {self.n_kv_head} must divide")
        if self.norm not in ("layernorm", "rmsnorm") or self.mlp not in ("gelu", "swiglu"):
            raise ValueError(f"norm={self.norm!r} (layernorm, rmsnorm), mlp={self.mlp!r} (gelu, swiglu)")

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
            return F.rms_norm(x, self.weight.shape, self.weight, 1e-5)
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class KVCache:
    """One layer's keys and values of the positions seen so far."""

    def __init__(self):
        self.k, self.v = None, None

    def __call__(self, k, v):  # the new (B, nkv, t, hs) -> all cached ones, these included
        if self.k is not None:
            k, v = torch.cat((self.k, k), dim=2), torch.cat((self.v, v), dim=2)
        self.k, self.v = k, v
        return k, v


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.n_head, self.n_kv_head = config.n_head, config.n_kv_head or config.n_head
        self.head_size = config.n_embd // config.n_head
        kv_dim = self.n_kv_head * self.head_size
        self.c_attn = nn.Linear(config.n_embd, config.n_embd + 2 * kv_dim, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.residual_projection = True  # scaled init, see GPT._init_weights
        self.resid_dropout = nn.Dropout(config.dropout)
        self.dropout = config.dropout

    def forward(self, x, rope=None, cache=None):
        B, T, C = x.size()
        hs, kv_dim = self.head_size, self.n_kv_head * self.head_size
        q, k, v = self.c_attn(x).split([C, kv_dim, kv_dim], dim=2)
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_kv_head, hs).transpose(1, 2)  # (B, nkv, T, hs)
        v = v.view(B, T, self.n_kv_head, hs).transpose(1, 2)  # (B, nkv, T, hs)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is not None:
            k, v = cache(k, v)  # (B, nkv, T_cached, hs)
        # a prompt (or a training sequence) attends causally to itself; one new token attends to the whole cache
        assert T == 1 or k.size(2) == T, "a cache takes a prompt first, then one token at a time"
        if self.n_kv_head != self.n_head:  # each group of query heads reads one key/value head
            k = k.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
            v = v.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
        dropout_p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=T > 1)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.residual_projection = True
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


def swiglu_hidden(n_embd):
    """SwiGLU's hidden width: about 8d/3, so its three d x h matrices hold as many weights as GELU's d x 4d and 4d x d,
    rounded to a multiple of 32 for fast matmuls."""
    return 32 * max(1, round(n_embd / 12))


class SwiGLU(nn.Module):
    def __init__(self, config):
        super().__init__()
        h = swiglu_hidden(config.n_embd)
        self.c_fc = nn.Linear(config.n_embd, 2 * h, bias=config.bias)  # gate and up projections in one matmul
        self.c_proj = nn.Linear(h, config.n_embd, bias=config.bias)
        self.c_proj.residual_projection = True
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        gate, up = self.c_fc(x).chunk(2, dim=-1)
        return self.dropout(self.c_proj(F.silu(gate) * up))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = Norm(config.n_embd, config.norm, config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = Norm(config.n_embd, config.norm, config.bias)
        self.mlp = SwiGLU(config) if config.mlp == "swiglu" else MLP(config)

    def forward(self, x, rope=None, cache=None):
        x = x + self.attn(self.ln_1(x), rope, cache)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(LanguageModel):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.wte = TokenEmbedding(config.padded_vocab_size, config.n_embd, config.embedding_rank)
        self.wpe = None if config.rope else nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = Norm(config.n_embd, config.norm, config.bias)
        self.lm_head = self.wte  # tied: the head is the token embedding's transpose, TokenEmbedding.unembed
        self.apply(self._init_weights)

    def _init_weights(self, module):
        # GPT-2 init: N(0, 0.02), with projections into the residual stream scaled by 1/sqrt(2 * n_layer) since
        # each layer adds two of them to the stream (TokenEmbedding initializes itself)
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "residual_projection", False):
                std = 0.02 / math.sqrt(2 * self.config.n_layer)
            torch.nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def embedding_modules(self):
        return [m for m in (self.wte, self.wpe, self.lm_head) if m is not None]

    def forward_logits(self, idx):
        if idx.size(1) > self.config.block_size:
            raise ValueError(f"sequence length {idx.size(1)} exceeds block_size {self.config.block_size}")
        return self._forward(idx)

    def _forward(self, idx, caches=None, pos=0):
        """Logits (B, T, padded_vocab) of idx (B, T) at positions pos, pos+1, ...; caches: a KVCache per layer
        holding the earlier positions, or None."""
        T = idx.size(1)
        positions = torch.arange(pos, pos + T, dtype=torch.long, device=idx.device)
        x = self.wte(idx)  # (B, T, C)
        rope = None
        if self.config.rope:
            rope = rope_cos_sin(positions, self.config.n_embd // self.config.n_head, GPT_ROPE_THETA)  # (T, hs) each
        else:
            x = x + self.wpe(positions)
        x = self.drop(x)
        for i, block in enumerate(self.h):
            if self.config.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, rope, use_reentrant=False)
            else:
                x = block(x, rope, None if caches is None else caches[i])
        return self.wte.unembed(self.ln_f(x))  # (B, T, padded_vocab)

    def start_decoding(self, use_cache=True):
        """With use_cache: prefill the prompt's keys and values, then each new token attends to the cache. Past
        block_size the context is the last block_size tokens, as in recomputation, and then every token's hidden
        state changes (the first tokens of the window lose what they saw before it, and with learned positions every
        position moves), so no cache stays valid, with rope or without: the window is prefilled again at each step.
        Exact, and as fast as recomputation once the context is full."""
        if not use_cache:
            return super().start_decoding()
        bs = self.config.block_size
        caches, pos, window = None, 0, None

        def feed(tokens):
            nonlocal caches, pos, window
            window = (tokens if window is None else torch.cat((window, tokens), dim=1))[:, -bs:]
            if caches is None or pos + tokens.size(1) > bs:
                caches, pos, tokens = [KVCache() for _ in self.h], 0, window
            logits = self._forward(tokens, caches, pos)[:, -1]
            pos += tokens.size(1)
            return logits

        return feed

    def flops_per_token(self, seq_len=None):
        """Training FLOPs per token: 6 per matrix weight (forward 2, backward 4; lookups are free) plus causal
        attention's score and value matmuls, 6 * 2 * n_layer * n_embd * T / 2 (SDPA skips the masked half)."""
        T = seq_len or self.config.block_size
        c = self.config
        n_weights = sum(p.numel() for p in self.h.parameters() if p.dim() >= 2) + self.wte.matmul_weights()
        return 6 * n_weights + 6 * c.n_layer * c.n_embd * T


# -----------------------------------------------------------------------------
# BDH: the Dragon Hatchling, BDH-GPU in the paper's reference shape
# symbols as in the paper: D = n_embd, nh = n_head, N neurons per head, E / E_v encoders, D_x decoder

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
        if (self.mlp_internal_dim_multiplier * self.n_embd) % (2 * self.n_head):
            raise ValueError("N = mlp_internal_dim_multiplier * n_embd / n_head must be an even integer (rope pairs)")

    @property
    def padded_vocab_size(self):
        return pad_vocab(self.vocab_size)

    @property
    def N(self):
        return self.mlp_internal_dim_multiplier * self.n_embd // self.n_head


def ln(x):
    """BDH's LayerNorm: no affine parameters."""
    return F.layer_norm(x, x.shape[-1:])


# three forms of the same causal linear attention: yKV_t = sum over s < t of (qr_t . qr_s) v_s, where queries and
# keys are both qr, the rotated x_sparse (B, nh, T, N), and v = x (B, 1, T, D); no softmax, and a position never
# reads itself. test_bdh.py checks that the three agree.


def bdh_attention_direct(qr, v):
    """The definition, with a T x T score matrix: time and memory grow with T^2."""
    scores = (qr @ qr.mT).tril(diagonal=-1)  # (B, nh, T, T), strictly earlier positions
    return scores @ v  # (B, nh, T, D)


def bdh_attention_chunked(qr, v, chunk_size, state=None, final_state=False):
    """T x T scores only inside a chunk; earlier chunks come from a running state S = sum_s qr_s^T v_s, (N x D) per
    head, so time and memory grow linearly in T (training runs it through ChunkedAttention). state: S of the
    positions before qr's (or None). Returns (yKV, S after the last position when final_state, else None)."""
    T, ys = qr.size(2), []
    for t0 in range(0, T, chunk_size):
        q, vc = qr[:, :, t0 : t0 + chunk_size], v[:, :, t0 : t0 + chunk_size]  # (B, nh, C, N), (B, 1, C, D)
        y = (q @ q.mT).tril(diagonal=-1) @ vc  # (B, nh, C, D): earlier positions inside the chunk
        if state is not None:
            y = y + q @ state  # and all positions before the chunk
        if final_state or t0 + chunk_size < T:
            state = q.mT @ vc if state is None else state + q.mT @ vc  # (B, nh, N, D)
        ys.append(y)
    return torch.cat(ys, dim=2), (state if final_state else None)


class ChunkedAttention(torch.autograd.Function):
    """bdh_attention_chunked for training. Autograd would save the running state at every chunk, (T / C) x N x D per
    head, as much as the direct form's T x T scores at T = N * D / C; this backward recomputes the states in a
    forward sweep and their gradients in a reverse one, so nothing but qr and v is saved, however long T is."""

    @staticmethod
    def forward(ctx, qr, v, chunk_size):
        ctx.save_for_backward(qr, v)
        ctx.chunk_size = chunk_size
        return bdh_attention_chunked(qr, v, chunk_size)[0]

    @staticmethod
    def backward(ctx, dy):  # dy: (B, nh, T, D)
        qr, v = ctx.saved_tensors
        chunks = [slice(t0, t0 + ctx.chunk_size) for t0 in range(0, qr.size(2), ctx.chunk_size)]
        dq, dv, S, G = torch.zeros_like(qr), torch.zeros_like(v), None, None
        for c in chunks:  # y_c = ... + q_c S_c, where S_c sums the chunks before c
            if S is not None:
                dq[:, :, c] = dy[:, :, c] @ S.mT
            S = qr[:, :, c].mT @ v[:, :, c] if S is None else S + qr[:, :, c].mT @ v[:, :, c]
        for c in reversed(chunks):  # G: gradient of the state read by the chunks after c
            q, vc, dyc = qr[:, :, c], v[:, :, c], dy[:, :, c]
            dA = (dyc @ vc.mT).tril(diagonal=-1)  # (B, nh, C, C): gradient of the scores inside the chunk
            dq_c = (dA + dA.mT) @ q
            dv_c = (q @ q.mT).tril(diagonal=-1).mT @ dyc
            if G is not None:
                dq_c, dv_c = dq_c + vc @ G.mT, dv_c + q @ G
            dq[:, :, c] += dq_c
            dv[:, :, c] = dv_c.sum(dim=1, keepdim=True)  # v is shared by the heads
            G = q.mT @ dyc if G is None else G + q.mT @ dyc
        return dq, dv, None


def bdh_attention_step(qr, v, state):
    """The recurrent form for one new position (T = 1): it reads the state of all earlier positions, then adds
    itself, in place (one pass over the state: at N x D per head that pass is the cost of a token); the cost does
    not depend on how many positions came before."""
    y = qr @ state  # (B, nh, 1, D)
    return y, state.addcmul_(qr.mT, v)  # state += qr^T v, (B, nh, N, D)


class BDH(LanguageModel):
    """After each forward, last_activity = {"x_sparse": fraction, "y_sparse": fraction} of active (positive)
    neurons, averaged over layers: detached 0-dim tensors, so logging them (.item()) is the only device sync.
    attention_form ('auto', 'direct' or 'chunked') and chunk_size choose how training computes the attention: an
    implementation choice, not architecture, so not a config field; 'auto' is chunked above CHUNKED_ABOVE tokens."""

    # measured on a 2-core CPU (BENCHMARKS.md): forward + backward of the chunked form (chunks of 256) overtakes the
    # direct form at about 1024 tokens; re-measure on your device with bench.py
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
        self.lm_head = TokenEmbedding(V, D, config.embedding_rank)  # untied: used through unembed(), D -> V
        self.attention_form, self.chunk_size = "auto", self.CHUNK_SIZE
        self.last_activity, self.last_seq_len = {}, 0

    def embedding_modules(self):
        return [self.embed, self.lm_head]

    def forward_logits(self, idx):
        return self._forward(idx)

    def _forward(self, idx, states=None, pos=0):
        """Logits (B, T, padded_vocab) of idx (B, T) at positions pos, pos+1, ...; states: None in training, or a
        list with each layer's (B, nh, N, D) state of the earlier positions (None: no earlier ones), updated here."""
        c = self.config
        B, T = idx.size()
        x = ln(self.embed(idx)).unsqueeze(1)  # (B, 1, T, D)
        rope = rope_cos_sin(torch.arange(pos, pos + T, device=idx.device), c.N, BDH_ROPE_THETA)  # (T, N) each
        active = 0
        for layer in range(c.n_layer):
            if c.gradient_checkpointing and self.training and torch.is_grad_enabled() and states is None:
                x, counts, _ = checkpoint(self._layer, x, rope, use_reentrant=False)
            elif states is None:
                x, counts, _ = self._layer(x, rope)
            else:
                x, counts, states[layer] = self._layer(x, rope, states[layer], keep_state=True)
            active = active + counts
        n = c.n_layer * B * c.n_head * T * c.N
        self.last_activity = {"x_sparse": active[0] / n, "y_sparse": active[1] / n}
        self.last_seq_len = T
        return self.lm_head.unembed(x.squeeze(1))  # (B, T, padded_vocab)

    def _layer(self, x, rope, state=None, keep_state=False):
        """One layer, with the weights every layer shares. Returns (x, active neuron counts, state)."""
        nh, N, D = self.config.n_head, self.config.N, self.config.n_embd
        x_sparse = F.relu(x @ self.encoder)  # (B, nh, T, N): positive, sparse neuron activations
        yKV, state = self._attention(x_sparse, x, rope, state, keep_state)  # (B, nh, T, D)
        y_sparse = F.relu(ln(yKV) @ self.encoder_v)  # (B, nh, T, N)
        xy_sparse = self.drop(x_sparse * y_sparse)  # (B, nh, T, N): the gate
        # D_x as nh slices (N, D) summed over heads: the same as concatenating the heads, without copying xy_sparse
        yMLP = (xy_sparse @ self.decoder.view(nh, N, D)).sum(dim=1, keepdim=True)  # (B, 1, T, D)
        x = ln(x + ln(yMLP))
        return x, torch.stack((x_sparse.count_nonzero(), y_sparse.count_nonzero())), state

    def _attention(self, x_sparse, x, rope, state, keep_state):
        """yKV (B, nh, T, D) and the new state (or None). No softmax: unnormalised scores summed over T overflow fp16
        (max 65504), so under fp16 this runs in fp32 (bf16 has fp32's range); a recurrent state sums over the whole
        sequence, so it is always fp32."""
        dtype = torch.float32 if keep_state or x_sparse.dtype == torch.float16 else x_sparse.dtype
        with torch.autocast(x.device.type, enabled=False):
            qr, v = apply_rope(x_sparse.to(dtype), *rope), x.to(dtype)  # (B, nh, T, N), (B, 1, T, D)
            if keep_state and state is not None and qr.size(2) == 1:
                return bdh_attention_step(qr, v, state)
            if keep_state:
                return bdh_attention_chunked(qr, v, self.chunk_size, state, final_state=True)
            if self._chunked(qr.size(2)):
                return ChunkedAttention.apply(qr, v, self.chunk_size), None
            return bdh_attention_direct(qr, v), None

    def _chunked(self, T):
        if self.attention_form == "auto":
            return T > self.CHUNKED_ABOVE
        return self.attention_form == "chunked"

    def start_decoding(self, use_cache=True):
        """With use_cache, the recurrent form: the prompt runs chunked and leaves each layer's (B, nh, N, D) state,
        then each new token reads and updates it: constant cost per token, and no context limit. Without: the
        whole sequence is recomputed for every token."""
        if not use_cache:
            return super().start_decoding()
        states, pos = [None] * self.config.n_layer, 0

        def feed(tokens):
            nonlocal pos
            logits = self._forward(tokens, states, pos)[:, -1]
            pos += tokens.size(1)
            return logits

        return feed

    def flops_per_token(self, seq_len=None):
        """Training FLOPs per token (seq_len: default the last forward's T): 6 per weight per use (E, E_v and D_x are
        applied in every layer; lookups are free) plus the linear attention of the form that runs at T, forward per
        layer and head: direct, T * (N + D) (the causal half of scores and values); chunked with chunks of C,
        C * (N + D) inside chunks plus 4 * N * D to read and update the state."""
        c = self.config
        T = seq_len or self.last_seq_len
        weights = c.n_layer * 3 * c.n_head * c.N * c.n_embd
        weights += self.embed.matmul_weights(unembed=False) + self.lm_head.matmul_weights(embed=False)
        C = min(T, self.chunk_size) if self._chunked(T) else T
        attention = C * (c.N + c.n_embd) + (4 * c.N * c.n_embd if self._chunked(T) else 0)
        return 6 * weights + 3 * c.n_layer * c.n_head * attention


# -----------------------------------------------------------------------------
# scripts pick a model by name: model_type -> (config class, model class)

MODELS = {"gpt": (GPTConfig, GPT), "bdh": (BDHConfig, BDH)}


def model_config_class(model_type):
    if model_type not in MODELS:
        raise SystemExit(f"error: unknown model {model_type!r}; choose one of {', '.join(MODELS)}")
    return MODELS[model_type][0]


def create_model(model_type, model_args):
    """Build a model from its name and a dict of its config fields (as stored in checkpoints)."""
    config_class = model_config_class(model_type)
    return MODELS[model_type][1](config_class(**model_args))
