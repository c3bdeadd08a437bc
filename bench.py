"""
Measure models' speed on this machine: training step tokens/s (forward, backward, optimizer), MFU on a GPU or
FLOP/s on a CPU (each model's own flops_per_token at this sequence length), memory, and generation tokens/s with and
without a cache (KV cache for GPT, the recurrent state for BDH); with compile off and on (on GPUs). Medians of timed
steps after warm-up, with the device synchronised around each one.

    python bench.py                                        # GPT, train.py's default shape, random tokens
    python bench.py --model=all                            # GPT and BDH (BDHConfig's shape), one table
    python bench.py --dataset=tinystories --block_size=512   # real tokens (and vocabulary) instead of random ones
    python bench.py --n_layer=12 --n_head=12 --n_embd=768 --block_size=1024 --batch_size=16 --json=bench.json
    python bench.py --reference=True                       # also a plain GPT-2 implementation, same shape
    python bench.py --model=bdh --bdh_check=True           # BDH's attention forms and cache, checked (see below)
    python bench.py --model=bdh --bdh_crossover=256,512,1024,2048 --n_layer=1 --batch_size=1
    python bench.py --model=all --generate_curve=1024      # time per new token as the sequence grows

Model keys apply to each model whose config class (model.GPTConfig, model.BDHConfig) has that field; n_layer, n_head,
n_embd and dropout left at None take the model's own default. block_size is the training sequence length of both.
Memory: on a GPU the peak allocated during the timed steps; on a CPU the process's peak RSS so far (it only grows, so
with several models a later row includes the earlier ones), and on every device 'saved MB', what autograd saves for
backward in one step (parameters not counted): the activations, which is what grows with batch and sequence length.

--reference=True also times a plain, separately written GPT-2 (SDPA attention, fused AdamW where available) and
exits non-zero when our training step is slower than it by more than the timing noise (--noise).

--bdh_check=True measures, instead of the table above, BDH's claims on this device (eager) and exits non-zero with
a one-line error when one fails by more than --noise: (a) at T = bdh_check_T (512) the training step with
attention_form='auto' is at least as fast as 'direct' and takes no more memory; (b) at T = bdh_check_long_T (4096) the
chunked form is faster than the direct one and takes less memory; (c) generating bdh_check_new_tokens (256) tokens
with the recurrent state is at least 10x faster than recomputing the context for each. The forms take turns, step by
step, so load from other processes hits both alike. BDHConfig's shape at T = 4096 is hours of CPU time: on a CPU
pass a smaller one (--n_layer=1 --batch_size=1). --bdh_crossover=T1,T2,... times direct against chunked at each T.
"""

import gc
import json as jsonlib
import os
import statistics
import time
from dataclasses import asdict, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

import common
from configurator import configure
from model import GPT, create_model, model_config_class

