"""
Small language models in one file.

GPT: a GPT-2 style transformer (token + learned position embeddings, pre-LayerNorm blocks, causal
self-attention through scaled_dot_product_attention, GELU MLP, tied input/output embeddings).

The contract shared by every model here:
    logits, loss = model(idx, targets)   # idx, targets: (B, T) int64
targets[b, t] is the token that FOLLOWS idx[b, t]. The shift of inputs against targets is done once, by the
batch loader (common.get_batch); no model shifts again. logits has config.padded_vocab_size columns: the
columns past vocab_size are padding for fast matmuls, never targets, and generate() never samples them.

No argv, no files: scripts (train.py, sample.py, bench.py) build these from a config dict.
"""

import inspect
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint


def pad_vocab(vocab_size, multiple=64):
    """Round the vocabulary up to a multiple of 64: matmuls on such widths run much faster on GPUs."""
    return ((vocab_size + multiple - 1) // multiple) * multiple


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50257  # the tokenizer's; the embedding table is padded to padded_vocab_size
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm layers, as GPT-2
    gradient_checkpointing: bool = False  # recompute each block in backward: less memory, ~30% more compute

    @property
    def padded_vocab_size(self):
        return pad_vocab(self.vocab_size)


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's has no bias=False before 2.1)."""

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0, "n_embd must be divisible by n_head"
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.residual_projection = True  # scaled init, see GPT._init_weights
        self.resid_dropout = nn.Dropout(config.dropout)
        self.dropout = config.dropout

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        dropout_p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)  # (B, nh, T, hs)
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


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


# -----------------------------------------------------------------------------
# what every model shares: loss, sampling, optimizer groups, parameter counts, MFU


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
    """Base class: subclasses define forward_logits(idx) -> (B, T, padded_vocab) and flops_per_token()."""

    def forward(self, idx, targets=None):
        logits = self.forward_logits(idx)
        loss = None
        if targets is not None:
            # targets are already the next tokens (see the module docstring): no shift here
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.view(-1), ignore_index=-1)
        return logits, loss

    def num_params(self, non_embedding=False):
        """Parameters, each shared tensor counted once. non_embedding leaves out token/position tables and head."""
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

    def estimate_mfu(self, tokens_per_iter, dt, peak_flops):
        """Model FLOPs utilization: achieved training FLOP/s (forward + backward) over the device's peak."""
        return self.flops_per_token() * tokens_per_iter / dt / peak_flops

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, generator=None):
        """Extend idx (B, T) by max_new_tokens tokens, recomputing the (cropped) context for each one."""
        for _ in range(max_new_tokens):
            idx_cond = idx[:, -self.config.block_size:]
            logits, _ = self(idx_cond)
            logits = logits[:, -1, : self.config.vocab_size]  # padding columns are never sampled
            idx = torch.cat((idx, sample_next_token(logits, temperature, top_k, top_p, generator)), dim=1)
        return idx


# -----------------------------------------------------------------------------
# GPT


class GPT(LanguageModel):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.padded_vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied input and output embeddings
        self.apply(self._init_weights)

    def _init_weights(self, module):
        # GPT-2 init: N(0, 0.02), with projections into the residual stream scaled by 1/sqrt(2 * n_layer) since
        # each layer adds two of them to the stream
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
        return [self.wte, self.wpe, self.lm_head]

    def forward_logits(self, idx):
        B, T = idx.size()
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}")
        pos = torch.arange(T, dtype=torch.long, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        for block in self.h:
            if self.config.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.lm_head(self.ln_f(x))  # (B, T, padded_vocab)

    def flops_per_token(self, seq_len=None):
        """Training FLOPs per token: 6 per weight (forward 2, backward 4) plus causal attention's score and value
        matmuls, 6 * 2 * n_layer * n_embd * T / 2 (half of the T x T scores are masked and skipped by SDPA)."""
        T = seq_len or self.config.block_size
        c = self.config
        n_weights = self.num_params() - self.wpe.weight.numel()  # the position table is a lookup, not a matmul
        return 6 * n_weights + 6 * c.n_layer * c.n_embd * T


# -----------------------------------------------------------------------------
# scripts pick a model by name: model_type -> (config class, model class)

MODELS = {"gpt": (GPTConfig, GPT)}


def model_config_class(model_type):
    if model_type not in MODELS:
        raise SystemExit(f"error: unknown model {model_type!r}; choose one of {', '.join(MODELS)}")
    return MODELS[model_type][0]


def create_model(model_type, model_args):
    """Build a model from its name and a dict of its config fields (as stored in checkpoints)."""
    config_class = model_config_class(model_type)
    return MODELS[model_type][1](config_class(**model_args))
