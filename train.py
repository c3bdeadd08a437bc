"""
Train a small language model on data prepared by prepare.py.

    python train.py config/train_demo_cpu.py
    python train.py config/tinystories_4090.py --batch_size=32
    python train.py --out_dir=out-demo --init_from=resume        # continue from out-demo/ckpt.pt

Config: the globals below are the defaults; config files and --key=value override them (configurator.py).
Writes out_dir/ckpt.pt (latest), best.pt (best val loss), config.json, meta.json (the tokenizer) and log.csv.
"""

import math
import os
import random
import shutil
import time
from dataclasses import fields

import numpy as np
import torch

import common
from configurator import configure
from model import create_model, model_config_class

# -----------------------------------------------------------------------------
# config defaults
# I/O
out_dir = "out"
init_from = "scratch"  # 'scratch' or 'resume' (continue from out_dir/ckpt.pt)
eval_interval = 250  # evaluate, then save ckpt.pt (and best.pt when val improves), every this many iterations
eval_iters = 20  # batches per eval; the same batches every time, so evals compare
log_interval = 10
eval_only = False
always_save_checkpoint = True  # False: write ckpt.pt only when val loss improves
# data
dataset = "synthetic_stories"  # a folder under data/, or a path to one, holding train.bin, val.bin, meta.json
batch_size = 32  # sequences per micro-step
block_size = 256
gradient_accumulation_steps = 1  # micro-steps per optimizer step
# model: the fields of model.GPTConfig / BDHConfig of the same name (vocab_size comes from the data)
model = "gpt"  # 'gpt' or 'bdh'
n_layer = 6
n_head = 6
n_embd = 384
dropout = 0.0
bias = True  # gpt
rope = False  # gpt: rotary position embeddings instead of the learned position table
norm = "layernorm"  # gpt: 'layernorm' or 'rmsnorm'
mlp = "gelu"  # gpt: 'gelu' or 'swiglu' (hidden size ~8/3 n_embd, as many weights as gelu's)
n_kv_head = 0  # gpt: key/value heads for grouped-query attention; 0: n_head
embedding_rank = 0  # gpt, bdh: > 0 factorizes the token table (and head) through this rank
mlp_internal_dim_multiplier = 128  # bdh: N = multiplier * n_embd / n_head neurons per head
gradient_checkpointing = False  # recompute activations in backward: less memory, about a third more compute
# optimizer: AdamW
learning_rate = 6e-4
max_iters = 5000
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0  # clip the gradient norm to this; 0 disables
# learning rate schedule: linear warmup, then cosine decay to min_lr
decay_lr = True
warmup_iters = 100
lr_decay_iters = None  # None: max_iters
min_lr = 6e-5
# system
device = "auto"  # 'auto', 'cpu', 'cuda', 'cuda:1', 'mps'
dtype = "auto"  # 'auto', 'float32', 'bfloat16', 'float16'
compile = "auto"  # 'auto', True, False
seed = 1337
# -----------------------------------------------------------------------------
config_keys = [k for k, v in globals().items() if not k.startswith("_") and isinstance(v, (int, float, bool, str, type(None)))]
defaults = {k: globals()[k] for k in config_keys}
config = configure(globals(), config_keys)
# -----------------------------------------------------------------------------

device, device_type, dtype, compile = common.resolve_device(device, dtype, compile)
ctx = common.autocast(device_type, dtype)
torch.manual_seed(seed)
random.seed(seed)
np.random.seed(seed)
lr_decay_iters = lr_decay_iters or max_iters
tokens_per_iter = gradient_accumulation_steps * batch_size * block_size
print(f"tokens per iteration: {tokens_per_iter:,} ({gradient_accumulation_steps} x {batch_size} x {block_size})")

# data
data_dir, meta = common.find_dataset(dataset)
train_loader = common.BatchLoader(os.path.join(data_dir, "train.bin"), meta["dtype"], batch_size, block_size, device, seed)

# model: architecture fields come from the config keys of the same name, vocab_size from the data
model_args = {f.name: config[f.name] for f in fields(model_config_class(model)) if f.name in config}
model_args["vocab_size"] = meta["vocab_size"]
iter_num, best_val_loss, checkpoint = 0, float("inf"), None
if init_from == "resume":
    checkpoint = common.load_checkpoint(os.path.join(out_dir, "ckpt.pt"), device)
    if checkpoint["model_type"] != model and model != defaults["model"]:
        raise SystemExit(f"error: {out_dir}/ckpt.pt holds a {checkpoint['model_type']} model, not {model}")
    model = checkpoint["model_type"]
    for k, v in checkpoint["model_args"].items():
        changed = k in config and config[k] != defaults[k]  # set by the user, not a default
        if k == "vocab_size" and v != model_args[k]:
            raise SystemExit(f"error: {out_dir}/ckpt.pt has vocab_size {v} but dataset {dataset!r} has {model_args[k]}")
        if k != "dropout" and changed and model_args[k] != v:
            raise SystemExit(
                f"error: {out_dir}/ckpt.pt was trained with {k}={v!r}, this run asks for {k}={model_args[k]!r}; "
                "the architecture can't change on resume: drop the override or use a new --out_dir"
            )
    model_args = {**checkpoint["model_args"], "dropout": model_args.get("dropout", 0.0)}
    iter_num, best_val_loss = checkpoint["iter_num"], checkpoint["best_val_loss"]
    print(f"resuming from {out_dir}/ckpt.pt at iteration {iter_num} (best val loss {best_val_loss:.4f})")
elif init_from != "scratch":
    raise SystemExit(f"error: --init_from={init_from!r}; use 'scratch' or 'resume'")

