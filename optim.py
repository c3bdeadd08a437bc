"""
The optimizers and their schedule: which optimizer holds which parameters, at which learning rate
(configure_optimizers); Muon for matrices and stacks of them; and the learning rate and Muon's momentum at a point of
training (schedule), which the length curriculum reads too (progress_at). model.py's configure_optimizers is the
one here; train.py calls schedule once per step.
"""

import inspect
import math

import torch

from hardware import cpu_has_bfloat16

MUON_MOMENTUM_START = 0.85  # Muon's momentum at step 0 where muon_momentum_warmup > 0 (modded-nanogpt, nanochat)
# Polar Express (Amsel et al., arXiv 2505.16932; nanochat's Muon): a quintic per step, each the best one for the
# singular values left by the steps before it, so that 5 steps end nearer 1 than Jordan's one quintic repeated
POLAR_EXPRESS = [(8.156554524902461, -22.48329292557795, 15.878769915207462),
                 (4.042929935166739, -2.808917465908714, 0.5000178451051316),
                 (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
                 (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
                 (2.3465413258596377, -1.7097828382687081, 0.42323551169305323)]


def orthogonalize(G, steps, polar_express=False):
    """Newton-Schulz's quintic iteration towards the nearest semi-orthogonal matrix, U V^T of G = U S V^T, for a
    stack of matrices G (k, A, B) at once: one batched product per step instead of one product per matrix. The
    coefficients are Keller Jordan's (and torch.optim.Muon's): they push small singular values up fast and leave
    them between about 0.7 and 1.2, which trains as well as exact U V^T; with polar_express, Polar Express's
    (the last one repeated past 5 steps), which leave them nearer 1 at the same cost. bfloat16 where its products
    are fast (a GPU, a CPU with AVX512-BF16 or AMX), float32 elsewhere: emulated bfloat16 made Muon's step 2x slower
    on a CPU."""
    fast_bf16 = G.is_cuda or (G.device.type == "cpu" and cpu_has_bfloat16())
    X = G.bfloat16() if fast_bf16 else G.float()
    tall = X.size(-2) > X.size(-1)
    if tall:
        X = X.mT  # iterate on the smaller Gram matrix
    # spectral norm <= Frobenius norm = 1 (1/1.01 for Polar Express, whose coefficients assume a margin)
    X = X / (X.norm(dim=(-2, -1), keepdim=True) * (1.01 if polar_express else 1.0)).clamp(min=1e-7)
    for i in range(steps):
        a, b, c = POLAR_EXPRESS[min(i, 4)] if polar_express else (3.4445, -4.7750, 2.0315)
        A = X @ X.mT
        B = torch.baddbmm(A, A, A, beta=b, alpha=c)  # b A + c A^2
        X = torch.baddbmm(X, B, X, beta=a, alpha=1.0)  # a X + B X
    return (X.mT if tall else X).to(G.dtype)


class Muon(torch.optim.Optimizer):
    """Muon (Keller Jordan's MomentUm Orthogonalized by Newton-schulz), as torch.optim.Muon computes it: Nesterov
    momentum, then each matrix's update orthogonalised, at lr * sqrt(max(1, rows / cols)), with decoupled weight
    decay. Two differences, both measured (BENCHMARKS.md): matrices of one shape are orthogonalised together, one
    batched product per step for all of them, and the iteration runs in float32 on a CPU without fast bfloat16.
    A parameter of more than 2 dimensions is a stack of matrices over its last two (BDH's (n_head, D, N) encoders
    are n_head matrices), each orthogonalised on its own."""

    def __init__(self, params, lr=0.02, momentum=0.95, nesterov=True, ns_steps=5, weight_decay=0.0, normuon=False,
                 beta2=0.9, polar_express=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                                      weight_decay=weight_decay, normuon=normuon, beta2=beta2,
                                      polar_express=polar_express))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            by_shape = {}  # (rows, cols) -> [(parameter, its update)]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - group["momentum"])
                update = p.grad.lerp(buf, group["momentum"]) if group["nesterov"] else buf
                by_shape.setdefault(tuple(p.shape[-2:]), []).append((p, update))
            for (rows, cols), items in by_shape.items():
                stack = torch.cat([u.reshape(-1, rows, cols) for _, u in items])  # (k, rows, cols)
                orthogonal = orthogonalize(stack, group["ns_steps"], group.get("polar_express", False))
                if group.get("normuon"):
                    orthogonal = self.normuon(items, orthogonal, group["beta2"])
                lr = group["lr"] * math.sqrt(max(1.0, rows / cols))
                start = 0
                for p, u in items:
                    n = u.numel() // (rows * cols)
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                    p.add_(orthogonal[start : start + n].view_as(p), alpha=-lr)
                    start += n

    def normuon(self, items, orthogonal, beta2):
        """NorMuon (nanochat's Muon; arXiv 2510.05491): each row of the orthogonalised update (each column, for a
        wide matrix) divided by the root of its mean square, averaged over steps with beta2 (state "second_moment"
        per parameter), the whole update then rescaled to its norm before: rows that Newton-Schulz left large or
        small move alike, at the update's size."""
        _, rows, cols = orthogonal.shape
        dim = -1 if rows >= cols else -2
        mean_square = orthogonal.square().mean(dim=dim, keepdim=True)  # (k, rows, 1) or (k, 1, cols)
        moments, start = [], 0
        for p, u in items:
            n = u.numel() // (rows * cols)
            state = self.state[p]
            if "second_moment" not in state:
                state["second_moment"] = torch.zeros_like(mean_square[start : start + n])
            moments.append(state["second_moment"].lerp_(mean_square[start : start + n], 1 - beta2))
            start += n
        scaled = orthogonal * torch.cat(moments).clamp(min=1e-10).rsqrt()
        norm = orthogonal.norm(dim=(-2, -1), keepdim=True)
        return scaled * (norm / scaled.norm(dim=(-2, -1), keepdim=True).clamp(min=1e-10))

    def load_state_dict(self, state_dict):
        """Also takes the state of the Muon this project used before (torch.optim.Muon on one 2-D view per head of a
        stacked parameter): the per-head momentum buffers are stacked back into the parameter's shape."""
        saved = state_dict["param_groups"]
        if sum(len(g["params"]) for g in saved) > sum(len(g["params"]) for g in self.param_groups):
            state, ids, old = {}, [], iter(i for g in saved for i in g["params"])
            for p in (p for g in self.param_groups for p in g["params"]):
                heads = [next(old) for _ in range(p.shape[0] if p.dim() > 2 else 1)]
                ids.append(heads[0])
                buffers = [state_dict["state"][i]["momentum_buffer"] for i in heads if i in state_dict["state"]]
                if buffers:
                    state[heads[0]] = {"momentum_buffer": torch.stack(buffers) if p.dim() > 2 else buffers[0]}
            sizes = [len(g["params"]) for g in self.param_groups]
            groups = [{**g, "params": ids[sum(sizes[:k]): sum(sizes[: k + 1])]} for k, g in enumerate(saved)]
            state_dict = {"state": state, "param_groups": groups}
        super().load_state_dict(state_dict)


def configure_optimizers(model, weight_decay, learning_rate, betas, device_type, optimizer="adamw",
                         muon_learning_rate=0.02, muon_momentum=0.95, embedding_lr=0.0, head_lr=0.0, scalar_lr=0.0,
                         muon_ns_steps=5, muon_normuon=False, muon_polar_express=False):
    """A list of optimizers that together hold every parameter once.
    'adamw': AdamW for all, with weight decay on matrices and embeddings (dim >= 2) only, never on biases, gains and
    scalars. 'muon': Muon for the hidden matrices (everything of dim >= 2 outside the embeddings and head), AdamW for
    the rest. AdamW's groups each have a learning rate: the token tables (embedding_lr), an untied head (head_lr),
    the gains, biases and scalars (scalar_lr), each learning_rate where 0; hidden matrices under AdamW learning_rate.
    Each group keeps its base rate in group["base_lr"] for the schedule to scale."""
    params = [p for p in model.parameters() if p.requires_grad]  # parameters() yields a tied tensor once
    embedding = {id(p) for m in model.embedding_modules() for p in m.parameters()}
    head = {id(p) for m in model.head_modules() for p in m.parameters()}
    hidden = [p for p in params if optimizer == "muon" and p.dim() >= 2 and id(p) not in embedding]
    groups = {}  # (no weight decay, lr) -> parameters in the model's order: with the rates all equal, the two
    for p in params:  # groups of this project's earlier versions, so their checkpoints resume
        if any(p is q for q in hidden):
            continue
        lr = (head_lr if id(p) in head else embedding_lr if id(p) in embedding else scalar_lr if p.dim() < 2
              else 0.0) or learning_rate
        groups.setdefault((p.dim() < 2, lr), []).append(p)
    groups = [{"params": ps, "lr": lr, "weight_decay": 0.0 if no_decay else weight_decay}
              for (no_decay, lr), ps in sorted(groups.items(), key=lambda kv: kv[0][0])]  # decayed groups first
    fused = device_type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters
    optimizers = [torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **({"fused": True} if fused else {}))]
    if hidden:
        # weight decay 0: Muon's orthogonalised updates keep the weights' scale bounded without it (nanochat)
        optimizers.append(Muon(hidden, lr=muon_learning_rate, momentum=muon_momentum, ns_steps=muon_ns_steps,
                               normuon=muon_normuon, polar_express=muon_polar_express))
    for opt in optimizers:
        for group in opt.param_groups:
            group["base_lr"] = group["lr"]
    return optimizers


