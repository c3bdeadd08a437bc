"""
The equal-budget study behind BENCHMARKS.md: train.py variants against nanoGPT's recipe and nanochat's, on the same
data and machine, each given the wall time (or the tokens) nanoGPT's training takes.

    python prepare.py --input=../shared/data/tinyshakespeare/input.txt --tokenizer=char --val_fraction=0.1 \
        --out_dir=data/shakespeare_char
    python studies/equal_time.py --jobs=2 --times_file=out-study/times_shakespeare.json --variants=recipe \
        --nanochat=none:32 --seeds=1337,1338                       # the recipe against nanoGPT and nanochat
    python studies/equal_time.py --jobs=2 --times_file=out-study/times_shakespeare.json --fraction=0.25 \
        --variants="today,no_softcap=recipe-softcap,add_softcap=today+softcap" --reference_run=False
    python prepare.py --input=../shared/data/tinystories/TinyStories-train-sample.txt --tokenizer=bpe:2048 \
        --val_fraction=0.1 --out_dir=data/tinystories_sample_bpe
    python studies/equal_time.py --dataset=data/tinystories_sample_bpe --variants=recipe,exportable --jobs=2

How "equal wall time" is kept on a machine whose speed drifts: first each variant's training step and the
references' are timed in turn, in this process (ms_per_iter below, the ratio taken within each round); then each
variant trains for the iterations that fit in the time nanoGPT's reference_iters take, with its schedule over those
iterations (deterministic, whatever else the machine does meanwhile, so `jobs` runs may train side by side). With
--equal=tokens each trains on nanoGPT's tokens instead. The score is the loss on every non-overlapping block of
the val split, for the references too.

The nanoGPT reference (NanoGPT below) is nanoGPT's model.py and train.py loop as its README runs them on a CPU:
`python train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20 --log_interval=1
--block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000
--dropout=0.0`, rewritten here: LayerNorm and Linear without bias, GELU MLP, tied head over the dataset's vocabulary
(for char data nanoGPT's: the characters, without our end-of-text), AdamW (lr 1e-3, beta2 0.99, weight decay 0.1
on matrices), warmup 100, cosine to 1e-4, random windows. The nanochat reference is studies/nanochat_ref.py at
the same shape, on the same random windows, in settings scaling:batch ("nanochat:32": its scaling rules, 32
sequences of block_size; "none:16": its reference rates as they are, 16 sequences; "none:32:epoch": in train.py's
epoch order, each window once a pass, as the recipe's configs now read data).
"""

import concurrent.futures
import json
import math
import multiprocessing
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nanochat_ref  # noqa: E402

# -----------------------------------------------------------------------------
dataset = "data/shakespeare_char"
config = "config/shakespeare_char.py"  # the variants' base file (nanoGPT's shape); variants override it
variants = "today,recipe"  # expressions of PIECES (today+trapezoid, recipe-zero_init), 'config' (the config file as
# it is), or name=expression:--key=value;--key=value
nanochat = "none:32"  # nanochat reference runs, scaling:sequences[:epoch] each ('nanochat' rules or 'none'; epoch:
# train.py's epoch order instead of random windows); '' for none
reference_iters = 2000  # nanoGPT's iterations: their wall time (or tokens) is every variant's budget
reference_run = True  # train nanoGPT for its val loss (False: time it only, to set the variants' iterations)
equal = "time"  # 'time': nanoGPT's wall time; 'tokens': nanoGPT's tokens
fraction = 1.0  # give each variant this share of that budget (0.25: "nanoGPT's loss in a quarter of its time")
timing_steps = 300  # per variant, taken in turn
seeds = "1337"  # comma-separated: each run once per seed
jobs = 1  # runs trained side by side (each then on threads // jobs threads, 1 at least)
out_root = "out-study"
threads = 0  # torch threads while timing (0: torch's default)
times_file = ""  # a JSON file of step times relative to nanoGPT's, by what a step's time depends on: read where it
# has a variant's, written with those timed now, so a batch of runs reuses timings taken on a quiet machine
train = True  # False: time the steps, print the iterations each would get, and stop
# -----------------------------------------------------------------------------
configure(globals())
if threads:
    torch.set_num_threads(threads)

