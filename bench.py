"""
Measure a model's speed on this machine: training step tokens/s (forward, backward, optimizer), MFU on a GPU or
FLOP/s on a CPU, peak memory, and generation tokens/s; with compile off and on (on GPUs). Medians of timed steps
after warm-up, with the device synchronised around each one.

    python bench.py                                        # GPT, train.py's default shape, random tokens
    python bench.py --n_layer=12 --n_head=12 --n_embd=768 --block_size=1024 --batch_size=16 --json=bench.json
    python bench.py --reference=True                       # also a plain GPT-2 implementation, same shape

--reference=True also times a plain, separately written GPT-2 (SDPA attention, fused AdamW where available) and
exits non-zero when our training step is slower than it by more than the timing noise (--noise).
"""

import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import common
from configurator import configure
from model import GPT, GPTConfig

# -----------------------------------------------------------------------------
model = "gpt"
n_layer = 6
n_head = 6
n_embd = 384
block_size = 256
batch_size = 8
vocab_size = 50257
dropout = 0.0
bias = True
warmup_steps = 3
timed_steps = 10
generate_tokens = 64  # new tokens per generation measurement (batch 1)
reference = False
noise = 0.05  # with --reference: our step may be this much slower before the check fails
peak_flops = 0.0  # the device's dense peak FLOP/s for MFU; 0: from the table in common.py
device = "auto"
dtype = "auto"
compile = "auto"  # 'auto': both eager and compiled where compile works, else eager
seed = 1337
json_path = ""  # also write the results as JSON to this file
# -----------------------------------------------------------------------------


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


def sync():
    if device_type == "cuda":
        torch.cuda.synchronize()


def time_train_step(net, optimizer, use_compile):
    """Median seconds per training step, and peak memory in MB."""
    step_model = torch.compile(net) if use_compile else net
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab_size, (batch_size, block_size), generator=g).to(device)
    y = torch.randint(0, vocab_size, (batch_size, block_size), generator=g).to(device)
    scaler = torch.amp.GradScaler(device_type, enabled=(dtype == "float16"))
    times = []
    if device_type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(warmup_steps + timed_steps):  # warm-up steps (compilation among them) are not timed
        sync()
        t0 = time.perf_counter()
        with common.autocast(device_type, dtype):
            _, loss = step_model(x, y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        sync()
        if i >= warmup_steps:
            times.append(time.perf_counter() - t0)
    return statistics.median(times), common.peak_memory_mb(device_type)


@torch.no_grad()
def time_generation(net):
    net.eval()
    idx = torch.zeros((1, 1), dtype=torch.long, device=device)
    with common.autocast(device_type, dtype):
        net.generate(idx, 4)  # warm-up
        sync()
        t0 = time.perf_counter()
        net.generate(idx, generate_tokens)
        sync()
    net.train()
    return generate_tokens / (time.perf_counter() - t0)


if __name__ == "__main__":
    config_keys = [k for k, v in globals().items() if not k.startswith("_") and isinstance(v, (int, float, bool, str))]
    config = configure(globals(), config_keys)
    device, device_type, dtype, can_compile = common.resolve_device(device, dtype, compile)
    peak = peak_flops or common.peak_flops(device_type)
    compile_modes = [False, True] if can_compile and compile == "auto" else [can_compile]
    gpt_config = GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=n_layer, n_head=n_head,
                           n_embd=n_embd, dropout=dropout, bias=bias)
    tokens = batch_size * block_size
    results = []
    candidates = [("gpt", GPT)] + ([("reference", ReferenceGPT)] if reference else [])
    for name, cls in candidates:
        for use_compile in compile_modes:
            torch.manual_seed(seed)
            net = cls(gpt_config).to(device)
            optimizer = GPT.configure_optimizers(net, 0.1, 6e-4, (0.9, 0.95), device_type)
            dt, mem = time_train_step(net, optimizer, use_compile)
            flops = GPT.flops_per_token(net if name == "gpt" else GPT(gpt_config)) * tokens / dt
            results.append({"model": name, "compile": use_compile, "params": sum(p.numel() for p in net.parameters()),
                            "train_tokens_per_sec": tokens / dt, "ms_per_step": 1000 * dt, "flops_per_sec": flops,
                            "mfu": flops / peak if peak else None, "peak_mem_mb": mem,
                            "generate_tokens_per_sec": time_generation(net) if name == "gpt" else None})
    print(f"{'model':<10} {'compile':<8} {'params':>10} {'tok/s':>10} {'ms/step':>9} {'TFLOP/s':>8} {'MFU':>6} "
          f"{'peak MB':>9} {'gen tok/s':>10}")
    for r in results:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        gen = f"{r['generate_tokens_per_sec']:.1f}" if r["generate_tokens_per_sec"] else "-"
        print(f"{r['model']:<10} {str(r['compile']):<8} {r['params'] / 1e6:>9.2f}M "
              f"{r['train_tokens_per_sec']:>10,.0f} {r['ms_per_step']:>9.1f} {r['flops_per_sec'] / 1e12:>8.3f} "
              f"{mfu:>6} {r['peak_mem_mb']:>9,.0f} {gen:>10}")
    report = {"device": torch.cuda.get_device_name() if device_type == "cuda" else "cpu", "torch": torch.__version__,
              "dtype": dtype, "config": config, "results": results}
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report, f, indent=2)
    if reference:
        for use_compile in compile_modes:
            ours, ref = (next(r for r in results if r["model"] == m and r["compile"] == use_compile)
                         for m in ("gpt", "reference"))
            ratio = ours["train_tokens_per_sec"] / ref["train_tokens_per_sec"]
            print(f"ours / reference training throughput (compile {use_compile}): {ratio:.3f}")
            if ratio < 1 - noise:
                raise SystemExit(f"error: our training step is {100 * (1 - ratio):.1f}% slower than the reference")
