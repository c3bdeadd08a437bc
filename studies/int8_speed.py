"""
--quantize=int8 against float32 on this CPU, in one process: generation speed (tokens/s with the cache, the way
sample.py decodes) and val loss (eval.py's, on the run's own val split), for trained runs and for model shapes
with random weights (speed only), each pair timed in turn so the machine's drift falls on both alike.

    python studies/int8_speed.py --runs=out-demo,out-demo-bdh --shapes=124M
    python studies/int8_speed.py --runs= --shapes=124M,tinystories --tokens=64 --rounds=3

A run's speed is decoding from a one-token prompt to --tokens tokens (sampling at temperature 0.8, top_k 200, as
sample.py does by default), repeated --rounds times for each form in turn; the figure is the median round.
"""

import os
import sys
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from checkpoints import load_model  # noqa: E402
from configurator import configure  # noqa: E402
from eval import evaluate, token_file  # noqa: E402
from model import create_model  # noqa: E402
from quantize import quantize_model  # noqa: E402
from tokenizer import get_tokenizer  # noqa: E402

# -----------------------------------------------------------------------------
runs = "out-demo,out-demo-bdh"  # comma-separated run folders: speed and val loss, float32 against int8
shapes = "124M"  # comma-separated SHAPES, random weights: speed only
tokens = 128  # tokens generated per round
rounds = 5  # rounds per form, in turn
eval_batches = 0  # val loss: 0 scores every block of the val split
threads = 0  # torch threads (0: torch's default)
# -----------------------------------------------------------------------------
configure(globals())
if threads:
    torch.set_num_threads(threads)

SHAPES = {  # GPT-2 124M, and config/tinystories_4090.py's GPT
    "124M": ("gpt", {"vocab_size": 50257, "block_size": 1024, "n_layer": 12, "n_head": 12, "n_embd": 768}),
    "tinystories": ("gpt", {"vocab_size": 50257, "block_size": 256, "n_layer": 6, "n_head": 6, "n_embd": 384}),
}


def decode_speed(model, generator):
    """Tokens per second of one round: a one-token prompt, then `tokens` tokens with the cache."""
    x = torch.zeros((1, 1), dtype=torch.long)
    t0 = time.perf_counter()
    with torch.no_grad():
        for _ in model.generate_stream(x, tokens, temperature=0.8, top_k=200, generator=generator):
            pass
    return tokens / (time.perf_counter() - t0)


def speeds(pair):
    """{form: median tokens/s} of the forms in pair, one round of each in turn."""
    out = {form: [] for form in pair}
    for form, model in pair.items():
        decode_speed(model, torch.Generator().manual_seed(0))  # warm
    for r in range(rounds):
        for form, model in pair.items():
            out[form].append(decode_speed(model, torch.Generator().manual_seed(r)))
    return {form: float(np.median(v)) for form, v in out.items()}


def weight_bytes(model):
    """Bytes of the model's weights as they sit in memory: float tensors, plus each int8 Linear's int8 weight and
    its per-row float scales (torch.ao keeps them packed, outside state_dict's tensors)."""
    total = sum(t.numel() * t.element_size() for t in model.state_dict().values() if torch.is_tensor(t))
    for m in model.modules():
        if hasattr(m, "_packed_params") and callable(getattr(m, "weight", None)):  # the Linear, not its packed part
            w = m.weight()  # the quantized (N, K) weight
            total += w.numel() + 4 * w.size(0)
    return total


if __name__ == "__main__":
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {tokens} tokens x {rounds} rounds")
    print(f"{'model':<22} {'params':>8} {'fp32 tok/s':>10} {'int8 tok/s':>10} {'int8/fp32':>9} {'fp32 val':>9} "
          f"{'int8 val':>9}")
    for run in filter(None, runs.split(",")):
        pair = {how or "float32": load_model(run, quantize=how)[0] for how in ("", "int8")}
        _, ckpt, meta = load_model(run)
        s = speeds(pair)
        val = token_file("val", ckpt, meta)
        byte_lengths = get_tokenizer(meta["tokenizer"], run).byte_lengths()
        losses = {form: evaluate(m, val, byte_lengths, 8, eval_batches, None,
                                 ckpt["config"]["block_size"])["loss"] for form, m in pair.items()}
        n = pair["float32"].num_params()
        print(f"{os.path.basename(os.path.normpath(run)):<22} {n / 1e6:>7.2f}M {s['float32']:>10.1f} {s['int8']:>10.1f} "
              f"{s['int8'] / s['float32']:>8.2f}x {losses['float32']:>9.4f} {losses['int8']:>9.4f}", flush=True)
    for name in filter(None, shapes.split(",")):
        kind, args = SHAPES[name]
        torch.manual_seed(0)
        pair = {"float32": create_model(kind, args).eval()}
        torch.manual_seed(0)
        pair["int8"] = quantize_model(create_model(kind, args).eval(), "int8", "cpu")
        s = speeds(pair)
        mb = {form: weight_bytes(m) / 2**20 for form, m in pair.items()}
        print(f"{name + ' (random)':<22} {pair['float32'].num_params() / 1e6:>7.2f}M {s['float32']:>10.1f} "
              f"{s['int8']:>10.1f} {s['int8'] / s['float32']:>8.2f}x {'-':>9} {'-':>9}   weights in memory: "
              f"{mb['float32']:.0f} MiB float32, {mb['int8']:.0f} MiB int8", flush=True)