NANOGPT = ["--learning_rate=1e-3", "--min_lr=1e-4", "--beta2=0.99", "--warmup_iters=100", "--bias=False",
           "--rope=False", "--norm=layernorm", "--mlp=gelu", "--optimizer=adamw", "--sampling=random",
           "--block_size_schedule=", "--weight_decay=0.1", "--grad_clip=1.0", "--batch_size=12",
           # the recipe's keys off, whatever the config file sets: a variant is nanoGPT plus its PIECES
           "--qk_norm=False", "--tie_embeddings=True", "--zero_init=False", "--logit_softcap=0.0", "--x0_skip=False",
           "--value_embeds=False", "--lr_schedule=cosine", "--muon_momentum_warmup=0", "--embedding_lr=0.0",
           "--head_lr=0.0", "--scalar_lr=0.0", "--beta1=0.9", "--muon_normuon=False",
           "--muon_polar_express=False"]
# what the study adds to (or takes from) a recipe, one technique each
PIECES = {
    "muon": ["--optimizer=muon", "--muon_learning_rate=0.02"],
    "rope": ["--rope=True"],
    "rmsnorm": ["--norm=rmsnorm"],
    "swiglu": ["--mlp=swiglu"],
    "relu2": ["--mlp=relu2"],
    "qk_norm": ["--qk_norm=True"],
    "untied": ["--tie_embeddings=False"],
    "zero_init": ["--zero_init=True"],
    "softcap": ["--logit_softcap=15.0"],
    "x0_skip": ["--x0_skip=True"],
    "value_embeds": ["--value_embeds=True"],
    "trapezoid": ["--lr_schedule=trapezoid", "--warmdown_fraction=0.65", "--warmup_iters=20", "--min_lr=0.0"],
    "momentum_warmup": ["--muon_momentum_warmup=300"],
    "normuon": ["--muon_normuon=True"],
    "polar": ["--muon_polar_express=True"],
    "head8": ["--head_lr=0.008"],  # nanochat's head rate
    "warmup5": ["--warmup_iters=5"],  # after the trapezoid's, which sets 20
    "adam_groups": ["--learning_rate=3e-3", "--embedding_lr=0.05", "--head_lr=0.004", "--scalar_lr=0.01",
                    "--beta1=0.8", "--beta2=0.95", "--weight_decay=0.0"],
    "batch32": ["--batch_size=32"],
    "epoch": ["--sampling=epoch"],
    "aligned": ["--sampling=aligned"],  # for data with documents: windows start at document starts
    "curriculum": ["--block_size_schedule=16:0.2,32:0.5"],
}
TIMED_KEYS = ("model", "batch_size", "block_size", "gradient_accumulation_steps", "block_size_schedule", "optimizer",
              "muon_ns_steps", "sampling", "grad_clip")
BASES = {
    "nanogpt": [],  # nanoGPT's settings in train.py
    "today": ["muon"],  # config/shakespeare_char.py before this study: Muon on nanoGPT's GPT
    "recipe": ["muon", "rope", "rmsnorm", "relu2", "qk_norm", "untied", "zero_init", "softcap", "x0_skip",
               "value_embeds", "trapezoid", "momentum_warmup", "adam_groups", "batch32"],
    # config/shakespeare_char.py: the recipe with NorMuon, Polar Express and the epoch order, without zero-init
    "final": ["muon", "rope", "rmsnorm", "relu2", "qk_norm", "untied", "softcap", "x0_skip", "value_embeds",
              "trapezoid", "momentum_warmup", "normuon", "polar", "adam_groups", "batch32", "epoch"],
    # the recipe less what transformers and llama.cpp have no form for (softcap, x0_skip, value_embeds, relu2):
    # what the TinyStories GPT configs train, so their runs export (Qwen3's blocks: Llama's with QK-norm)
    "exportable": ["muon", "rope", "rmsnorm", "swiglu", "qk_norm", "untied", "zero_init", "trapezoid",
                   "momentum_warmup", "adam_groups", "batch32"],
    # the TinyStories GPT configs at this shape: exportable with NorMuon, Polar Express, nanochat's head rate, a
    # 5-iteration warmup and the epoch order, without zero-init
    "tinystories": ["muon", "rope", "rmsnorm", "swiglu", "qk_norm", "untied", "trapezoid", "momentum_warmup",
                    "normuon", "polar", "adam_groups", "batch32", "head8", "warmup5", "epoch"],
}


