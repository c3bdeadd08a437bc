"""
The equal-wall-time study behind BENCHMARKS.md: train.py variants against nanoGPT's own recipe, on the same data
and machine, each given the wall time nanoGPT's training takes.

    python prepare.py --input=../shared/data/tinyshakespeare/input.txt --tokenizer=char --val_fraction=0.1 \
        --out_dir=data/shakespeare_char
    python studies/equal_time.py --variants=base,modern,muon,all
    python prepare.py --input=../shared/data/tinystories/TinyStories-train-sample.txt --tokenizer=bpe:2048 \
        --val_fraction=0.1 --out_dir=data/tinystories_sample_bpe
    python studies/equal_time.py --dataset=data/tinystories_sample_bpe --variants=base,aligned,muon

How "equal wall time" is kept on a machine whose speed drifts: first each variant's training step and nanoGPT's
are timed in turn, in this process (ms_per_iter below, the ratio taken within each round); then each variant
trains for the iterations that fit in the time nanoGPT's reference_iters take, with its schedule over those
iterations (train.py, deterministic). The score is the loss on every non-overlapping block of the val split
(eval.evaluate), for nanoGPT too.

The nanoGPT reference (NanoGPT below) is nanoGPT's model.py and train.py loop as its README runs them on a CPU:
`python train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20 --log_interval=1
--block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000
--dropout=0.0`, rewritten here: LayerNorm and Linear without bias, GELU MLP, tied head over the dataset's vocabulary
(for char data nanoGPT's: the characters, without our end-of-text), AdamW (lr 1e-3, beta2 0.99, weight decay 0.1
on matrices), warmup 100, cosine to 1e-4, random windows.
"""

import json
import math
import os
import re
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from checkpoints import load_model  # noqa: E402
from configurator import configure  # noqa: E402
from dataloader import BatchLoader, find_dataset, open_tokens, parse_block_size_schedule  # noqa: E402
from eval import evaluate  # noqa: E402
from model import create_model, pick_model_args  # noqa: E402
from tokenizer import get_tokenizer  # noqa: E402

# -----------------------------------------------------------------------------
dataset = "data/shakespeare_char"
config = "config/shakespeare_char.py"  # the variants' base (nanoGPT's shape); variants override it
variants = "base,modern,muon,epoch,curriculum,all"  # names from VARIANTS, or name=--key=value;--key=value
reference_iters = 2000  # nanoGPT's iterations: their wall time is every variant's budget
reference_run = True  # train nanoGPT for its val loss (False: time it only, to set the variants' iterations)
fraction = 1.0  # give each variant this share of that time (0.25: "nanoGPT's loss in a quarter of its time")
timing_steps = 300  # per variant, taken in turn
out_root = "out-study"
threads = 0  # torch threads, here and in train.py (0: torch's default)
seed = 1337
# -----------------------------------------------------------------------------
configure(globals())
if threads:
    torch.set_num_threads(threads)

NANOGPT = ["--learning_rate=1e-3", "--min_lr=1e-4", "--beta2=0.99", "--warmup_iters=100", "--bias=False",
           "--rope=False", "--norm=layernorm", "--mlp=gelu", "--optimizer=adamw", "--sampling=random",
           "--block_size_schedule=", "--weight_decay=0.1", "--grad_clip=1.0"]
VARIANTS = {  # each alone on top of nanoGPT's settings in train.py, then together
    "base": [],
    "modern": ["--rope=True", "--norm=rmsnorm", "--mlp=swiglu"],
    "muon": ["--optimizer=muon"],
    "epoch": ["--sampling=epoch"],
    "aligned": ["--sampling=aligned"],  # for data with documents: windows start at document starts
    "curriculum": ["--block_size_schedule=16:0.2,32:0.5"],
    "all": ["--rope=True", "--norm=rmsnorm", "--mlp=swiglu", "--optimizer=muon", "--sampling=epoch"],
    "config": None,  # the config file as it is: the settings the study chose
}