raw_model = create_model(model, model_args).to(device)  # unwrapped and uncompiled: this one is saved
print(f"{model}: {raw_model.num_params() / 1e6:.2f}M parameters "
      f"({raw_model.num_params(non_embedding=True) / 1e6:.2f}M non-embedding)")
optimizer = raw_model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)
scaler = torch.amp.GradScaler(device_type, enabled=(dtype == "float16"))  # fp16 gradients need loss scaling
if checkpoint is not None:
    raw_model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scaler.load_state_dict(checkpoint["scaler"])
    train_loader.load_state_dict(checkpoint["train_loader"])
    torch.set_rng_state(checkpoint["rng"]["torch"].cpu())
    if device_type == "cuda" and "cuda" in checkpoint["rng"]:
        torch.cuda.set_rng_state_all([s.cpu() for s in checkpoint["rng"]["cuda"]])
    checkpoint = None  # free the memory
train_model = torch.compile(raw_model) if compile else raw_model  # what the loop calls
peak = common.peak_flops(device_type)

os.makedirs(out_dir, exist_ok=True)
common.write_json(config, os.path.join(out_dir, "config.json"))
common.write_json(meta, os.path.join(out_dir, "meta.json"))  # sample.py decodes from out_dir alone
for extra in meta.get("files", []):  # e.g. a trained tokenizer file stored beside the bins
    shutil.copy(os.path.join(data_dir, extra), os.path.join(out_dir, extra))
log_path = os.path.join(out_dir, "log.csv")
if not os.path.exists(log_path) or init_from == "scratch":
    with open(log_path, "w") as f:
        f.write("iter,loss,val_loss,lr,tokens_per_sec,mfu,elapsed_s\n")


def log_row(it, loss="", val_loss="", lr="", tokens_per_sec="", mfu=""):
    with open(log_path, "a") as f:
        f.write(f"{it},{loss},{val_loss},{lr},{tokens_per_sec},{mfu},{time.time() - start_time:.1f}\n")


@torch.no_grad()
def estimate_loss():
    """Mean loss over eval_iters batches per split; a fixed seed gives the same batches at every eval."""
    out = {}
    train_model.eval()
    for split in ("train", "val"):
        loader = common.BatchLoader(os.path.join(data_dir, f"{split}.bin"), meta["dtype"], batch_size, block_size, device, seed=1234)
        losses = torch.zeros(eval_iters)
        for k in range(eval_iters):
            x, y = loader.next_batch()
            with ctx:
                _, loss = train_model(x, y)
            losses[k] = loss.item()
        out[split] = losses.mean().item()
    train_model.train()
    return out


def get_lr(it):
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it >= lr_decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / max(1, lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


def save(name):
    ckpt = {
        "model_type": model,
        "model_args": model_args,
        "model": raw_model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "iter_num": iter_num,
        "best_val_loss": best_val_loss,
        "config": config,
        "meta": meta,
        "train_loader": train_loader.state_dict(),
        "rng": {"torch": torch.get_rng_state()}
        | ({"cuda": torch.cuda.get_rng_state_all()} if device_type == "cuda" else {}),
    }
    common.save_checkpoint(ckpt, os.path.join(out_dir, name))


# -----------------------------------------------------------------------------
# the training loop
start_time = time.time()
t0, iters_since_log = time.time(), 0
loss_sum = torch.zeros((), device=device)  # summed on the device: one sync per log line, not per step
while True:
    lr = get_lr(iter_num) if decay_lr else learning_rate
    for group in optimizer.param_groups:
        group["lr"] = lr

    if iter_num % eval_interval == 0 or iter_num >= max_iters or eval_only:
        eval_start = time.time()
        if iter_num > 0 and always_save_checkpoint:
            save("ckpt.pt")  # before eval: an error during eval must not lose the training since the last save
        losses = estimate_loss()
        print(f"eval {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
        log_row(iter_num, val_loss=f"{losses['val']:.6f}")
        if losses["val"] < best_val_loss and iter_num > 0:
            best_val_loss = losses["val"]
            save("best.pt")
            if not always_save_checkpoint:
                save("ckpt.pt")
        t0 += time.time() - eval_start  # eval and saving time is not training time
    if iter_num >= max_iters or eval_only:
        break

    for micro_step in range(gradient_accumulation_steps):
        x, y = train_loader.next_batch()
        with ctx:
            _, loss = train_model(x, y)
            loss = loss / gradient_accumulation_steps  # the sum over micro-steps is the mean over the whole batch
        scaler.scale(loss).backward()
        loss_sum += loss.detach()
    if grad_clip > 0:
        scaler.unscale_(optimizer)  # clip the true gradients, not the loss-scaled ones
        torch.nn.utils.clip_grad_norm_(raw_model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    iter_num += 1
    iters_since_log += 1

    if iter_num % log_interval == 0:
        mean_loss = loss_sum.item() / iters_since_log  # .item() waits for the device: time after it
        dt = (time.time() - t0) / iters_since_log
        tokens_per_sec = tokens_per_iter / dt
        mfu = raw_model.estimate_mfu(tokens_per_iter, dt, peak) if peak else None
        flops = f"mfu {100 * mfu:.1f}%" if mfu is not None else f"{raw_model.flops_per_token() * tokens_per_sec / 1e12:.3f} TFLOP/s"
        print(f"iter {iter_num}: loss {mean_loss:.4f}, lr {lr:.2e}, {1000 * dt:.1f} ms/iter, {tokens_per_sec:,.0f} tok/s, {flops}")
        log_row(iter_num, f"{mean_loss:.6f}", "", f"{lr:.6e}", f"{tokens_per_sec:.1f}", f"{mfu:.4f}" if mfu is not None else "")
        loss_sum.zero_()
        t0, iters_since_log = time.time(), 0
print(f"done: {iter_num} iterations in {time.time() - start_time:.1f}s, best val loss {best_val_loss:.4f}")