def variant_args(expression):
    """'recipe-softcap+epoch' -> train.py arguments: a base's pieces, minus and plus pieces, then --key=value
    overrides after a colon. 'config': the config file as it is."""
    if expression == "config":
        return []
    expression, _, overrides = expression.partition(":")
    names = re.findall(r"[+-]?\w+", expression)
    pieces = list(BASES[names[0]])
    for name in names[1:]:
        if name[1:] not in PIECES:
            raise ValueError(f"unknown piece {name[1:]!r}; choose from {', '.join(PIECES)}")
        pieces = [p for p in pieces if p != name[1:]] + ([name[1:]] if name[0] == "+" else [])
    return NANOGPT + [a for p in pieces for a in PIECES[p]] + [a for a in overrides.split(";") if a]


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


def nanogpt_run(data_dir, meta, iters, timed=False, seed=1337):
    """nanoGPT's training loop (get_batch, get_lr, eval every 250 of 20 batches, grad clip 1.0). With timed: return
    a step function for timing instead."""
    torch.manual_seed(seed)
    train = np.memmap(os.path.join(data_dir, "train.bin"), dtype=np.uint16, mode="r")
    val = np.memmap(os.path.join(data_dir, "val.bin"), dtype=np.uint16, mode="r")
    model = NanoGPT(nanogpt_vocab(meta), 64, 4, 4, 128)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99))

    def get_lr(it):
        if it < 100:
            return 1e-3 * (it + 1) / 101
        if it > iters:
            return 1e-4
        return 1e-4 + 0.5 * (1.0 + math.cos(math.pi * (it - 100) / max(1, iters - 100))) * (1e-3 - 1e-4)

    def step(it):
        for g in opt.param_groups:
            g["lr"] = get_lr(it)
        x, y = get_batch(train, 12)
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
                    [model(*get_batch(data, 12)) for _ in range(20)]
                model.train()
        step(it)
    return model, time.time() - t0


def get_batch(data, batch_size, T=64):
    """nanoGPT's: batch_size random windows of T + 1 tokens, with replacement."""
    ix = torch.randint(len(data) - T, (batch_size,))
    x = torch.stack([torch.from_numpy(data[i : i + T].astype(np.int64)) for i in ix])
    y = torch.stack([torch.from_numpy(data[i + 1 : i + T + 1].astype(np.int64)) for i in ix])
    return x, y


def nanochat_run(data_dir, meta, iters, setting, timed=False, seed=1337):
    """nanochat's model, optimizer and schedule (studies/nanochat_ref.py) for iters steps of its batch; setting is
    'scaling:sequences' (random windows) or 'scaling:sequences:epoch' (train.py's epoch order, each window once a
    pass, as nanochat's own loader reads its data). With timed: a step function for timing instead."""
    scaling, batch, order = (setting + ":random").split(":")[:3]
    torch.manual_seed(seed)
    path = os.path.join(data_dir, "train.bin")
    if order == "random":
        train = np.memmap(path, dtype=np.uint16, mode="r")
        next_batch = lambda: get_batch(train, int(batch))  # noqa: E731
    else:
        next_batch = BatchLoader(path, meta, int(batch), 64, seed=seed, sampling=order).next_batch
    model = nanochat_ref.NanoChat(meta["vocab_size"], 64, 4, 4, 128)
    opt = nanochat_ref.setup_optimizer(model, int(batch) * 64, max(1, iters) * int(batch) * 64, scaling)

    def step(it):
        nanochat_ref.schedule(opt, it, iters)
        _, loss = model(*next_batch())
        loss.backward()
        opt.step()
        model.zero_grad(set_to_none=True)
        return loss.item()

    if timed:
        return step
    t0 = time.time()
    for it in range(iters):
        step(it)
    return model, time.time() - t0


def train_config(args):
    """train.py's config: its defaults, the config file, then args, as train.py resolves them."""
    cfg = {}
    exec(open(os.path.join(REPO, "train.py")).read().split("# -----------------------------------------------------"
                                                           "------------------------\n")[1], {}, cfg)
    exec(open(os.path.join(REPO, config)).read(), {}, cfg)
    for a in args:
        k, v = a[2:].split("=", 1)
        try:
            cfg[k] = eval(v, {})
        except Exception:
            cfg[k] = v
    return cfg