# -----------------------------------------------------------------------------
model = "gpt"  # 'gpt', 'bdh' or 'all'
# model fields; None: the model's own default (DEFAULT_SHAPES below, then its config class)
n_layer = None  # gpt 6, bdh 6
n_head = None  # gpt 6, bdh 4
n_embd = None  # gpt 384 (train.py's shape), bdh 256 (BDHConfig's)
dropout = None  # gpt 0.0, bdh 0.1
mlp_internal_dim_multiplier = 128  # bdh: N = multiplier * n_embd / n_head neurons per head
embedding_rank = 0  # gpt, bdh: > 0 factorizes the token table (and head) through this rank
gradient_checkpointing = False  # gpt, bdh
bias = True  # gpt
rope = False  # gpt
norm = "layernorm"  # gpt: or 'rmsnorm'
mlp = "gelu"  # gpt: or 'swiglu'
n_kv_head = 0  # gpt: key/value heads for grouped-query attention; 0: n_head
chunk_size = 0  # bdh: positions per chunk of the chunked attention form (not a config field); 0: BDH.CHUNK_SIZE
block_size = 256  # sequence length of the training steps (gpt: also its context)
vocab_size = 50257  # with --dataset: the dataset's
dataset = ""  # a prepared dataset (a folder under data/, or a path): time on its tokens; empty: random tokens
batch_size = 8
warmup_steps = 3
timed_steps = 10
generate_tokens = 64  # new tokens per generation measurement (batch 1)
reference = False
noise = 0.05  # with --reference or --bdh_check: how far a measured ratio may fall short before the check fails
bdh_check = False
bdh_check_T = 512
bdh_check_long_T = 4096
bdh_check_new_tokens = 256
generate_curve = 0  # N > 0: ms per new token at positions N/8, N/4, N/2 and N of one sequence, cache on and off
bdh_crossover = None  # lengths, e.g. 256,512,1024: BDH training steps of the direct and chunked forms at each
peak_flops = 0.0  # the device's dense peak FLOP/s for MFU; 0: from the table in common.py
device = "auto"
threads = 0  # CPU threads of torch; 0: torch's default (one per core). Tiny shapes run faster on one
dtype = "auto"
compile = "auto"  # 'auto': both eager and compiled where compile works, else eager
seed = 1337
json = ""  # also write the results as JSON to this file
# -----------------------------------------------------------------------------
DEFAULT_SHAPES = {"gpt": dict(n_layer=6, n_head=6, n_embd=384), "bdh": {}}  # bdh: BDHConfig's own


def model_args(name):
    """The config fields of model `name`: the config keys its config class has, where they are not None."""
    args = {f.name: config[f.name] for f in fields(model_config_class(name)) if config.get(f.name) is not None}
    return {**DEFAULT_SHAPES[name], **args}


class ReferenceGPT(nn.Module):
    """A plain GPT-2, written separately from model.py, as the yardstick for our training step."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        self.wte, self.wpe = nn.Embedding(c.padded_vocab_size, c.n_embd), nn.Embedding(c.block_size, c.n_embd)
        C = c.n_embd
        self.blocks = nn.ModuleList(nn.ModuleDict({
            "ln1": nn.LayerNorm(C), "qkv": nn.Linear(C, 3 * C), "proj": nn.Linear(C, C),
            "ln2": nn.LayerNorm(C), "fc": nn.Linear(C, 4 * C), "out": nn.Linear(4 * C, C),
        }) for _ in range(c.n_layer))
        self.ln_f, self.head = nn.LayerNorm(c.n_embd), nn.Linear(c.n_embd, c.padded_vocab_size, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, idx, targets):
        B, T = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for b in self.blocks:
            q, k, v = b["qkv"](b["ln1"](x)).view(B, T, 3, self.c.n_head, -1).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, -1)
            x = x + b["proj"](y)
            x = x + b["out"](F.gelu(b["fc"](b["ln2"](x))))
        logits = self.head(self.ln_f(x))
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.view(-1))


def build(name):
    """A fresh model 'gpt', 'bdh' or 'reference' at the configured shape, on the device, from the same seed."""
    torch.manual_seed(seed)
    args = model_args("gpt" if name == "reference" else name)
    net = ReferenceGPT(model_config_class("gpt")(**args)) if name == "reference" else create_model(name, args)
    if name == "bdh":
        net.chunk_size = chunk_size or net.chunk_size
    return net.to(device)


def sync():
    if device_type == "cuda":
        torch.cuda.synchronize()


def random_batch(T):
    """The (x, y) batch every timed step reuses: random tokens, or a batch of the dataset's training split."""
    if dataset:
        folder, meta = common.find_dataset(dataset)
        return common.BatchLoader(os.path.join(folder, "train.bin"), meta["dtype"], batch_size, T, device,
                                  seed).next_batch()
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randint(0, vocab_size, (batch_size, T), generator=g).to(device) for _ in range(2))


