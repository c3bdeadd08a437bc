"""
What Muon costs per training step, and what optim.Muon's two changes to torch.optim.Muon buy: matrices of one shape
orthogonalised together (one batched product per Newton-Schulz step), in float32 where the CPU has no fast
bfloat16 (torch.optim.Muon always iterates in bfloat16). The same GPT step is timed with AdamW alone, with
torch.optim.Muon (one matrix at a time) and with optim.Muon, one step of each in turn, so the machine's drift falls
on all alike.

    python studies/muon_speed.py                                   # nanoGPT's shakespeare_char CPU shape
    python studies/muon_speed.py --n_embd=512 --n_layer=8 --n_head=8 --batch_size=8 --block_size=256
"""

import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configurator import configure  # noqa: E402
from model import create_model  # noqa: E402

# -----------------------------------------------------------------------------
n_layer = 4
n_head = 4
n_embd = 128
block_size = 64
batch_size = 12
vocab_size = 66
steps = 100  # timed steps of each, in turn
ns_steps = 5
# -----------------------------------------------------------------------------
configure(globals())


def make_step(kind):
    torch.manual_seed(0)
    model = create_model("gpt", dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size,
                                     vocab_size=vocab_size, bias=False, dropout=0.0))
    opts = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu", "adamw" if kind == "adamw" else "muon",
                                      muon_ns_steps=ns_steps)
    if kind == "torch.optim.Muon":  # the same matrices, one at a time, as torch runs them
        opts[1] = torch.optim.Muon(opts[1].param_groups[0]["params"], lr=0.02, weight_decay=0.0, ns_steps=ns_steps)
    x = torch.randint(0, vocab_size, (batch_size, block_size))

    def step():
        _, loss = model(x, x)
        loss.backward()
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)

    def optimizer_only():
        for p in model.parameters():
            p.grad = torch.ones_like(p) * 1e-3
        for opt in opts[1:]:
            opt.step()

    return step, optimizer_only


if __name__ == "__main__":
    kinds = ["adamw", "torch.optim.Muon", "optim.Muon"]
    fns = {k: make_step(k) for k in kinds}
    for part in (0, 1):
        for fn in fns.values():
            for _ in range(3):
                fn[part]()  # warm
        total = dict.fromkeys(kinds, 0.0)
        for _ in range(steps):
            for k in kinds:
                t0 = time.perf_counter()
                fns[k][part]()
                total[k] += time.perf_counter() - t0
        what = "whole training step" if part == 0 else "Muon's step alone"
        print(f"{what} ({batch_size} x {block_size} tokens, {n_layer} layers, width {n_embd}, "
              f"{torch.get_num_threads()} threads):")
        for k in kinds:
            if part == 1 and k == "adamw":
                continue
            print(f"  {k:<18} {1000 * total[k] / steps:8.2f} ms  ({total[k] / total[kinds[part]]:.2f}x "
                  f"{kinds[part]}'s)")
