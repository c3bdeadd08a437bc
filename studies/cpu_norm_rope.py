"""
RMSNorm and rope on a CPU: a GPT training step (forward, backward, clipping, Muon and AdamW) with model.py's CPU forms
of the two (RMSNormCPU's written-out backward, rope as one complex product per pair) against torch's F.rms_norm and
the real rotation formula, timed in turn in one process, `rounds` rounds of `steps` steps each; reports each
round's ratio and the median. Both forms compute the same numbers (tests/test_model.py), so only time differs.

    python studies/cpu_norm_rope.py                          # config/shakespeare_char.py's model, 66 tokens
    python studies/cpu_norm_rope.py --variant=exportable --vocab_size=2048   # the TinyStories configs' blocks
"""

import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import model as model_module  # noqa: E402
from configurator import configure  # noqa: E402
from optim import configure_optimizers  # noqa: E402

# -----------------------------------------------------------------------------
variant = "final"  # 'final' (config/shakespeare_char.py's blocks) or 'exportable' (the TinyStories GPT configs')
vocab_size = 66
batch_size = 32
rounds = 8
steps = 10
# -----------------------------------------------------------------------------
configure(globals())

shape = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=vocab_size, bias=False, rope=True,
             norm="rmsnorm", qk_norm=True, tie_embeddings=False)
shape |= (dict(mlp="relu2", logit_softcap=15.0, x0_skip=True, value_embeds=True) if variant == "final"
          else dict(mlp="swiglu"))
torch.manual_seed(1337)
model = model_module.GPT(model_module.GPTConfig(**shape))
optimizers = configure_optimizers(model, 0.0, 3e-3, (0.8, 0.95), "cpu", "muon", embedding_lr=0.05, head_lr=0.004,
                                  scalar_lr=0.01, muon_normuon=True)
x = torch.randint(0, vocab_size, (batch_size, 64))
y = torch.randint(0, vocab_size, (batch_size, 64))
ours = (model_module.rms_norm, model_module.apply_rope)


def torch_rms_norm(x, weight=None, eps=1e-5):
    return F.rms_norm(x, x.shape[-1:], weight, eps)


def step():
    _, loss = model(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    for opt in optimizers:
        opt.step()
        opt.zero_grad(set_to_none=True)


forms = {"torch": (torch_rms_norm, model_module.rotate_pairs_real), "ours": ours}
ms = {name: [] for name in forms}
for _ in range(rounds):
    for name, (norm, rope) in forms.items():
        model_module.rms_norm, model_module.apply_rope = norm, rope
        step()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        ms[name].append(1000 * (time.perf_counter() - t0) / steps)
ratios = [o / t for o, t in zip(ms["ours"], ms["torch"])]
print(f"{variant}, vocabulary {vocab_size}, batch {batch_size} x 64, {torch.get_num_threads()} threads")
for name in forms:
    by_round = " ".join(f"{v:.1f}" for v in ms[name])
    print(f"  {name:<6} ms/step by round: {by_round} (median {statistics.median(ms[name]):.1f})")
print(f"  ours / torch by round: {' '.join(f'{r:.3f}' for r in ratios)}; median {statistics.median(ratios):.3f}")
