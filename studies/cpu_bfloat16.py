"""
bfloat16 against float32 on this CPU, as train.py runs them (torch.autocast around forward and loss, float32
weights and optimizer): time per training step, timed in turn, and the loss after the same steps on the same
batches, at the benchmark's width (128) and a wider one. What dtype='auto' picks here is printed first: bfloat16
only where the CPU multiplies it in hardware (AVX512-BF16 or AMX), float32 elsewhere.

    python studies/cpu_bfloat16.py --widths=128,512 --steps=100 --rounds=10
"""

import os
import sys
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from configurator import configure  # noqa: E402
from hardware import autocast, cpu_has_bfloat16, resolve_device  # noqa: E402
from model import create_model  # noqa: E402

# -----------------------------------------------------------------------------
widths = "128,512"  # n_embd of each shape (4 layers, 4 heads, block 64, batch 16, the recipe's blocks)
steps = 100  # training steps of each dtype for the loss
rounds = 10  # timed steps of each, in turn
threads = 0  # torch threads (0: torch's default)
# -----------------------------------------------------------------------------
configure(globals())
if threads:
    torch.set_num_threads(threads)


def trainer(width, dtype):
    torch.manual_seed(0)
    model = create_model("gpt", dict(vocab_size=66, block_size=64, n_layer=4, n_head=4, n_embd=width, bias=False,
                                     rope=True, norm="rmsnorm", mlp="relu2", qk_norm=True, dropout=0.0))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = torch.Generator().manual_seed(1)

    def step():
        x = torch.randint(0, 66, (16, 65), generator=batches)
        x[:, 1::2] = (x[:, 0::2][:, : x[:, 1::2].size(1)] * 7 + 3) % 66  # half the tokens follow from the last
        with autocast("cpu", dtype):
            _, loss = model(x[:, :-1].contiguous(), x[:, 1:].contiguous())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step


if __name__ == "__main__":
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; native bfloat16 on this CPU: "
          f"{cpu_has_bfloat16()}; dtype='auto' picks {resolve_device('cpu', 'auto', False)[2]}")
    print(f"{'width':>5} {'float32 ms':>10} {'bf16 ms':>8} {'bf16/fp32':>9} {'loss@0 fp32':>11} {'loss@0 bf16':>11} "
          f"{'loss@' + str(steps) + ' fp32':>13} {'loss@' + str(steps) + ' bf16':>13}")
    for width in map(int, widths.split(",")):
        step = {dt: trainer(width, dt) for dt in ("float32", "bfloat16")}
        losses = {dt: [step[dt]() for _ in range(steps)] for dt in step}
        times = {dt: [] for dt in step}
        for _ in range(rounds):
            for dt in step:
                t0 = time.perf_counter()
                step[dt]()
                times[dt].append(1000 * (time.perf_counter() - t0))
        ms = {dt: float(np.median(t)) for dt, t in times.items()}
        print(f"{width:>5} {ms['float32']:>10.1f} {ms['bfloat16']:>8.1f} {ms['bfloat16'] / ms['float32']:>8.2f}x "
              f"{losses['float32'][0]:>11.4f} {losses['bfloat16'][0]:>11.4f} {losses['float32'][-1]:>13.4f} "
              f"{losses['bfloat16'][-1]:>13.4f}", flush=True)