def train_step(step_model, optimizer, x, y, scaler):
    """Seconds for one training step (forward, backward, optimizer), the device synchronised around it."""
    sync()
    t0 = time.perf_counter()
    with common.autocast(device_type, dtype):
        _, loss = step_model(x, y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    sync()
    return time.perf_counter() - t0


def saved_for_backward_mb(net, x, y):
    """MB that autograd saves for backward in one forward, each storage once, parameters not counted."""
    params = {p.untyped_storage().data_ptr() for p in net.parameters()}
    saved = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in params:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), common.autocast(device_type, dtype):
        net(x, y)
    return sum(saved.values()) / 2**20


def time_train_step(net, optimizer, use_compile):
    """Median seconds per training step, peak memory in MB, MB saved for backward."""
    step_model = torch.compile(net) if use_compile else net
    x, y = random_batch(block_size)
    saved = saved_for_backward_mb(net, x, y)
    scaler = torch.amp.GradScaler(device_type, enabled=(dtype == "float16"))
    if device_type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    # warm-up steps (compilation among them) are not timed
    times = [train_step(step_model, optimizer, x, y, scaler) for _ in range(warmup_steps + timed_steps)]
    return statistics.median(times[warmup_steps:]), common.peak_memory_mb(device_type), saved


@torch.no_grad()
def time_generation(net, new_tokens, use_cache):
    """Tokens/s generating new_tokens after a one-token prompt, batch 1."""
    net.eval()
    idx = torch.zeros((1, 1), dtype=torch.long, device=device)
    with common.autocast(device_type, dtype):
        net.generate(idx, 4, use_cache=use_cache)  # warm-up
        sync()
        t0 = time.perf_counter()
        net.generate(idx, new_tokens, use_cache=use_cache)
        sync()
    net.train()
    return new_tokens / (time.perf_counter() - t0)


@torch.no_grad()
def time_per_token(net, length, use_cache):
    """Seconds for each new token of one sequence (batch 1) grown greedily from one token to `length` tokens."""
    net.eval()
    feed, token, times = net.start_decoding(use_cache), torch.zeros((1, 1), dtype=torch.long, device=device), []
    with common.autocast(device_type, dtype):
        for _ in range(length):
            sync()
            t0 = time.perf_counter()
            token = feed(token)[:, :vocab_size].argmax(dim=-1, keepdim=True)
            sync()
            times.append(time.perf_counter() - t0)
    net.train()
    return times


