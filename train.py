"""
Train a small language model on data prepared by prepare.py.

    python train.py config/train_demo_cpu.py
    python train.py config/tinystories_4090.py --batch_size=32
    python train.py config/tinystories_4090.py --init_from=resume   # continue from out_dir/ckpt.pt
    torchrun --standalone --nproc_per_node=2 train.py config/kaggle_t4x2.py

Config: the globals below are the defaults; config files and --key=value override them (configurator.py).
Writes to out_dir: ckpt.pt (latest), best.pt (best val loss), ckpt_<iter>.pt (the last keep_checkpoints),
config.json, meta.json (how to decode), log.csv. Ctrl-C, SIGTERM and max_minutes save a checkpoint and stop.
"""

import math
import os
import random
import shutil
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import fields
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import common
from configurator import configure
from model import create_model, model_config_class

# -----------------------------------------------------------------------------
# config defaults
# I/O
out_dir = "out"
init_from = "scratch"  # 'scratch' (out_dir must hold no checkpoint) or 'resume' (continue out_dir/ckpt.pt)
eval_interval = 250  # save ckpt.pt, then evaluate (and save best.pt when val improves), every this many iterations
eval_iters = 20  # batches per eval; the same batches every time, so evals compare
log_interval = 10
eval_only = False
always_save_checkpoint = True  # False: write ckpt.pt only when val loss improves
keep_checkpoints = 0  # also keep ckpt_<iter>.pt from the last this many evals
checkpoint_minutes = 20.0  # also save ckpt.pt this often, between evals (0: only at evals)
max_minutes = 0.0  # time budget: save and stop cleanly after this many minutes (0: no budget)
early_stopping_patience = 0  # stop after this many evals without a better val loss (0: never)
max_skipped_steps = 5  # stop after this many steps in a row with a non-finite loss or gradient
tensorboard_log = False  # also log to out_dir/tensorboard (needs: pip install tensorboard)
wandb_log = False  # also log to Weights & Biases (needs: pip install wandb, and a login)
wandb_project = "small-lm"
wandb_run_name = ""  # default: the out_dir name
# data
dataset = "synthetic_stories"  # a folder under data/, or a path to one, holding train.bin, val.bin, meta.json
batch_size = 32  # sequences per micro-step, per process
block_size = 256
gradient_accumulation_steps = 1  # micro-steps per optimizer step, summed over all processes
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
peak_flops = 0.0  # the device's dense peak FLOP/s for MFU; 0: from the table in common.py by GPU name
seed = 1337
# -----------------------------------------------------------------------------
config_keys = [k for k, v in globals().items()
               if not k.startswith("_") and isinstance(v, (int, float, bool, str, type(None)))]
defaults = {k: globals()[k] for k in config_keys}
config = configure(globals(), config_keys)
# -----------------------------------------------------------------------------

