"""
Measure models' speed on this machine, one table: training tokens/s and ms/step (forward, backward, optimizer; the
median of the timed steps after warm-up, the device synchronised around each), FLOP/s on a CPU or MFU on a GPU (each
model's own flops_per_token at this length), peak memory, the memory saved for backward, and generation tokens/s
with and without the cache (GPT's KV cache, BDH's recurrent state); compile off and on where it works.

    python bench.py                                          # GPT, train.py's default shape, random tokens
    python bench.py --model=all                              # GPT and BDH (BDHConfig's shape), one table
    python bench.py --dataset=tinystories --block_size=512   # a prepared dataset's tokens and vocabulary
    python bench.py --model=bdh --attention_form=chunked --block_size=2048   # BDH with one attention form
    python bench.py --n_layer=12 --n_head=12 --n_embd=768 --block_size=1024 --batch_size=16 --json=bench.json

Model keys apply to each model whose config class (model.GPTConfig, model.BDHConfig) has that field; n_layer, n_head,
n_embd and dropout left at None take the model's own default. block_size is the training sequence length of both.
Memory: on a GPU the peak allocated during the timed steps; on a CPU the process's peak RSS so far (it only grows, so
with several models a later row includes the earlier ones). 'saved MB' is what autograd saves for backward in one
step, parameters not counted: the activations, which grow with batch and sequence length.

tests/test_bench.py holds our GPT's and BDH's steps to a plain transcription's speed (loose thresholds, with
controls), BDH's chunked form to saving its T x T scores, and its recurrent generation to one position per token. Sweeps are recipes in BENCHMARKS.md.
"""

import gc
import json as jsonlib
import os
import statistics
import time
from dataclasses import asdict

import torch

from configurator import check_values, configure, report_errors_in_one_line
from dataloader import BatchLoader, find_dataset
from hardware import autocast, device_peak_flops, peak_memory_mb, resolve_device
from model import create_model, pick_model_args

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
mlp = "gelu"  # gpt: 'gelu', 'gelu_tanh' (GPT-2's), 'swiglu' or 'relu2'
n_kv_head = 0  # gpt: key/value heads for grouped-query attention; 0: n_head
# gpt: the small-model recipe's options (model.GPTConfig), all off for GPT-2
qk_norm = False  # queries and keys at unit RMS per head
tie_embeddings = True  # False: a head of its own
zero_init = False  # projections into the residual stream start at 0
logit_softcap = 0.0  # > 0 squashes logits into (-cap, cap) as cap * tanh(logits / cap)
x0_skip = False  # each layer's input is a_i * x + b_i * x0 (learned scalars, x0 the embedding)
value_embeds = False  # every other layer adds a token embedding of its own to its values
attention_form = "auto"  # bdh: 'auto' (chunked above BDH.CHUNKED_ABOVE tokens), 'direct' or 'chunked'
chunk_size = 0  # bdh: positions per chunk of the chunked form; 0: BDH.CHUNK_SIZE
block_size = 256  # sequence length of the training steps (gpt: also its context)
vocab_size = 50257  # with --dataset: the dataset's
dataset = ""  # a prepared dataset (a folder under data/, or a path): time on its tokens; empty: random tokens
batch_size = 8
warmup_steps = 3
timed_steps = 10
generate_tokens = 64  # new tokens per generation measurement (batch 1)
peak_flops = 0.0  # the device's dense peak FLOP/s for MFU; 0: from the table in hardware.py
device = "auto"
threads = 0  # CPU threads of torch; 0: torch's default (one per core). Tiny shapes run faster on one
dtype = "auto"
compile = "auto"  # 'auto': both eager and compiled where compile works, else eager
seed = 1337
json = ""  # also write the results as JSON to this file
# -----------------------------------------------------------------------------
DEFAULT_SHAPES = {"gpt": dict(n_layer=6, n_head=6, n_embd=384), "bdh": {}}  # bdh: BDHConfig's own


def sync(device_type):
    """Wait for the GPU: its kernels run asynchronously, so a clock read without this times only their launch."""
    if device_type == "cuda":
        torch.cuda.synchronize()


