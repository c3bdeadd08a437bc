"""
The optimizers and their schedule: which parameters each optimizer holds (configure_optimizers), Muon for stacks of
matrices (HeadwiseMuon), and the learning rate at a point of training (learning_rate_at), which the length
curriculum reads too (progress_at). train.py calls them; model.py's configure_optimizers is this one.
"""

import inspect
import math

import torch
import torch.nn as nn


class HeadwiseMuon(torch.optim.Muon if hasattr(torch.optim, "Muon") else object):
    """torch.optim.Muon, which takes 2-D matrices only, extended to stacks of them: BDH's encoders (n_head, D, N) are
    n_head matrices, each orthogonalised on its own. Muon sees a 2-D view of each head that shares the weight's
    storage, so its in-place updates land in the weight; a hook points each view's gradient at its head's slice
    of the weight's gradient whenever backward writes it."""

    def __init__(self, params, **kwargs):
        self.stacks = []  # (the stacked weight, its per-head views)
        matrices = []
        for p in params:
            if p.dim() == 2:
                matrices.append(p)
                continue
            views = [nn.Parameter(p.data[h]) for h in range(p.size(0))]  # (D, N) views of p's storage
            self.stacks.append((p, views))
            matrices += views
            p.register_post_accumulate_grad_hook(lambda p, views=views: self._point_grads(p, views))
        super().__init__(matrices, **kwargs)

    @staticmethod
    def _point_grads(p, views):
        for h, view in enumerate(views):
            view.grad = None if p.grad is None else p.grad[h]

    def step(self, closure=None):
        for p, views in self.stacks:  # again here: a gradient written without the hook (DDP's copy) is seen too
            self._point_grads(p, views)
        return super().step(closure)

    def zero_grad(self, set_to_none=True):
        super().zero_grad(set_to_none)
        for p, _ in self.stacks:  # the stacked weights are not Muon's own parameters: their gradients too
            if p.grad is not None:
                p.grad = None if set_to_none else p.grad.zero_()


def configure_optimizers(model, weight_decay, learning_rate, betas, device_type, optimizer="adamw",
                         muon_learning_rate=0.02, muon_momentum=0.95):
    """A list of optimizers that together hold every parameter once. 'adamw': AdamW, with weight decay on
    matrices and embeddings (dim >= 2) only, never on biases and norm gains. 'muon': torch.optim.Muon for the
    hidden matrices (everything of dim >= 2 outside the embeddings and head), AdamW for the rest; each group
    keeps its base learning rate in group["base_lr"] for the schedule to scale."""
    params = [p for p in model.parameters() if p.requires_grad]  # parameters() yields a tied tensor once
    embedding = {id(p) for m in model.embedding_modules() for p in m.parameters()}
    hidden = [p for p in params if optimizer == "muon" and p.dim() >= 2 and id(p) not in embedding]
    adam = [p for p in params if all(p is not q for q in hidden)]
    groups = [
        {"params": [p for p in adam if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in adam if p.dim() < 2], "weight_decay": 0.0},
    ]
    fused = device_type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters
    optimizers = [torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **({"fused": True} if fused else {}))]
    if hidden:
        if not hasattr(torch.optim, "Muon"):
            raise ImportError(f"--optimizer=muon needs torch >= 2.9 (torch.optim.Muon), this is "
                              f"{torch.__version__}: pip install -U torch, or use --optimizer=adamw")
        # weight decay 0: Muon's orthogonalised updates keep the weights' scale bounded without it (nanochat)
        optimizers.append(HeadwiseMuon(hidden, lr=muon_learning_rate, momentum=muon_momentum, weight_decay=0.0))
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
    """The base learning rate at iteration it: a linear warmup over warmup_iters, then cosine decay to min_lr at
    the end of the schedule (progress); learning_rate throughout without decay_lr. Each optimizer group scales its
    own base rate by the same factor (set_learning_rate)."""
    lr, min_lr, warmup = config["learning_rate"], config["min_lr"], config["warmup_iters"]
    if not config["decay_lr"]:
        return lr
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    if config["lr_schedule_over"] == "time":
        ratio = progress_at(it, clock, config)
    else:
        decay_iters = config["lr_decay_iters"] or config["max_iters"]
        if it >= decay_iters:
            return min_lr
        ratio = (it - warmup) / max(1, decay_iters - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def set_learning_rate(optimizers, lr, learning_rate):
    """Every group at its own base rate (group["base_lr"]) times lr / learning_rate: one schedule, many rates."""
    for group in (g for opt in optimizers for g in opt.param_groups):
        group["lr"] = group["base_lr"] * (lr / learning_rate if learning_rate else 0.0)