class NanoGPT(nn.Module):
    """nanoGPT's GPT at bias=False, dropout 0: the same modules, init and weight tying."""

    def __init__(self, vocab_size, block_size, n_layer, n_head, n_embd):
        super().__init__()
        self.n_head = n_head
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.h = nn.ModuleList([nn.ModuleDict({
            "ln_1": nn.LayerNorm(n_embd, bias=False), "c_attn": nn.Linear(n_embd, 3 * n_embd, bias=False),
            "attn_proj": nn.Linear(n_embd, n_embd, bias=False), "ln_2": nn.LayerNorm(n_embd, bias=False),
            "c_fc": nn.Linear(n_embd, 4 * n_embd, bias=False), "mlp_proj": nn.Linear(4 * n_embd, n_embd, bias=False),
        }) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd, bias=False)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.wte.weight = self.lm_head.weight
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx, targets):
        B, T = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(T))
        for b in self.h:
            q, k, v = b["c_attn"](b["ln_1"](x)).split(x.size(-1), dim=2)
            q, k, v = (t.view(B, T, self.n_head, -1).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, -1)
            x = x + b["attn_proj"](y)
            x = x + b["mlp_proj"](F.gelu(b["c_fc"](b["ln_2"](x))))
        logits = self.lm_head(self.ln_f(x))
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def nanogpt_vocab(meta):
    """nanoGPT's vocabulary: for char data its characters, without the end-of-text we add (the last id)."""
    return meta["vocab_size"] - (meta["tokenizer"] == "char")


def nanogpt_run(data_dir, meta, iters, timed=None):
    """nanoGPT's training loop (get_batch, get_lr, eval every 250 of 20 batches, grad clip 1.0). With timed=N:
    return a step function for timing instead."""
    torch.manual_seed(1337)
    train = np.memmap(os.path.join(data_dir, "train.bin"), dtype=np.uint16, mode="r")
    val = np.memmap(os.path.join(data_dir, "val.bin"), dtype=np.uint16, mode="r")
    model = NanoGPT(nanogpt_vocab(meta), 64, 4, 4, 128)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99))

    def get_batch(data):
        ix = torch.randint(len(data) - 64, (12,))
        x = torch.stack([torch.from_numpy(data[i : i + 64].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1 : i + 65].astype(np.int64)) for i in ix])
        return x, y

    def get_lr(it):
        if it < 100:
            return 1e-3 * (it + 1) / 101
        if it > iters:
            return 1e-4
        return 1e-4 + 0.5 * (1.0 + math.cos(math.pi * (it - 100) / max(1, iters - 100))) * (1e-3 - 1e-4)

    def step(it):
        for g in opt.param_groups:
            g["lr"] = get_lr(it)
        x, y = get_batch(train)
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()  # nanoGPT's log_interval=1 reads the loss every iteration

    if timed:
        return step
    t0 = time.time()
    for it in range(iters + 1):
        if it % 250 == 0:
            with torch.no_grad():
                model.eval()
                for data in (train, val):
                    [model(*get_batch(data)) for _ in range(20)]
                model.train()
        step(it)
    return model, time.time() - t0


def our_step(args, data_dir, meta):
    """One train.py iteration of a variant (batch, forward, backward, clip, optimizers), built as train.py builds it,
    at each curriculum stage's length: returns [(step function, share of training)]."""
    cfg = {}
    exec(open(os.path.join(REPO, "train.py")).read().split("# -----------------------------------------------------"
                                                           "------------------------\n")[1], {}, cfg)
    for a in args:
        k, v = a[2:].split("=", 1)
        try:
            cfg[k] = eval(v, {})
        except Exception:
            cfg[k] = v
    torch.manual_seed(1337)
    model = create_model(cfg["model"], {**pick_model_args(cfg["model"], cfg), "vocab_size": meta["vocab_size"]})
    opts = model.configure_optimizers(cfg["weight_decay"], cfg["learning_rate"], (cfg["beta1"], cfg["beta2"]), "cpu",
                                      cfg["optimizer"], cfg["muon_learning_rate"], cfg["muon_momentum"])
    loader = BatchLoader(os.path.join(data_dir, "train.bin"), meta, cfg["batch_size"], cfg["block_size"],
                                seed=0, sampling=cfg["sampling"])
    stages = parse_block_size_schedule(cfg["block_size_schedule"], cfg["block_size"])
    steps, start = [], 0.0
    for T, until in stages:
        def step(it, T=T):
            x, y = loader.next_batch()
            _, loss = model(x.view(-1, T), y.view(-1, T))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
            for opt in opts:
                opt.step()
                opt.zero_grad(set_to_none=True)
            return loss
        steps.append((step, until - start))
        start = until
    return steps