# processes: torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; a plain `python train.py` is rank 0 of 1
ddp = "RANK" in os.environ and "WORLD_SIZE" in os.environ
rank, local_rank, world_size = (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE")) if ddp else (0, 0, 1)
master_process = rank == 0  # logs and writes files; the others only compute
if not master_process:
    sys.stdout = open(os.devnull, "w")
device, device_type, dtype, compile = common.resolve_device(device, dtype, compile)
if ddp:
    if device_type == "cuda":
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo", timeout=timedelta(minutes=10))
    if gradient_accumulation_steps % world_size:
        raise SystemExit(f"error: gradient_accumulation_steps={gradient_accumulation_steps} must be a multiple of "
                         f"the number of processes ({world_size})")
    gradient_accumulation_steps //= world_size  # each process does its share of the micro-steps
ctx = common.autocast(device_type, dtype)
torch.manual_seed(seed + rank)  # dropout differs per process
random.seed(seed + rank)
np.random.seed(seed + rank)
lr_decay_iters = lr_decay_iters or max_iters
tokens_per_iter = gradient_accumulation_steps * world_size * batch_size * block_size
print(f"tokens per iteration: {tokens_per_iter:,} = {gradient_accumulation_steps} micro-steps x {world_size} "
      f"processes x {batch_size} sequences x {block_size} tokens")

# data: every process draws its own stream of random windows
data_dir, meta = common.find_dataset(dataset)
train_loader = common.BatchLoader(os.path.join(data_dir, "train.bin"), meta["dtype"], batch_size, block_size, device,
                                  seed + rank)

# model: architecture fields come from the config keys of the same name, vocab_size from the data
model_args = {f.name: config[f.name] for f in fields(model_config_class(model)) if f.name in config}
model_args["vocab_size"] = meta["vocab_size"]
iter_num, best_val_loss, checkpoint = 0, float("inf"), None
ckpt_path = os.path.join(out_dir, "ckpt.pt")
if init_from == "resume":
    checkpoint = common.load_checkpoint(ckpt_path, device)
    if checkpoint["model_type"] != model and model != defaults["model"]:
        raise SystemExit(f"error: {ckpt_path} holds a {checkpoint['model_type']} model, not {model}")
    model = checkpoint["model_type"]
    for k, v in checkpoint["model_args"].items():
        changed = k in config and config[k] != defaults[k]  # set by the user, not a default
        if k == "vocab_size" and v != model_args[k]:
            raise SystemExit(f"error: {ckpt_path} has vocab_size {v} but dataset {dataset!r} has {model_args[k]}")
        if k not in ("dropout", "gradient_checkpointing") and changed and model_args[k] != v:
            raise SystemExit(
                f"error: {ckpt_path} was trained with {k}={v!r}, this run asks for {k}={model_args[k]!r}; "
                "the architecture can't change on resume: drop the override or use a new --out_dir"
            )
    model_args = {**checkpoint["model_args"], **{k: model_args[k] for k in ("dropout", "gradient_checkpointing")
                                                 if k in model_args}}
    for k, v in checkpoint["config"].items():  # training settings may change on resume: say which did
        if k in config and k not in model_args and config[k] != v and k != "init_from":
            print(f"resume: {k} changed from {v!r} to {config[k]!r}")
    iter_num, best_val_loss = checkpoint["iter_num"], checkpoint["best_val_loss"]
    print(f"resuming from {ckpt_path} at iteration {iter_num} (best val loss {best_val_loss:.4f})")
elif init_from == "scratch":
    if os.path.exists(ckpt_path):
        raise SystemExit(f"error: {ckpt_path} exists; continue it with --init_from=resume, or train from scratch "
                         "into another --out_dir (nothing was overwritten)")
else:
    raise SystemExit(f"error: --init_from={init_from!r}; use 'scratch' or 'resume'")

raw_model = create_model(model, model_args).to(device)  # unwrapped and uncompiled: this one is saved and sampled
print(f"{model}: {raw_model.num_params() / 1e6:.2f}M parameters "
      f"({raw_model.num_params(non_embedding=True) / 1e6:.2f}M non-embedding)")
optimizer = raw_model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)
scaler = torch.amp.GradScaler(device_type, enabled=(dtype == "float16"))  # fp16 gradients need loss scaling
if checkpoint is not None:
    raw_model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scaler.load_state_dict(checkpoint["scaler"])
    if len(checkpoint["train_loader"]) == world_size:  # one data stream and RNG state per process
        train_loader.load_state_dict(checkpoint["train_loader"][rank])
        common.set_rng_state(checkpoint["rng"][rank])
    else:  # a new process count can't continue the old streams; fresh ones, never a replay of seen batches
        print(f"warning: the checkpoint has {len(checkpoint['train_loader'])} data streams, this run {world_size}: "
              "data order and dropout continue from new seeds")
        train_loader = common.BatchLoader(train_loader.path, meta["dtype"], batch_size, block_size, device,
                                          seed + rank + 1000 * iter_num)
    checkpoint = None  # free the memory
