"""
BDH's training step against a plain transcription of the paper's equations (tests/test_bench.py's ReferenceBDH),
the two taking steps in turn in one process so that load from other processes hits both alike. Prints ms per step,
their ratio, and what each saves for backward. Defaults: the demo's widths (4 layers, width 128, 4 heads,
N = 512 per head, bytes), batch 16 x 128, dropout 0, AdamW.

    python studies/bdh_speed.py
    python studies/bdh_speed.py --threads=2 --timed_steps=20
    python studies/bdh_speed.py --device=cuda --batch_size=64 --block_size=512
"""

import os
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import bench  # noqa: E402
import common  # noqa: E402
from configurator import configure, report_errors_in_one_line  # noqa: E402
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
seed = 1337
# -----------------------------------------------------------------------------
report_errors_in_one_line()
configure(globals())
device = common.resolve_device(device, "float32", False)[0]
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
saved = {name: bench.saved_for_backward_mb(net, x, y) for name, net in (("ours", ours), ("reference", reference))}
t = bench.median_step_times({"ours": step_of(ours), "reference": step_of(reference)}, x, y, warmup_steps, timed_steps)
for name in ("reference", "ours"):
    print(f"{name:<10} {1000 * t[name]:8.1f} ms/step  {saved[name]:7.1f} MB saved for backward")
print(f"ours is {t['reference'] / t['ours']:.2f}x as fast, and saves {saved['ours'] / saved['reference']:.2f}x "
      f"the memory ({torch.get_num_threads()} threads)")