def ms_per_iter(step_fns):
    """{name: mean ms per iteration}: one step of each in turn, timing_steps times, so the machine's drift over
    seconds falls on all alike. A curriculum's stages are timed in their shares of the steps."""
    for parts in step_fns.values():
        for step, _ in parts:
            for it in range(3):
                step(it)  # warm
    totals = dict.fromkeys(step_fns, 0.0)
    for i in range(timing_steps):
        for name, parts in step_fns.items():
            ends = np.cumsum([share for _, share in parts])
            step = parts[min(int(np.searchsorted(ends, (i + 0.5) / timing_steps)), len(parts) - 1)][0]
            t0 = time.perf_counter()
            step(i)
            totals[name] += time.perf_counter() - t0
    return {name: 1000 * t / timing_steps for name, t in totals.items()}


def val_loss(out_dir):
    model, ckpt, meta = load_model(out_dir, "latest", "cpu")
    tokens = open_tokens(os.path.join(dataset, "val.bin"), meta, 64)
    byte_lengths = get_tokenizer(meta["tokenizer"], out_dir).byte_lengths()
    return evaluate(model, tokens, byte_lengths, 64, block_size=ckpt["config"]["block_size"])["loss"]


def nanogpt_val_loss(model, data_dir, meta):
    val = np.fromfile(os.path.join(data_dir, "val.bin"), dtype=np.uint16)
    val = val[val < nanogpt_vocab(meta)]  # nanoGPT's char val split has no end-of-text
    n = (len(val) - 1) // 64
    x = torch.from_numpy(val[: n * 64].astype(np.int64)).view(n, 64)
    y = torch.from_numpy(val[1 : n * 64 + 1].astype(np.int64)).view(n, 64)
    model.eval()
    with torch.no_grad():
        return sum(model(x[i : i + 64], y[i : i + 64])[1].item() * len(x[i : i + 64]) for i in range(0, n, 64)) / n


if __name__ == "__main__":
    data_dir, meta = find_dataset(dataset)
    runs = {}
    for item in re.split(r",(?=\w+(?:=|,|$))", variants):  # a comma inside a value ("16:0.2,32:0.5") stays
        name, _, extra = item.partition("=")
        args = extra.split(";") if extra else VARIANTS[name]
        runs[name] = [] if args is None else NANOGPT + args
    print(f"timing: {timing_steps} steps of each, one of each in turn")
    fns = {"nanogpt": [(nanogpt_run(data_dir, meta, reference_iters, timed=True), 1.0)]}
    for name, args in runs.items():
        base = {}
        exec(open(os.path.join(REPO, config)).read(), {}, base)
        fns[name] = our_step([f"--{k}={v}" for k, v in base.items()] + args, data_dir, meta)
    times = ms_per_iter(fns)
    ratio = {name: t / times["nanogpt"] for name, t in times.items()}
    for name in times:
        print(f"  {name:<12} {times[name]:7.2f} ms/iter, {ratio[name]:.3f}x nanoGPT's")
    results = {}
    if reference_run:
        model, seconds = nanogpt_run(data_dir, meta, reference_iters)
        results["nanogpt"] = {"iters": reference_iters, "seconds": round(seconds, 1),
                              "val_loss": round(nanogpt_val_loss(model, data_dir, meta), 4)}
        print(f"nanogpt: {reference_iters} iterations in {seconds:.1f} s, "
              f"val loss {results['nanogpt']['val_loss']:.4f}")
    for name, args in runs.items():
        iters = max(1, round(fraction * reference_iters / ratio[name]))
        out = os.path.join(out_root, name + (f"_{fraction}" if fraction != 1 else ""))
        cmd = [sys.executable, os.path.join(REPO, "train.py"), config, f"--dataset={dataset}", f"--out_dir={out}",
               *args, f"--max_iters={iters}", f"--lr_decay_iters={iters}", f"--eval_interval={iters}",
               "--always_save_checkpoint=True", f"--seed={seed}"]
        subprocess.run(["rm", "-rf", out])
        t0 = time.time()
        env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}  # torch reads it at start
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode:
            raise SystemExit(proc.stdout[-2000:] + proc.stderr[-2000:])
        results[name] = {"iters": iters, "ratio": round(ratio[name], 3), "seconds": round(time.time() - t0, 1),
                         "val_loss": round(val_loss(out), 4),
                         "args": args}
        print(f"{name}: {iters} iterations ({ratio[name]:.3f}x nanoGPT's time each), val loss "
              f"{results[name]['val_loss']:.4f}  [{' '.join(args) or config}]", flush=True)
    print(json.dumps(results))