def run_generate_curve(names, length):
    """ms per token around positions length/8 ... length, the median of the 8 tokens ending there. GPT's cache is
    flat up to block_size; past it the window is prefilled again each token (see GPT.start_decoding)."""
    positions = [max(8, length // k) for k in (8, 4, 2, 1)]
    rows = []
    for name in names:
        net = build(name)
        curves = {c: time_per_token(net, length, c) for c in (True, False)}
        for p in positions:
            ms = {c: 1000 * statistics.median(curves[c][p - 8 : p]) for c in curves}
            rows.append({"model": name, "position": p, "ms_per_token_cache": ms[True],
                         "ms_per_token_nocache": ms[False]})
    print(f"{'model':<6} {'position':>8} {'ms/token, cache':>16} {'no cache':>9}")
    for r in rows:
        print(f"{r['model']:<6} {r['position']:>8} {r['ms_per_token_cache']:>16.2f} {r['ms_per_token_nocache']:>9.2f}")
    return rows


def reference_ratio(use_compile):
    """Our GPT's training throughput over the reference's, their steps taken in turn so that the load of other
    processes hits both alike (the table times one model after the other)."""
    steps = {}
    for name in ("gpt", "reference"):
        net = build(name)
        optimizer = GPT.configure_optimizers(net, 0.1, 6e-4, (0.9, 0.95), device_type)
        scaler = torch.amp.GradScaler(device_type, enabled=(dtype == "float16"))
        steps[name] = (torch.compile(net) if use_compile else net, optimizer, scaler)
    x, y = random_batch(block_size)
    times = {name: [] for name in steps}
    for i in range(warmup_steps + timed_steps):
        for name, (net, optimizer, scaler) in steps.items():
            dt = train_step(net, optimizer, x, y, scaler)
            if i >= warmup_steps:
                times[name].append(dt)
    return statistics.median(times["reference"]) / statistics.median(times["gpt"])


def bench(name, use_compile):
    """One row of the table: model name ('gpt', 'bdh' or 'reference') trained and sampled at the configured shape."""
    net = build(name)
    args = model_args("gpt" if name == "reference" else name)
    optimizer = GPT.configure_optimizers(net, 0.1, 6e-4, (0.9, 0.95), device_type)
    dt, mem, saved = time_train_step(net, optimizer, use_compile)
    tokens = batch_size * block_size
    counter = create_model("gpt", args) if name == "reference" else net
    flops_per_token = counter.flops_per_token(block_size)  # bdh: of the attention form that runs at block_size
    flops = flops_per_token * tokens / dt
    generate = {"generate_tokens_per_sec": None, "generate_nocache_tokens_per_sec": None}
    if name != "reference":
        generate = {"generate_tokens_per_sec": time_generation(net, generate_tokens, True),
                    "generate_nocache_tokens_per_sec": time_generation(net, generate_tokens, False)}
    return {"model": name, "compile": use_compile, "model_args": asdict(counter.config), "seq_len": block_size,
            "batch_size": batch_size, "attention_form": ("chunked" if net._chunked(block_size) else "direct")
            if name == "bdh" else None, "params": sum(p.numel() for p in net.parameters()),
            "train_tokens_per_sec": tokens / dt, "ms_per_step": 1000 * dt, "flops_per_token": flops_per_token,
            "flops_per_sec": flops, "mfu": flops / peak if peak else None, "peak_mem_mb": mem, "saved_mb": saved,
            **generate}


def print_table(results):
    print(f"{'model':<10} {'compile':<8} {'params':>10} {'tok/s':>10} {'ms/step':>9} {'TFLOP/s':>8} {'MFU':>6} "
          f"{'peak MB':>9} {'saved MB':>9} {'gen tok/s':>10} {'no cache':>9}")
    for r in results:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        gen, nocache = (f"{r[k]:.1f}" if r[k] else "-"
                        for k in ("generate_tokens_per_sec", "generate_nocache_tokens_per_sec"))
        print(f"{r['model']:<10} {str(r['compile']):<8} {r['params'] / 1e6:>9.2f}M "
              f"{r['train_tokens_per_sec']:>10,.0f} {r['ms_per_step']:>9.1f} {r['flops_per_sec'] / 1e12:>8.3f} "
              f"{mfu:>6} {r['peak_mem_mb']:>9,.0f} {r['saved_mb']:>9,.0f} {gen:>10} {nocache:>9}")


# -----------------------------------------------------------------------------
# BDH: its attention forms against each other, and its recurrent generation against recomputation


def compare_forms(net, optimizer, T, forms):
    """Training steps at length T of each attention form in turn: {form: {"ms_per_step", "memory_mb"}}. Memory:
    the peak allocated in the form's last step on a GPU, else the MB saved for backward."""
    x, y = random_batch(T)
    scaler = torch.amp.GradScaler(device_type, enabled=(dtype == "float16"))
    times, memory = {f: [] for f in forms}, {}
    for i in range(warmup_steps + timed_steps):
        for form in forms:
            net.attention_form = form
            if i == 0 and device_type != "cuda":
                memory[form] = saved_for_backward_mb(net, x, y)
            if device_type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            dt = train_step(net, optimizer, x, y, scaler)
            if device_type == "cuda":
                memory[form] = torch.cuda.max_memory_allocated() / 2**20
            if i >= warmup_steps:
                times[form].append(dt)
    net.attention_form = "auto"
    return {f: {"ms_per_step": 1000 * statistics.median(times[f]), "memory_mb": memory[f]} for f in forms}


def bdh_setup():
    net = build("bdh")
    optimizer = net.configure_optimizers(0.1, 6e-4, (0.9, 0.95), device_type)
    c = net.config
    shape = (f"n_layer {c.n_layer}, n_head {c.n_head}, n_embd {c.n_embd}, N {c.N}, vocab {c.vocab_size}, "
             f"dropout {c.dropout}, batch {batch_size}, chunk {net.chunk_size}, eager")
    memory = ("peak allocated (torch.cuda.max_memory_allocated)" if device_type == "cuda" else
              "MB autograd saves for backward (a CPU's peak RSS only grows, so it cannot tell forms apart)")
    print(f"BDH on {device}, {dtype}: {shape}\nmemory: {memory}")
    return net, optimizer, {"model_args": asdict(c), "batch_size": batch_size, "chunk_size": net.chunk_size,
                            "shape": shape, "memory_measure": memory}


def run_bdh_check():
    """Measure (a), (b), (c) (see the module docstring); returns the report and the failures."""
    net, optimizer, report = bdh_setup()
    rows = [{"T": bdh_check_T, "form": f, **m} for f, m in
            compare_forms(net, optimizer, bdh_check_T, ["auto", "direct"]).items()]
    rows += [{"T": bdh_check_long_T, "form": f, **m} for f, m in
             compare_forms(net, optimizer, bdh_check_long_T, ["chunked", "direct"]).items()]
    gen = {"new_tokens": bdh_check_new_tokens,
           "cache_tokens_per_sec": time_generation(net, bdh_check_new_tokens, True),
           "recompute_tokens_per_sec": time_generation(net, bdh_check_new_tokens, False)}
    print(f"{'T':>6} {'form':<8} {'ms/step':>10} {'tok/s':>10} {'memory MB':>10}")
    for r in rows:
        r["train_tokens_per_sec"] = 1000 * batch_size * r["T"] / r["ms_per_step"]
        print(f"{r['T']:>6} {r['form']:<8} {r['ms_per_step']:>10.1f} {r['train_tokens_per_sec']:>10,.0f} "
              f"{r['memory_mb']:>10,.1f}")
    print(f"generation of {bdh_check_new_tokens} new tokens, batch 1: {gen['cache_tokens_per_sec']:,.1f} tok/s with "
          f"the recurrent state, {gen['recompute_tokens_per_sec']:,.1f} tok/s recomputing the context")

    def row(T, form):
        return next(r for r in rows if r["T"] == T and r["form"] == form)

    short, long = bdh_check_T, bdh_check_long_T
    # a ratio fails when it falls short of what the claim needs by more than the noise margin
    claims = [(f"(a) T={short} step time direct/auto", "ms_per_step", short, "auto"),
              (f"(a) T={short} memory direct/auto", "memory_mb", short, "auto"),
              (f"(b) T={long} step time direct/chunked", "ms_per_step", long, "chunked"),
              (f"(b) T={long} memory direct/chunked", "memory_mb", long, "chunked")]
    ratios = [{"name": name, "ratio": row(T, "direct")[key] / row(T, form)[key], "need": 1 - noise}
              for name, key, T, form in claims]
    ratios.append({"name": f"(c) generation of {bdh_check_new_tokens} tokens cache/recompute tok/s",
                   "ratio": gen["cache_tokens_per_sec"] / gen["recompute_tokens_per_sec"], "need": 10 * (1 - noise)})
    for r in ratios:
        r["ok"] = r["ratio"] >= r["need"]
        print(f"{r['name']}: {r['ratio']:.3f} (needs >= {r['need']:.3f}) {'ok' if r['ok'] else 'FAILED'}")
    report.update({"rows": rows, "generation": gen, "ratios": ratios, "passed": all(r["ok"] for r in ratios)})
    return report, [f"{r['name']} is {r['ratio']:.3f} < {r['need']:.3f}" for r in ratios if not r["ok"]]


def run_bdh_crossover(lengths):
    net, optimizer, report = bdh_setup()
    print(f"{'T':>6} {'direct ms':>10} {'chunked ms':>11} {'direct/chunked':>15} {'direct MB':>10} {'chunked MB':>11}")
    rows = []
    for T in lengths:
        m = compare_forms(net, optimizer, T, ["direct", "chunked"])
        rows.append({"T": T, **{f"{form}_{k}": v for form in m for k, v in m[form].items()}})
        print(f"{T:>6} {m['direct']['ms_per_step']:>10.1f} {m['chunked']['ms_per_step']:>11.1f} "
              f"{m['direct']['ms_per_step'] / m['chunked']['ms_per_step']:>15.3f} "
              f"{m['direct']['memory_mb']:>10,.1f} {m['chunked']['memory_mb']:>11,.1f}", flush=True)
    return {**report, "crossover": rows}


if __name__ == "__main__":
    config_keys = [k for k, v in globals().items()
                   if not k.startswith("_") and (v is None or isinstance(v, (int, float, bool, str)))]
    config = configure(globals(), config_keys)
    if model not in ("gpt", "bdh", "all"):
        raise SystemExit(f"error: --model={model!r}; choose gpt, bdh or all")
    for key in ("n_layer", "n_head", "n_embd"):
        if config[key] is not None and (not isinstance(config[key], int) or isinstance(config[key], bool)):
            raise SystemExit(f"error: --{key}={config[key]!r} must be an integer")
    if dataset:  # the model's vocabulary is the data's
        vocab_size = config["vocab_size"] = common.find_dataset(dataset)[1]["vocab_size"]
    device, device_type, dtype, can_compile = common.resolve_device(device, dtype, compile)
    if threads:
        torch.set_num_threads(threads)
    report = {"device": torch.cuda.get_device_name() if device_type == "cuda" else "cpu", "torch": torch.__version__,
              "dtype": dtype, "threads": torch.get_num_threads(), "config": config}
    failures = []
    if bdh_check:
        check, failures = run_bdh_check()
        report["bdh_check"] = check
    elif bdh_crossover is not None:
        lengths = bdh_crossover if isinstance(bdh_crossover, (tuple, list)) else (bdh_crossover,)
        report["bdh_crossover"] = run_bdh_crossover(lengths)
    elif generate_curve:
        report["generate_curve"] = run_generate_curve(["gpt", "bdh"] if model == "all" else [model], generate_curve)
    else:
        peak = peak_flops or common.peak_flops(device_type)
        compile_modes = [False, True] if can_compile and compile == "auto" else [can_compile]
        names = {"gpt": ["gpt"], "bdh": ["bdh"], "all": ["gpt", "bdh"]}[model]
        if reference and "gpt" not in names:
            raise SystemExit("error: --reference=True compares GPTs: use --model=gpt or --model=all")
        if reference and (rope or norm != "layernorm" or mlp != "gelu" or n_kv_head or embedding_rank or not bias):
            raise SystemExit("error: the reference is a plain GPT-2: leave rope, norm, mlp, n_kv_head, embedding_rank"
                             " and bias at their defaults")
        results = []
        for name in names + (["reference"] if reference else []):
            for use_compile in compile_modes:
                results.append(bench(name, use_compile))
                gc.collect()  # the previous model's memory must not count in the next one's peak
                if device_type == "cuda":
                    torch.cuda.empty_cache()
        print_table(results)
        report["results"] = results
        if reference:
            report["reference_ratio"] = {}
            for use_compile in compile_modes:
                ratio = reference_ratio(use_compile)
                report["reference_ratio"][f"compile_{use_compile}"] = ratio
                print(f"ours / reference training throughput, steps taken in turn (compile {use_compile}): "
                      f"{ratio:.3f}")
                if ratio < 1 - noise:
                    failures.append(f"our training step is {100 * (1 - ratio):.1f}% slower than the reference")
    if json:
        with open(json, "w") as f:
            jsonlib.dump(report, f, indent=2)
    if failures:
        raise SystemExit(f"error: {'; '.join(failures)}")