train_model = raw_model
if compile:
    # a compile that fails (old GPU, Triton "cannot find -lcuda") falls back to eager instead of crashing;
    # for -lcuda run `ldconfig` or set TRITON_LIBCUDA_PATH to the folder holding libcuda.so
    torch._dynamo.config.suppress_errors = True
    train_model = torch.compile(raw_model)
if ddp:
    train_model = DDP(train_model, device_ids=[local_rank] if device_type == "cuda" else None)
peak = peak_flops or common.peak_flops(device_type)

if master_process:
    os.makedirs(out_dir, exist_ok=True)
    common.write_json(config, os.path.join(out_dir, "config.json"))
    common.write_json(meta, os.path.join(out_dir, "meta.json"))  # sample.py decodes from out_dir alone
    for extra in meta.get("files", []):  # e.g. a trained tokenizer file stored beside the bins
        shutil.copy(os.path.join(data_dir, extra), os.path.join(out_dir, extra))


class MetricsLog:
    """out_dir/log.csv always (appended on resume); TensorBoard and wandb only when asked, imported only then."""

    columns = ["iter", "loss", "val_loss", "lr", "tokens_per_sec", "mfu", "grad_norm", "peak_mem_mb", "elapsed_s",
               "x_active", "y_active"]  # BDH: fractions of active neurons in x_sparse and y_sparse

    def __init__(self):
        self.path, self.start, self.tb, self.wandb = os.path.join(out_dir, "log.csv"), time.time(), None, None
        if not master_process:
            return
        if not os.path.exists(self.path) or init_from == "scratch":
            with open(self.path, "w") as f:
                f.write(",".join(self.columns) + "\n")
        if tensorboard_log:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise SystemExit("error: --tensorboard_log=True needs TensorBoard: pip install tensorboard")
            self.tb = SummaryWriter(os.path.join(out_dir, "tensorboard"))
        if wandb_log:
            try:
                import wandb
            except ImportError:
                raise SystemExit("error: --wandb_log=True needs wandb: pip install wandb (then wandb login)")
            self.wandb = wandb
            wandb.init(project=wandb_project, name=wandb_run_name or os.path.basename(os.path.abspath(out_dir)),
                       config=config, resume="allow")

    def write(self, it, **metrics):
        if not master_process:
            return
        metrics["elapsed_s"] = round(time.time() - self.start, 2)
        with open(self.path, "a") as f:  # repr keeps full precision: resumed runs compare bit for bit
            f.write(",".join([str(it)] + [repr(metrics[c]) if c in metrics else "" for c in self.columns[1:]]) + "\n")
        if self.tb:
            for k, v in metrics.items():
                self.tb.add_scalar(k, v, it)
        if self.wandb:
            self.wandb.log(metrics, step=it)


metrics_log = MetricsLog()


@torch.no_grad()
def estimate_loss():
    """Mean loss over the same eval_iters batches per split at every eval, shared out among the processes."""
    out = {}
    train_model.eval()
    for split in ("train", "val"):
        loader = common.BatchLoader(os.path.join(data_dir, f"{split}.bin"), meta["dtype"], batch_size, block_size,
                                    device, seed=1234)
        total = torch.zeros((), device=device)
        for k in range(eval_iters):
            x, y = loader.next_batch()
            if k % world_size == rank:
                with ctx:
                    total += train_model(x, y)[1].float()
        if ddp:
            dist.all_reduce(total)
        out[split] = total.item() / eval_iters
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
    """Every process takes part (their data streams and RNG states are gathered); the master writes."""
    states = [(train_loader.state_dict(), common.get_rng_state())]
    if ddp:
        states = [None] * world_size
        dist.all_gather_object(states, (train_loader.state_dict(), common.get_rng_state()))
    if not master_process:
        return
    path = os.path.join(out_dir, name)
    common.save_checkpoint({
        "model_type": model,
        "model_args": model_args,
        "model": raw_model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "iter_num": iter_num,
        "best_val_loss": best_val_loss,
        "config": config,
        "meta": meta,
        "train_loader": [s[0] for s in states],
        "rng": [s[1] for s in states],
    }, path)
    if name == "ckpt.pt" and keep_checkpoints > 0:
        common.copy_atomic(path, os.path.join(out_dir, f"ckpt_{iter_num}.pt"))
        old = sorted((f for f in os.listdir(out_dir) if f.startswith("ckpt_") and f.endswith(".pt")),
                     key=lambda f: int(f[5:-3]))
        for f in old[:-keep_checkpoints]:
            os.remove(os.path.join(out_dir, f))