def our_step(args, data_dir, meta):
    """One train.py iteration of a variant (batch, forward, backward, clip, optimizers), built as train.py builds it,
    at each curriculum stage's length: returns [(step function, share of training)]."""
    cfg = train_config(args)
    torch.manual_seed(1337)
    model = create_model(cfg["model"], {**pick_model_args(cfg["model"], cfg), "vocab_size": meta["vocab_size"]})
    opts = model.configure_optimizers(cfg["weight_decay"], cfg["learning_rate"], (cfg["beta1"], cfg["beta2"]), "cpu",
                                      cfg["optimizer"], cfg["muon_learning_rate"], cfg["muon_momentum"],
                                      cfg["embedding_lr"], cfg["head_lr"], cfg["scalar_lr"], cfg["muon_ns_steps"],
                                      cfg["muon_normuon"], cfg["muon_polar_express"])
    loader = BatchLoader(os.path.join(data_dir, "train.bin"), meta, cfg["batch_size"], cfg["block_size"], seed=0,
                         sampling=cfg["sampling"])
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
    """{name: ms per iteration}: one step of each in turn, timing_steps rounds, so the machine's drift over seconds
    falls on all alike; each variant's time is nanoGPT's median step times the mean of its ratios to the nanoGPT
    step of the same round, the highest and lowest tenth left out (a spike of load in one round moves it little).
    A curriculum's stages are timed in their shares of the rounds."""
    for parts in step_fns.values():
        for step, _ in parts:
            for it in range(3):
                step(it)  # warm
    rounds = {name: [] for name in step_fns}
    for i in range(timing_steps):
        for name, parts in step_fns.items():
            ends = np.cumsum([share for _, share in parts])
            step = parts[min(int(np.searchsorted(ends, (i + 0.5) / timing_steps)), len(parts) - 1)][0]
            t0 = time.perf_counter()
            step(i)
            rounds[name].append(time.perf_counter() - t0)
    reference = np.array(rounds["nanogpt"])

    def trimmed_mean(x):
        x = np.sort(x)
        return x[len(x) // 10 : len(x) - len(x) // 10].mean()

    base = np.median(reference)
    return {name: 1000 * float(base * trimmed_mean(np.array(r) / reference)) for name, r in rounds.items()}


def val_loss(out_dir):
    model, ckpt, meta = load_model(out_dir, "latest", "cpu")
    tokens = open_tokens(os.path.join(dataset, "val.bin"), meta, 64)
    byte_lengths = get_tokenizer(meta["tokenizer"], out_dir).byte_lengths()
    return evaluate(model, tokens, byte_lengths, 64, block_size=ckpt["config"]["block_size"])["loss"]


def reference_val_loss(model, data_dir, vocab):
    """The loss over every non-overlapping 64-token block of val.bin, of a reference model over its vocabulary."""
    val = np.fromfile(os.path.join(data_dir, "val.bin"), dtype=np.uint16)
    val = val[val < vocab]  # nanoGPT's char val split has no end-of-text
    n = (len(val) - 1) // 64
    x = torch.from_numpy(val[: n * 64].astype(np.int64)).view(n, 64)
    y = torch.from_numpy(val[1 : n * 64 + 1].astype(np.int64)).view(n, 64)
    model.eval()
    with torch.no_grad():
        return sum(model(x[i : i + 64], y[i : i + 64])[1].item() * len(x[i : i + 64]) for i in range(0, n, 64)) / n


def run(job):
    """Train one run to its end in this process (a worker of the pool) and return its val loss."""
    name, kind, spec, iters, seed, n_threads = job
    torch.set_num_threads(n_threads)
    data_dir, meta = find_dataset(dataset)
    t0 = time.time()
    if kind == "nanogpt":
        model, _ = nanogpt_run(data_dir, meta, iters, seed=seed)
        loss = reference_val_loss(model, data_dir, nanogpt_vocab(meta))
    elif kind == "nanochat":
        model, _ = nanochat_run(data_dir, meta, iters, spec, seed=seed)
        loss = reference_val_loss(model, data_dir, meta["vocab_size"])
    else:
        out = os.path.join(out_root, f"{name}_s{seed}" + (f"_{fraction}" if fraction != 1 else ""))
        cmd = [sys.executable, os.path.join(REPO, "train.py"), config, f"--dataset={dataset}", f"--out_dir={out}",
               *spec, f"--max_iters={iters}", f"--lr_decay_iters={iters}", f"--eval_interval={iters}",
               "--always_save_checkpoint=True", f"--seed={seed}", "--log_interval=50"]
        subprocess.run(["rm", "-rf", out])
        env = {**os.environ, "OMP_NUM_THREADS": str(n_threads)}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode:
            raise SystemExit(f"{name}: " + proc.stdout[-2000:] + proc.stderr[-2000:])
        loss = val_loss(out)
    return name, seed, round(loss, 4), round(time.time() - t0, 1)


if __name__ == "__main__":
    data_dir, meta = find_dataset(dataset)
    runs = {}
    for item in filter(None, re.split(r",(?=[\w+-]+(?:=|,|$))", variants)):  # a comma inside a value stays
        name, _, expression = item.partition("=")
        runs[name] = variant_args(expression or name)
    settings = [s for s in nanochat.split(",") if s]
    print(f"timing: {timing_steps} steps of each, one of each in turn ({torch.get_num_threads()} threads)")
    known = {}  # --times_file: {signature: step time / nanoGPT's}, from an earlier, quieter timing
    if times_file and os.path.exists(times_file):
        with open(times_file) as f:
            known = json.load(f)
    fns = {"nanogpt": [(nanogpt_run(data_dir, meta, reference_iters, timed=True), 1.0)]}
    signature = {}  # what a step's time depends on: variants that differ in rates, schedule or seed share a timing
    for s in settings:
        signature[f"nanochat {s}"] = f"nanochat {s}"
        if f"nanochat {s}" not in known:
            fns[f"nanochat {s}"] = [(nanochat_run(data_dir, meta, reference_iters, s, timed=True), 1.0)]
    for name, args in runs.items():
        cfg = train_config(args)
        timed = {k: cfg[k] for k in TIMED_KEYS} | ({"muon_normuon": True} if cfg["muon_normuon"] else {})
        key = json.dumps(timed | pick_model_args(cfg["model"], cfg), sort_keys=True)
        if key not in [k for n, k in signature.items() if n in fns] and key not in known:
            fns[name] = our_step(args, data_dir, meta)
        signature[name] = key
    times = ms_per_iter(fns)
    for name, key in signature.items():
        if key in known:
            times[name] = known[key] * times["nanogpt"]
        else:
            times[name] = times[next(n for n, k in signature.items() if k == key and n in fns)]
            known[key] = times[name] / times["nanogpt"]
    if times_file:
        with open(times_file, "w") as f:
            json.dump(known, f, indent=1)
    ratio = {name: t / times["nanogpt"] for name, t in times.items()}
    tokens = {"nanogpt": 12 * 64, **{f"nanochat {s}": int(s.split(":")[1]) * 64 for s in settings}}
    for name, args in runs.items():
        cfg = train_config(args)
        tokens[name] = cfg["batch_size"] * cfg["block_size"] * cfg["gradient_accumulation_steps"]
    budget = fraction * reference_iters * (times["nanogpt"] if equal == "time" else 12 * 64)
    iters = {name: max(1, round(budget / (times[name] if equal == "time" else tokens[name]))) for name in times}
    for name in times:
        print(f"  {name:<16} {times[name]:7.2f} ms/iter, {ratio[name]:.3f}x nanoGPT's, {tokens[name]:,} tokens/iter:"
              f" {iters[name]:,} iterations")
    if not train:
        raise SystemExit(0)
    n_threads = max(1, (threads or torch.get_num_threads()) // jobs)
    job_list = []
    for seed in map(int, filter(None, seeds.split(","))):  # "1338,": one seed (a bare number is not text)
        if reference_run:
            job_list.append(("nanogpt", "nanogpt", None, iters["nanogpt"], seed, n_threads))
        job_list += [(f"nanochat {s}", "nanochat", s, iters[f"nanochat {s}"], seed, n_threads) for s in settings]
        job_list += [(name, "ours", args, iters[name], seed, n_threads) for name, args in runs.items()]
    results = {}
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for name, seed, loss, seconds in pool.map(run, job_list):
            r = results.setdefault(name, {"iters": iters[name], "ratio": round(ratio[name], 3),
                                          "tokens": iters[name] * tokens[name], "val_loss": {},
                                          "args": runs.get(name, [])})
            r["val_loss"][seed] = loss
            print(f"{name} (seed {seed}): {iters[name]} iterations ({ratio[name]:.3f}x nanoGPT's time each), val loss "
                  f"{loss:.4f}, {seconds:.0f} s", flush=True)
    print(json.dumps({"dataset": dataset, "equal": equal, "fraction": fraction, "results": results}))
