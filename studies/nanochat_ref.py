"""
nanochat's recipe at any shape, rewritten here from karpathy/nanochat (nanochat/gpt.py, nanochat/optim.py,
scripts/base_train.py; December 2026) as a reference for studies/equal_time.py, the way that study rewrites
nanoGPT's. Single process, float32 on a CPU (nanochat's own compute dtype there), no compile.

- model (gpt.py): token embedding normed (RMSNorm without gains everywhere), smear (the previous token's embedding
  mixed in through a gate), per-layer resid and x0 scalars, rotary (theta 100,000, halves), QK-norm with 1.2 on
  queries and keys, causal attention over the whole block (its sliding windows are longer than our blocks),
  value embeddings in every other layer with a gate per head, ReLU^2 MLP, backout (0.2 of the middle layer's
  residual subtracted), untied head, logits soft-capped at 15; its init (uniform weights, zero projections,
  embedding std 0.8, head std 0.001).
- optimizer (optim.py MuonAdamW, setup_optimizer): AdamW (eps 1e-10) for the head, embeddings, value embeddings
  and scalars, each with its own learning rate, betas and weight decay, rates scaled by (d_model / 768)^-0.5;
  Muon for the matrices, same-shape matrices stacked: Nesterov momentum, MuonEq row equilibration, Polar Express
  orthogonalisation (5 steps), Muon+ renormalisation, NorMuon variance reduction (beta2 0.9), cautious weight
  decay, lr * sqrt(max(1, rows / cols)).
- schedule (base_train.py): warmup 40 steps, constant, linear warmdown over the last 65% to 5%; Muon's momentum
  0.85 -> 0.97 over 400 steps and down to 0.90 in the warmdown; Muon's weight decay cosine to 0.
- its scaling rules (base_train.py, tuned at width 768 and 2^19-token batches): every rate times
  sqrt(batch / 2^19); weight decay 0.28 * sqrt(batch / 2^19) * (D_ref / tokens trained), D_ref = 12 x d12's
  scaling parameters. scaling='none' takes the reference rates as they are (and wd 0.28).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# base_train.py's defaults
EMBEDDING_LR, UNEMBEDDING_LR, MATRIX_LR, SCALAR_LR, WEIGHT_DECAY = 0.3, 0.008, 0.02, 0.5, 0.28
WARMUP_STEPS, WARMDOWN_RATIO, FINAL_LR_FRAC = 40, 0.65, 0.05
B_REF = 2**19
D12_SCALING_PARAMS = 12 * 12 * 768**2 + 12 * 12 * 6 // 2 + 32768 * 768  # d12's matrices (+ its ve gates) and head
D_REF = 12 * D12_SCALING_PARAMS  # its compute-optimal horizon in tokens


def norm(x):
    return F.rms_norm(x, (x.size(-1),))


def has_ve(i, n_layer):
    return i % 2 == (n_layer - 1) % 2


class NanoChat(nn.Module):
    def __init__(self, vocab_size, block_size, n_layer, n_head, n_embd):
        super().__init__()
        self.n_layer, self.n_head, self.hs = n_layer, n_head, n_embd // n_head
        V = ((vocab_size + 63) // 64) * 64
        self.vocab_size = vocab_size
        self.wte = nn.Embedding(V, n_embd)
        self.h = nn.ModuleList([nn.ModuleDict({
            "c_q": nn.Linear(n_embd, n_embd, bias=False), "c_k": nn.Linear(n_embd, n_embd, bias=False),
            "c_v": nn.Linear(n_embd, n_embd, bias=False), "c_proj": nn.Linear(n_embd, n_embd, bias=False),
            "c_fc": nn.Linear(n_embd, 4 * n_embd, bias=False), "mlp_proj": nn.Linear(4 * n_embd, n_embd, bias=False),
            **({"ve_gate": nn.Linear(12, n_head, bias=False)} if has_ve(i, n_layer) else {}),
        }) for i in range(n_layer)])
        self.lm_head = nn.Linear(n_embd, V, bias=False)
        self.resid_lambdas = nn.Parameter(torch.tensor([1.15 - 0.10 * i / max(n_layer - 1, 1) for i in range(n_layer)]))
        self.x0_lambdas = nn.Parameter(torch.tensor([0.20 - 0.15 * i / max(n_layer - 1, 1) for i in range(n_layer)]))
        self.smear_gate = nn.Linear(24, 1, bias=False)
        self.smear_lambda = nn.Parameter(torch.zeros(1))
        self.backout_lambda = nn.Parameter(0.2 * torch.ones(1))
        self.value_embeds = nn.ModuleDict({str(i): nn.Embedding(V, n_embd)
                                           for i in range(n_layer) if has_ve(i, n_layer)})
        with torch.no_grad():
            nn.init.normal_(self.wte.weight, std=0.8)
            nn.init.normal_(self.lm_head.weight, std=0.001)
            s = 3**0.5 * n_embd**-0.5
            for b in self.h:
                for k in ("c_q", "c_k", "c_v"):
                    nn.init.uniform_(b[k].weight, -s, s)
                nn.init.uniform_(b["c_fc"].weight, -0.4 * s, 0.4 * s)
                nn.init.zeros_(b["c_proj"].weight)
                nn.init.zeros_(b["mlp_proj"].weight)
                if "ve_gate" in b:
                    nn.init.uniform_(b["ve_gate"].weight, 0.0, 0.02)
            nn.init.uniform_(self.smear_gate.weight, 0.0, 0.02)
            for ve in self.value_embeds.values():
                nn.init.uniform_(ve.weight, -s, s)
        inv_freq = 1.0 / (100000 ** (torch.arange(0, self.hs, 2, dtype=torch.float32) / self.hs))
        freqs = torch.outer(torch.arange(block_size, dtype=torch.float32), inv_freq)
        self.register_buffer("cos", freqs.cos()[None, :, None, :], persistent=False)
        self.register_buffer("sin", freqs.sin()[None, :, None, :], persistent=False)

    def rotate(self, x, T):
        d = x.shape[3] // 2
        x1, x2 = x[..., :d], x[..., d:]
        cos, sin = self.cos[:, :T], self.sin[:, :T]
        return torch.cat([x1 * cos + x2 * sin, x1 * (-sin) + x2 * cos], 3)

    def forward(self, idx, targets):
        B, T = idx.shape
        x = norm(self.wte(idx))
        gate = self.smear_lambda * torch.sigmoid(self.smear_gate(x[:, 1:, :24]))
        x = torch.cat([x[:, :1], x[:, 1:] + gate * x[:, :-1]], dim=1)
        x0, x_backout = x, None
        for i, b in enumerate(self.h):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            h = norm(x)
            q = b["c_q"](h).view(B, T, self.n_head, self.hs)
            k = b["c_k"](h).view(B, T, self.n_head, self.hs)
            v = b["c_v"](h).view(B, T, self.n_head, self.hs)
            if str(i) in self.value_embeds:
                ve = self.value_embeds[str(i)](idx).view(B, T, self.n_head, self.hs)
                v = v + (3 * torch.sigmoid(b["ve_gate"](h[..., :12]))).unsqueeze(-1) * ve
            q, k = norm(self.rotate(q, T)) * 1.2, norm(self.rotate(k, T)) * 1.2
            y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
            x = x + b["c_proj"](y.transpose(1, 2).reshape(B, T, -1))
            x = x + b["mlp_proj"](F.relu(b["c_fc"](norm(x))).square())
            if i == self.n_layer // 2:
                x_backout = x
        x = norm(x - self.backout_lambda * x_backout)
        logits = self.lm_head(x)[..., : self.vocab_size].float()
        logits = 15 * torch.tanh(logits / 15)
        return logits, F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


POLAR_EXPRESS = [(8.156554524902461, -22.48329292557795, 15.878769915207462),
                 (4.042929935166739, -2.808917465908714, 0.5000178451051316),
                 (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
                 (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
                 (2.3465413258596377, -1.7097828382687081, 0.42323551169305323)]


class MuonAdamW(torch.optim.Optimizer):
    """nanochat's optimizer on one process: groups of kind 'adamw' or 'muon' (same-shape matrices)."""

    def __init__(self, groups):
        super().__init__(groups, defaults={})

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            (self.adamw if group["kind"] == "adamw" else self.muon)(group)

    def adamw(self, group):
        beta1, beta2 = group["betas"]
        for p in group["params"]:
            state = self.state[p]
            if not state:
                state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
            state["step"] += 1
            p.mul_(1 - group["lr"] * group["weight_decay"])
            state["exp_avg"].lerp_(p.grad, 1 - beta1)
            state["exp_avg_sq"].lerp_(p.grad.square(), 1 - beta2)
            denom = (state["exp_avg_sq"] / (1 - beta2 ** state["step"])).sqrt() + group["eps"]
            p.add_(state["exp_avg"] / denom, alpha=-group["lr"] / (1 - beta1 ** state["step"]))

    def muon(self, group):
        params = group["params"]
        shape = params[0].shape
        state = self.state[params[0]]
        if not state:
            state["momentum_buffer"] = torch.zeros(len(params), *shape)
            state["second_momentum_buffer"] = torch.zeros(
                (len(params), shape[-2], 1) if shape[-2] >= shape[-1] else (len(params), 1, shape[-1]))
        red_dim = -1 if shape[-2] >= shape[-1] else -2
        grads, stacked = torch.stack([p.grad for p in params]), torch.stack(params)
        momentum = group["momentum"]
        state["momentum_buffer"].lerp_(grads, 1 - momentum)
        X = grads.lerp_(state["momentum_buffer"], momentum)  # Nesterov
        target = X.norm(dim=(-2, -1), keepdim=True) / (X.size(-2) ** 0.5)  # MuonEq
        X = X * (target / X.norm(dim=-1, keepdim=True).clamp_min(1e-6))
        X = X / (X.norm(dim=(-2, -1), keepdim=True) * 1.01 + 1e-6)
        for a, b, c in POLAR_EXPRESS[: group["ns_steps"]]:
            if shape[-2] > shape[-1]:
                A = X.mT @ X
                X = a * X + X @ (b * A + c * (A @ A))
            else:
                A = X @ X.mT
                X = a * X + (b * A + c * (A @ A)) @ X
        g = X * (min(shape[-2], shape[-1]) ** 0.5 / X.norm(dim=(-2, -1), keepdim=True).clamp_min(1e-6))  # Muon+
        v_mean = g.square().mean(dim=red_dim, keepdim=True)  # NorMuon
        v_norm = (v_mean.sum(dim=(-2, -1), keepdim=True) * g.size(red_dim)).sqrt()
        state["second_momentum_buffer"].lerp_(v_mean, 1 - group["beta2"])
        step_size = state["second_momentum_buffer"].clamp_min(1e-10).rsqrt()
        v_norm_new = ((v_mean * g.size(red_dim)) * step_size.square()).sum(dim=(-2, -1), keepdim=True).sqrt()
        g = g * (step_size * (v_norm / v_norm_new.clamp_min(1e-10)))
        lr = group["lr"] * max(1.0, shape[-2] / shape[-1]) ** 0.5
        mask = (g * stacked) >= 0  # cautious weight decay
        stacked.sub_(lr * g + lr * group["weight_decay"] * stacked * mask)
        torch._foreach_copy_(params, list(stacked.unbind(0)))


