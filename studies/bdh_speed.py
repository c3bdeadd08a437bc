"""
BDH's training step against a plain transcription of the paper's equations (tests/test_bench.py's ReferenceBDH),
the two taking steps in turn in one process so that load from other processes hits both alike. Prints ms per step,
their ratio, and what each saves for backward. Defaults: the demo's widths (4 layers, width 128, 4 heads,
N = 512 per head, bytes), batch 16 x 128, dropout 0, AdamW.

Two more rows: with --compile=True both also run compiled; and "products alone" replays, on fresh operands, only
the matrix products that our step runs (recorded from one forward and backward of it). No implementation that keeps
those products can beat that row, so the reference over it bounds the ratio any rewrite of the rest could reach.

    python studies/bdh_speed.py
    python studies/bdh_speed.py --threads=2 --timed_steps=20
    python studies/bdh_speed.py --compile=True --timed_steps=20
    python studies/bdh_speed.py --device=cuda --batch_size=64 --block_size=512
"""

import copy
import os
import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import bench  # noqa: E402
from configurator import configure, report_errors_in_one_line  # noqa: E402
from hardware import resolve_device  # noqa: E402
from model import create_model  # noqa: E402
from tests.test_bench import ReferenceBDH, step_of  # noqa: E402

# -----------------------------------------------------------------------------
n_layer = 4
n_embd = 128
n_head = 4
mlp_internal_dim_multiplier = 16  # N = 16 * 128 / 4 = 512
vocab_size = 257
batch_size = 16
block_size = 128
warmup_steps = 2
timed_steps = 10
threads = 1  # torch threads; 0: torch's default
device = "cpu"  # or 'cuda' (float32 there too: the comparison is of the two codes, not of precisions)
compile = False  # also time both under torch.compile (its compilation happens in the untimed warm-up steps)
seed = 1337
# -----------------------------------------------------------------------------
report_errors_in_one_line()
configure(globals())
device = resolve_device(device, "float32", False)[0]
if threads:
    torch.set_num_threads(threads)
torch.manual_seed(seed)
args = dict(n_layer=n_layer, n_embd=n_embd, n_head=n_head, mlp_internal_dim_multiplier=mlp_internal_dim_multiplier,
            vocab_size=vocab_size, dropout=0.0)
ours = create_model("bdh", args).to(device)
ours.track_activity = False  # as in train.py's steps between two log lines (it counts active neurons to log them)
reference = ReferenceBDH(ours.config).to(device)
g = torch.Generator().manual_seed(seed)
x, y = torch.randint(0, vocab_size, (2, batch_size, block_size), generator=g).to(device)


class RecordProducts(TorchDispatchMode):
    """Records the shapes of every matrix product (mm, bmm) that runs under it."""

    def __init__(self):
        super().__init__()
        self.products = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten.mm.default, torch.ops.aten.bmm.default):
            self.products.append((func, args[0].shape, args[1].shape))
        return func(*args, **(kwargs or {}))


class ProductsAlone(torch.nn.Module):
    """Stands in for a model in bench.train_step: runs only the recorded products, on operands made once (cold in
    cache by the time they come round again, as activations are) and a loss-like scalar with nothing to learn."""

    def __init__(self, products, device):
        super().__init__()
        self.calls = [(func, torch.randn(a, device=device), torch.randn(b, device=device)) for func, a, b in products]
        self.scalar = torch.nn.Parameter(torch.zeros((), device=device))

    def forward(self, idx, targets):
        for func, a, b in self.calls:
            func(a, b)
        return None, self.scalar * 1.0


with RecordProducts() as recorder:
    ours(x, y)[1].backward()
ours.zero_grad(set_to_none=True)
nets = {"reference": reference, "ours": ours}
if compile:
    # copies: each timed row takes its own optimizer's steps on its own weights
    nets |= {f"{name} compiled": torch.compile(copy.deepcopy(net)) for name, net in nets.items()}
nets["products alone"] = ProductsAlone(recorder.products, device)
saved = {name: bench.saved_for_backward_mb(net, x, y) for name, net in (("ours", ours), ("reference", reference))}
t = bench.median_step_times({name: step_of(net) for name, net in nets.items()}, x, y, warmup_steps, timed_steps)
print(f"{len(recorder.products)} matrix products per step in ours")
for name in nets:
    memory = f"{saved[name]:7.1f} MB saved for backward" if name in saved else ""
    print(f"{name:<20} {1000 * t[name]:8.1f} ms/step  {t['reference'] / t[name]:5.2f}x the reference's speed  {memory}")
print(f"ours saves {saved['ours'] / saved['reference']:.2f}x the reference's memory ({torch.get_num_threads()} threads)")