def agree(*flags):
    """Decisions every process must take together (stop, save): true if any process says so."""
    if not ddp:
        return [bool(f) for f in flags]
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


stop_signal = None  # set by Ctrl-C / SIGTERM: finish the iteration, save, stop


def request_stop(signum, frame):
    global stop_signal
    if stop_signal is not None:  # a second Ctrl-C stops at once, and the usual handlers are back
        for s, handler in previous_handlers.items():
            signal.signal(s, handler)
        raise KeyboardInterrupt
    stop_signal = signal.Signals(signum).name
    print(f"\n{stop_signal}: saving a checkpoint and stopping after this iteration (press Ctrl-C again to stop now)")


previous_handlers = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}

# -----------------------------------------------------------------------------
# the training loop
progress = None
if master_process and sys.stdout.isatty():  # a live bar on a terminal; plain lines in CI logs and notebooks
    from tqdm import tqdm

    progress = tqdm(total=max_iters, initial=iter_num, dynamic_ncols=True)
say = progress.write if progress else print
start_iter, start_time, last_save = iter_num, time.time(), time.time()
evals_without_improvement, skipped_in_a_row, stop_reason = 0, 0, None
t0, iters_since_log = time.time(), 0
loss_sum = torch.zeros((), device=device)  # summed on the device: one sync per log line, not per step
while True:
    lr = get_lr(iter_num) if decay_lr else learning_rate
    for group in optimizer.param_groups:
        group["lr"] = lr

    if iter_num % eval_interval == 0 or iter_num >= max_iters or eval_only:
        eval_start = time.time()
        if iter_num > start_iter and always_save_checkpoint:
            save("ckpt.pt")  # before eval: an error during eval must not lose the training since the last save
            last_save = time.time()
        losses = estimate_loss()
        say(f"eval {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
        metrics_log.write(iter_num, val_loss=losses["val"])
        if losses["val"] < best_val_loss:
            best_val_loss, evals_without_improvement = losses["val"], 0
            if iter_num > start_iter:
                save("best.pt")
                if not always_save_checkpoint:
                    save("ckpt.pt")
        else:
            evals_without_improvement += 1
            if early_stopping_patience and evals_without_improvement >= early_stopping_patience:
                stop_reason = f"early stopping: no better val loss in {evals_without_improvement} evals"
        t0 += time.time() - eval_start  # eval and saving time is not training time
    if iter_num >= max_iters or eval_only or stop_reason:
        break

    try:
        for micro_step in range(gradient_accumulation_steps):
            # in DDP, gradients are averaged across processes only on the last micro-step (forward included)
            sync = not ddp or micro_step == gradient_accumulation_steps - 1
            with ctx, (nullcontext() if sync else train_model.no_sync()):
                x, y = train_loader.next_batch()
                _, loss = train_model(x, y)
                loss = loss / gradient_accumulation_steps  # the sum over micro-steps is the mean over the batch
                scaler.scale(loss).backward()
            loss_sum += loss.detach()
    except torch.cuda.OutOfMemoryError:
        raise SystemExit(f"error: CUDA out of memory at batch_size={batch_size}, block_size={block_size}: try a "
                         "smaller --batch_size with a larger --gradient_accumulation_steps (same tokens per step), "
                         "a smaller --block_size, or --gradient_checkpointing=True")
    scaler.unscale_(optimizer)  # clip and measure the true gradients, not the loss-scaled ones
    grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), grad_clip if grad_clip > 0 else float("inf"))
    # one sync per step to skip a step that would write NaN/inf into the weights; in float16 GradScaler does that
    if dtype != "float16" and not torch.isfinite(grad_norm):
        skipped_in_a_row += 1
        say(f"warning: non-finite loss or gradient at iteration {iter_num}: step skipped ({skipped_in_a_row} in a row)")
        if skipped_in_a_row >= max_skipped_steps:
            stop_reason = (f"error: {skipped_in_a_row} non-finite steps in a row: lower --learning_rate, try "
                           "--dtype=float32, or check the data")
    else:
        skipped_in_a_row = 0
        scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    iter_num += 1
    iters_since_log += 1

    if iter_num % log_interval == 0:
        mean_loss = loss_sum.item() / iters_since_log  # .item() waits for the device: time after it
        dt = (time.time() - t0) / iters_since_log
        tokens_per_sec = tokens_per_iter / dt
        mfu = raw_model.estimate_mfu(tokens_per_iter / world_size, dt, peak, block_size) if peak else None
        peak_mem = common.peak_memory_mb(device_type)
        # BDH's last training forward: how many neurons fire (the paper reports about 5% once trained)
        activity = {f"{k[0]}_active": round(v.item(), 4) for k, v in getattr(raw_model, "last_activity", {}).items()}
        metrics_log.write(iter_num, loss=mean_loss, lr=lr, tokens_per_sec=round(tokens_per_sec, 1),
                          grad_norm=grad_norm.item(), peak_mem_mb=round(peak_mem, 1),
                          **({"mfu": mfu} if mfu is not None else {}), **activity)
        flops = f"mfu {100 * mfu:.1f}%" if mfu is not None else \
            f"{raw_model.flops_per_token(block_size) * tokens_per_sec / 1e12:.3f} TFLOP/s"
        if activity:
            flops += f", active x {100 * activity['x_active']:.1f}% y {100 * activity['y_active']:.1f}%"
        scale = f", loss scale {scaler.get_scale():.0f}" if dtype == "float16" else ""
        if progress:
            progress.set_postfix_str(f"loss {mean_loss:.4f}, lr {lr:.1e}, {tokens_per_sec:,.0f} tok/s, {flops}")
        else:
            eta = (max_iters - iter_num) * dt
            print(f"iter {iter_num}/{max_iters} ({100 * iter_num / max_iters:.0f}%): loss {mean_loss:.4f}, "
                  f"lr {lr:.2e}, {1000 * dt:.1f} ms/iter, {tokens_per_sec:,.0f} tok/s, {flops}, "
                  f"{peak_mem:,.0f} MB{scale}, eta {eta / 60:.1f} min", flush=True)
        loss_sum.zero_()
        t0, iters_since_log = time.time(), 0
    if progress:
        progress.update(1)

    elapsed_min = (time.time() - start_time) / 60
    stop_now, budget_over, save_due = agree(stop_signal is not None, max_minutes and elapsed_min >= max_minutes,
                                            checkpoint_minutes and time.time() - last_save >= 60 * checkpoint_minutes)
    if stop_now or budget_over or save_due:
        save("ckpt.pt")
        last_save = time.time()
        if stop_now or budget_over:
            stop_reason = f"stopped by {stop_signal or 'a signal'}" if stop_now else f"time budget of {max_minutes} min"
            break
    if stop_reason:  # non-finite steps were skipped: the weights and the last checkpoint are still good
        break

if progress:
    progress.close()
for s, handler in previous_handlers.items():  # a notebook kernel gets its own Ctrl-C back
    signal.signal(s, handler)
if ddp:
    dist.destroy_process_group()
summary = f"{iter_num} iterations in {(time.time() - start_time) / 60:.1f} min, best val loss {best_val_loss:.4f}"
if stop_reason and stop_reason.startswith("error"):
    raise SystemExit(f"{stop_reason} (last good checkpoint: {ckpt_path}; {summary})")
print(f"{stop_reason or 'done'}: {summary}; checkpoint in {out_dir}")