def setup_optimizer(model, batch_tokens, total_tokens, scaling="nanochat"):
    """setup_optimizer with base_train.py's rates; scaling='nanochat' applies its rules, 'none' the raw rates."""
    d = model.wte.weight.size(1)
    width = (d / 768) ** -0.5 if scaling == "nanochat" else 1.0
    batch = (batch_tokens / B_REF) ** 0.5 if scaling == "nanochat" else 1.0
    wd = WEIGHT_DECAY * (math.sqrt(batch_tokens / B_REF) * D_REF / total_tokens if scaling == "nanochat" else 1.0)
    emb, unemb, scalar, matrix = (lr * batch for lr in (EMBEDDING_LR, UNEMBEDDING_LR, SCALAR_LR, MATRIX_LR))
    matrices = [p for p in model.h.parameters()]
    groups = [
        dict(kind="adamw", params=[model.lm_head.weight], lr=unemb * width, betas=(0.8, 0.96), eps=1e-10,
             weight_decay=0.01),
        dict(kind="adamw", params=[model.wte.weight], lr=emb * width, betas=(0.8, 0.995), eps=1e-10,
             weight_decay=0.001),
        dict(kind="adamw", params=list(model.value_embeds.parameters()), lr=emb * width * 0.5, betas=(0.8, 0.995),
             eps=1e-10, weight_decay=0.01),
        dict(kind="adamw", params=[model.resid_lambdas], lr=scalar * 0.01, betas=(0.8, 0.95), eps=1e-10,
             weight_decay=0.05),
        dict(kind="adamw", params=[model.x0_lambdas], lr=scalar, betas=(0.96, 0.95), eps=1e-10, weight_decay=0.0),
        dict(kind="adamw", params=[model.smear_gate.weight, model.smear_lambda, model.backout_lambda], lr=0.2,
             betas=(0.8, 0.95), eps=1e-10, weight_decay=0.0),
    ]
    for shape in sorted({p.shape for p in matrices}):
        groups.append(dict(kind="muon", params=[p for p in matrices if p.shape == shape], lr=matrix, momentum=0.95,
                           ns_steps=5, beta2=0.9, weight_decay=wd))
    opt = MuonAdamW(groups)
    for g in opt.param_groups:
        g["initial_lr"] = g["lr"]
    opt.weight_decay = wd
    return opt


def schedule(opt, it, iters):
    """base_train.py's get_lr_multiplier, get_muon_momentum and get_weight_decay at step it of iters."""
    warmdown = round(WARMDOWN_RATIO * iters)
    if it < WARMUP_STEPS:
        lrm = (it + 1) / WARMUP_STEPS
    elif it <= iters - warmdown:
        lrm = 1.0
    else:
        left = (iters - it) / warmdown
        lrm = left + (1 - left) * FINAL_LR_FRAC
    if it < 400:
        momentum = (1 - it / 400) * 0.85 + it / 400 * 0.97
    elif it >= iters - warmdown:
        done = (it - (iters - warmdown)) / warmdown
        momentum = 0.97 * (1 - done) + 0.90 * done
    else:
        momentum = 0.97
    for g in opt.param_groups:
        g["lr"] = g["initial_lr"] * lrm
        if g["kind"] == "muon":
            g["momentum"] = momentum
            g["weight_decay"] = opt.weight_decay * 0.5 * (1 + math.cos(math.pi * it / iters))