def progress_at(it, clock, config):
    """How far training is through its schedule, 0 to 1: iterations over lr_decay_iters (None: max_iters), or with
    lr_schedule_over='time' seconds trained (clock, resumes included) over max_minutes."""
    if config["lr_schedule_over"] == "time":
        return min(1.0, clock / (60 * config["max_minutes"]))
    return min(1.0, it / max(1, config["lr_decay_iters"] or config["max_iters"]))


def learning_rate_at(it, clock, config):
    """The base learning rate at iteration it: a linear warmup over warmup_iters, then
      cosine     decay to min_lr at the end of the schedule (nanoGPT's), or
      trapezoid  learning_rate until the last warmdown_fraction of the schedule, then a linear decay to min_lr
                 (warmup-stable-decay: modded-nanogpt's and nanochat's),
    the end being lr_decay_iters or, with lr_schedule_over='time', max_minutes (progress_at); learning_rate
    throughout without decay_lr."""
    lr, min_lr, warmup = config["learning_rate"], config["min_lr"], config["warmup_iters"]
    if not config["decay_lr"]:
        return lr
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    done = progress_at(it, clock, config)
    if config["lr_schedule"] == "trapezoid":
        left = (1.0 - done) / config["warmdown_fraction"]  # 1 where the warmdown starts, 0 at the end
        return lr if left >= 1 else min_lr + left * (lr - min_lr)
    if done >= 1:
        return min_lr
    if config["lr_schedule_over"] == "iters":  # the cosine starts after the warmup
        decay_iters = config["lr_decay_iters"] or config["max_iters"]
        done = (it - warmup) / max(1, decay_iters - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * done)) * (lr - min_lr)


def muon_momentum_at(it, config):
    """Muon's momentum: from MUON_MOMENTUM_START up to muon_momentum over muon_momentum_warmup iterations (a
    momentum of 0.95 from the first step averages gradients of a model that is still changing fast)."""
    warmup = config["muon_momentum_warmup"]
    if it >= warmup:
        return config["muon_momentum"]
    return MUON_MOMENTUM_START + it / warmup * (config["muon_momentum"] - MUON_MOMENTUM_START)


def schedule(optimizers, it, clock, config):
    """Set every group's learning rate (its own base rate, scaled by the schedule's lr / learning_rate: one
    schedule, many rates) and Muon's momentum for iteration it; returns the base learning rate."""
    lr = learning_rate_at(it, clock, config)
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * (lr / config["learning_rate"] if config["learning_rate"] else 0.0)
            if isinstance(opt, Muon):
                group["momentum"] = muon_momentum_at(it, config)
    return lr