def train_step(model, optimizer, x, y, scaler, dtype="float32"):
    """Seconds for one training step (forward, backward, optimizer), the device synchronised around it."""
    sync(x.device.type)
    t0 = time.perf_counter()
    with autocast(x.device.type, dtype):
        _, loss = model(x, y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    sync(x.device.type)
    return time.perf_counter() - t0


def median_step_times(steps, x, y, warmup_steps=1, timed_steps=3, dtype="float32"):
    """{name: median seconds per training step} for steps, {name: (model, optimizer, scaler)}. The models take
    their steps in turn (step 1 of each, then step 2 of each...), so load from other processes hits all alike."""
    times = {name: [] for name in steps}
    for i in range(warmup_steps + timed_steps):
        for name, (model, optimizer, scaler) in steps.items():
            dt = train_step(model, optimizer, x, y, scaler, dtype)
            if i >= warmup_steps:  # warm-up steps (compilation among them) are not timed
                times[name].append(dt)
    return {name: statistics.median(t) for name, t in times.items()}


def saved_for_backward_mb(model, x, y, dtype="float32"):
    """MB that autograd saves for backward in one forward, each storage once, parameters not counted."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast(x.device.type, dtype):
        model(x, y)
    return sum(saved.values()) / 2**20


@torch.no_grad()
def generate_tokens_per_sec(model, new_tokens, use_cache, dtype="float32"):
    """Tokens/s generating new_tokens after a one-token prompt, batch 1."""
    device = next(model.parameters()).device
    idx = torch.zeros((1, 1), dtype=torch.long, device=device)
    model.eval()
    with autocast(device.type, dtype):
        model.generate(idx, 4, use_cache=use_cache)  # warm-up
        sync(device.type)
        t0 = time.perf_counter()
        model.generate(idx, new_tokens, use_cache=use_cache)
        sync(device.type)
    model.train()
    return new_tokens / (time.perf_counter() - t0)


def print_table(results):
    print(f"{'model':<6} {'compile':<8} {'params':>10} {'tok/s':>10} {'ms/step':>9} {'TFLOP/s':>8} {'MFU':>6} "
          f"{'peak MB':>9} {'saved MB':>9} {'gen tok/s':>10} {'no cache':>9}")
    for r in results:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        print(f"{r['model']:<6} {str(r['compile']):<8} {r['params'] / 1e6:>9.2f}M {r['train_tokens_per_sec']:>10,.0f} "
              f"{r['ms_per_step']:>9.1f} {r['flops_per_sec'] / 1e12:>8.3f} {mfu:>6} {r['peak_mem_mb']:>9,.0f} "
              f"{r['saved_mb']:>9,.0f} {r['generate_tokens_per_sec']:>10.1f} "
              f"{r['generate_nocache_tokens_per_sec']:>9.1f}")


if __name__ == "__main__":
    report_errors_in_one_line()
    config = configure(globals())
    if model not in ("gpt", "bdh", "all"):
        raise ValueError(f"--model={model!r}; choose gpt, bdh or all")
    if attention_form not in ("auto", "direct", "chunked"):
        raise ValueError(f"--attention_form={attention_form!r}; choose auto, direct or chunked")
    for key in ("n_layer", "n_head", "n_embd"):
        if config[key] is not None and type(config[key]) is not int:
            raise ValueError(f"--{key}={config[key]!r} must be an integer")
    check_values(config, positive=("batch_size", "block_size", "timed_steps", "vocab_size"),
                 non_negative=("warmup_steps", "generate_tokens", "threads", "chunk_size", "peak_flops"))
    device, device_type, dtype, can_compile = resolve_device(device, dtype, compile)
    if threads:
        torch.set_num_threads(threads)
    # the batch every timed step reuses: one of the dataset's training split, whose vocabulary the models then take
    # so that its ids fit, or random tokens
    if dataset:
        folder, meta = find_dataset(dataset)
        vocab_size = config["vocab_size"] = meta["vocab_size"]
        train_bin = os.path.join(folder, "train.bin")
        x, y = BatchLoader(train_bin, meta, batch_size, block_size, device, seed).next_batch()
    else:
        g = torch.Generator().manual_seed(seed)
        x, y = torch.randint(0, vocab_size, (2, batch_size, block_size), generator=g).to(device)
    peak = peak_flops or device_peak_flops(device_type)
    compile_modes = [False, True] if can_compile and compile == "auto" else [can_compile]
    names = ["gpt", "bdh"] if model == "all" else [model]

    results = []
    for name in names:
        for use_compile in compile_modes:
            torch.manual_seed(seed)
            net = create_model(name, {**DEFAULT_SHAPES[name], **pick_model_args(name, config)}).to(device)
            if name == "bdh":
                net.track_activity = False  # as train.py's steps between log lines
                net.attention_form = attention_form
                net.chunk_size = chunk_size or net.chunk_size
            (optimizer,) = net.configure_optimizers(0.1, 6e-4, (0.9, 0.95), device_type)
            scaler = torch.amp.GradScaler(device_type, enabled=(dtype == "float16"))
            saved = saved_for_backward_mb(net, x, y, dtype)
            if device_type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            step_model = torch.compile(net) if use_compile else net
            steps = {name: (step_model, optimizer, scaler)}
            dt = median_step_times(steps, x, y, warmup_steps, timed_steps, dtype)[name]
            tokens_per_sec = batch_size * block_size / dt
            flops_per_token = net.flops_per_token(block_size)  # bdh: of the attention form that runs at block_size
            flops_per_sec = flops_per_token * tokens_per_sec
            form = ("chunked" if net.uses_chunked(block_size) else "direct") if name == "bdh" else None
            results.append({
                "model": name, "compile": use_compile, "attention_form": form,
                "model_args": asdict(net.config), "params": sum(p.numel() for p in net.parameters()),
                "non_embedding_params": net.num_params(non_embedding=True),
                "seq_len": block_size, "batch_size": batch_size,
                "train_tokens_per_sec": tokens_per_sec, "ms_per_step": 1000 * dt,
                "flops_per_token": flops_per_token, "flops_per_sec": flops_per_sec,
                "mfu": flops_per_sec / peak if peak else None,
                "peak_mem_mb": peak_memory_mb(device_type), "saved_mb": saved,
                "generate_tokens_per_sec": generate_tokens_per_sec(net, generate_tokens, True, dtype),
                "generate_nocache_tokens_per_sec": generate_tokens_per_sec(net, generate_tokens, False, dtype),
            })
            # the previous model's memory must not count in the next one's peak
            del net, step_model, optimizer, steps
            gc.collect()
            if device_type == "cuda":
                torch.cuda.empty_cache()
    print_table(results)
    if json:
        device_name = torch.cuda.get_device_name() if device_type == "cuda" else "cpu"
        report = {"device": device_name, "torch": torch.__version__, "dtype": dtype, "threads": torch.get_num_threads()}
        with open(json, "w") as f:
            jsonlib.dump({**report, "config": config, "results": results}, f, indent=2)
