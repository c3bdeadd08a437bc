"""
Train a small language model on data prepared by prepare.py.

    python train.py config/train_demo_cpu.py
    python train.py config/tinystories_4090.py --batch_size=32
    python train.py config/tinystories_4090.py --init_from=resume   # continue from out_dir/ckpt.pt
    python train.py config/finetune_shakespeare.py                   # fine-tune GPT-2 from the Hugging Face hub
    torchrun --standalone --nproc_per_node=2 train.py config/kaggle_t4x2.py

Config: the globals below are the defaults; config files and --key=value override them (configurator.py).
Writes to out_dir: ckpt.pt (latest), best.pt (best val loss), ckpt_<iter>.pt (the last keep_checkpoints),
config.json, meta.json (how to decode), log.csv. Ctrl-C, SIGTERM and max_minutes save a checkpoint and stop.
"""

import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from checkpoints import (get_rng_state, keep_newest, load_state, resolve_start, restore_training, save_checkpoint,
                         set_seed, start_run_folder)
from configurator import check_values, config_keys, configure, report_errors_in_one_line
from dataloader import (SAMPLING, BatchLoader, eval_set_paths, find_dataset, parse_block_size_schedule, plan_batch,
                        seq_len_at)
from hardware import (StopSignal, agree, autocast, compile_model, device_peak_flops, end_process_group, gather,
                      init_process_group, out_of_memory_hint, peak_memory_mb, processes, resolve_device)
from model import create_model, model_config, pick_model_args
from optim import progress_at, schedule
from run_log import RunLog

# -----------------------------------------------------------------------------
# config defaults
# I/O
out_dir = "out"
init_from = "scratch"  # 'scratch' (out_dir must hold no checkpoint), 'resume' (out_dir/ckpt.pt), or a transformers
# model: 'gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl' (from the hub) or a local folder
eval_interval = 250  # save ckpt.pt, then evaluate (and save best.pt when val improves), every this many iterations
eval_iters = 20  # batches per eval; the same batches every time, so evals compare
eval_sets = "val"  # comma-separated sets evaluated at every eval: 'val' (the dataset's), or paths to other token files
# of the same tokenizer (data/c4/val.bin); the first is val_loss (best.pt, early stopping), each other a log column
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
batch_size = 32  # sequences per micro-step and process (fewer where several processes share a small step)
block_size = 256
gradient_accumulation_steps = 1  # micro-steps per optimizer step, as on one process
total_batch_size = 0  # tokens per step, all processes together (the same on 1 process or K); 0: the product above
sampling = "random"  # training windows: 'random', 'epoch' (each once per epoch) or 'aligned' (see BatchLoader)
block_size_schedule = ""  # shorter sequences first: "128:0.2,256:0.5" is 128 tokens for 20% of the schedule, 256
# until 50%, then block_size, in more sequences per batch (the same tokens per step)
# model: the fields of model.GPTConfig / BDHConfig of the same name (vocab_size comes from the data)
model = "gpt"  # 'gpt' or 'bdh'
n_layer = 6
n_head = 6
n_embd = 384
dropout = 0.0
bias = True  # gpt
rope = False  # gpt: rotary position embeddings instead of the learned position table
norm = "layernorm"  # gpt: 'layernorm' or 'rmsnorm'
mlp = "gelu"  # gpt: 'gelu', 'gelu_tanh' (GPT-2's), 'swiglu' (hidden ~8/3 n_embd: gelu's weights) or 'relu2'
qk_norm = False  # gpt: queries and keys at unit RMS per head
tie_embeddings = True  # gpt: the head is the token table's transpose; False: a head of its own
zero_init = False  # gpt: projections into the residual stream start at 0 (each block the identity)
logit_softcap = 0.0  # gpt: > 0 squashes logits into (-cap, cap) as cap * tanh(logits / cap)
x0_skip = False  # gpt: each layer's input is a_i * x + b_i * x0 (learned scalars, x0 the embedding)
value_embeds = False  # gpt: every other layer adds a token embedding of its own to its values
n_kv_head = 0  # gpt: key/value heads for grouped-query attention; 0: n_head
embedding_rank = 0  # gpt, bdh: > 0 factorizes the token table (and head) through this rank
mlp_internal_dim_multiplier = 128  # bdh: N = multiplier * n_embd / n_head neurons per head
gradient_checkpointing = False  # recompute activations in backward: less memory, about a third more compute
# optimizer
optimizer = "adamw"  # 'adamw', or 'muon': Muon for the hidden matrices, AdamW for the rest (optim.py)
learning_rate = 6e-4  # AdamW's, and the schedule's peak (each group's rate follows it in proportion)
embedding_lr = 0.0  # AdamW's for the token tables (0: learning_rate)
head_lr = 0.0  # ... for an untied head
scalar_lr = 0.0  # ... for gains, biases and scalars
muon_learning_rate = 0.02  # muon: the hidden matrices'
muon_momentum = 0.95
muon_momentum_warmup = 0  # muon: iterations over which its momentum rises from 0.85 to muon_momentum
muon_ns_steps = 5  # muon: Newton-Schulz iterations per step
muon_normuon = False  # muon: NorMuon's step per row, from a running mean square of the update (nanochat's Muon)
muon_polar_express = False  # muon: Polar Express's coefficient per Newton-Schulz step (nanochat's), not Jordan's
max_iters = 5000
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0  # clip the gradient norm to this; 0 disables
# learning rate schedule: linear warmup, then decay to min_lr (the same shape for every group)
decay_lr = True
lr_schedule = "cosine"  # 'cosine', or 'trapezoid': constant, then linear decay over the last warmdown_fraction
warmdown_fraction = 0.5
lr_schedule_over = "iters"  # 'iters': over lr_decay_iters; 'time': over max_minutes of training (resumes included)
warmup_iters = 100
lr_decay_iters = None  # None: max_iters
min_lr = 6e-5
# system
device = "auto"  # 'auto', 'cpu', 'cuda', 'cuda:1', 'mps'
dtype = "auto"  # 'auto', 'float32', 'bfloat16', 'float16'
compile = "auto"  # 'auto', True, False
peak_flops = 0.0  # the device's dense peak FLOP/s for MFU; 0: from the table in hardware.py by GPU name
seed = 1337
# -----------------------------------------------------------------------------
report_errors_in_one_line()
defaults = {k: globals()[k] for k in config_keys(globals())}
config = configure(globals())
check_values(config, positive=("batch_size", "block_size", "gradient_accumulation_steps", "eval_interval",
                               "eval_iters", "log_interval", "max_skipped_steps"),
             non_negative=("total_batch_size", "max_iters", "learning_rate", "min_lr", "warmup_iters",
                           "lr_decay_iters", "weight_decay", "muon_learning_rate", "grad_clip", "keep_checkpoints",
                           "checkpoint_minutes", "max_minutes", "early_stopping_patience", "peak_flops",
                           "embedding_lr", "head_lr", "scalar_lr", "muon_momentum_warmup", "muon_ns_steps"),
             fractions=("beta1", "beta2", "muon_momentum"), at_most_one=("warmdown_fraction",),
             choices={"optimizer": ("adamw", "muon"), "sampling": SAMPLING, "lr_schedule_over": ("iters", "time"),
                      "lr_schedule": ("cosine", "trapezoid")})
if lr_schedule_over == "time" and not max_minutes:
    raise ValueError("--lr_schedule_over=time decays over the time budget: set --max_minutes too")
stages = parse_block_size_schedule(block_size_schedule, block_size)  # [(block size, until fraction), ...]
# -----------------------------------------------------------------------------

ddp, rank, local_rank, world_size = processes()  # torchrun's; a plain `python train.py` is rank 0 of 1
master_process = rank == 0  # logs and writes files; the others only compute
if not master_process:
    sys.stdout = open(os.devnull, "w")

# the batch: tokens per optimizer step are the same for any number of processes; each takes its share in micro-steps
micro_steps, micro_batch, tokens_per_iter = plan_batch(total_batch_size, gradient_accumulation_steps, batch_size,
                                                       block_size, world_size)

device, device_type, dtype, compile = resolve_device(device, dtype, compile)
if ddp:
    device = init_process_group(device, device_type, local_rank)
ctx = autocast(device_type, dtype)
set_seed(seed + rank)  # dropout differs per process

# data: meta.json and every token file checked before any work; every process draws its own stream of windows
# (random), or its own share of each epoch
data_dir, meta = find_dataset(dataset)
train_path = os.path.join(data_dir, "train.bin")
train_loader = BatchLoader(train_path, meta, micro_batch, block_size, device, seed, sampling, rank, world_size)
EVAL_SEED = 1234
eval_paths = {"train": train_path, **eval_set_paths(eval_sets, data_dir, meta)}  # the first set after train:
eval_loaders = {name: BatchLoader(path, meta, micro_batch, block_size, device, EVAL_SEED)  # val_loss
                for name, path in eval_paths.items()}
val_name, *other_sets = list(eval_paths)[1:]  # val_loss's set, and those with a loss_<name> column each

# model: its fields come from the config keys of the same name, vocab_size from the data; resume and init_from
# (checkpoints.resolve_start) say where its architecture and weights come from
model_args = {**pick_model_args(model, config), "vocab_size": meta["vocab_size"]}
model_config(model, model_args)  # a shape that can't be built stops here, in one line naming the key
start = resolve_start(init_from, out_dir, model, model_args, config, defaults, meta, device)
model, model_args, iter_num, best_val_loss = start.model_type, start.model_args, start.iter_num, start.best_val_loss
clock_at_start = start.train_seconds  # seconds this run trained before this process started: the time schedule's
raw_model = create_model(model, model_args).to(device)  # unwrapped and uncompiled: this one is saved and sampled
print(f"{model}: {raw_model.num_params() / 1e6:.2f}M parameters "
      f"({raw_model.num_params(non_embedding=True) / 1e6:.2f}M non-embedding)")
optimizers = raw_model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type, optimizer,
                                            muon_learning_rate, muon_momentum, embedding_lr, head_lr, scalar_lr,
                                            muon_ns_steps, muon_normuon, muon_polar_express)
scaler = torch.amp.GradScaler(device_type, enabled=(dtype == "float16"))  # fp16 gradients need loss scaling
if start.weights is not None:
    load_state(raw_model, start.weights, start.source)
if start.checkpoint and not restore_training(start, optimizers, scaler, train_loader, rank, world_size, config):
    train_loader = BatchLoader(train_path, meta, micro_batch, block_size, device, seed + 1000 * iter_num, sampling,
                               rank, world_size)
start = None  # free the checkpoint's memory
train_model = compile_model(raw_model) if compile else raw_model  # falls back to eager where compile fails
if ddp:
    train_model = DDP(train_model, device_ids=[local_rank] if device_type == "cuda" else None)
peak = peak_flops or device_peak_flops(device_type)

if master_process:
    start_run_folder(out_dir, config, meta, data_dir)
wandb_config = {"project": wandb_project, "config": config,
                "name": wandb_run_name or os.path.basename(os.path.abspath(out_dir))} if wandb_log else None
run_log = RunLog(out_dir, init_from == "resume", tensorboard_log, wandb_config, enabled=master_process,
                 extra_columns=[f"loss_{name}" for name in other_sets] + raw_model.metric_names())


@torch.no_grad()
def estimate_loss():
    """Mean loss over the same eval_iters batches per eval set at every eval, shared out among the processes."""
    out = {}
    train_model.eval()
    for name, loader in eval_loaders.items():
        loader.generator.manual_seed(EVAL_SEED)  # the same batches at every eval, so evals compare
        total = torch.zeros((), device=device)
        for k in range(eval_iters):
            x, y = loader.next_batch()
            if k % world_size == rank:
                with ctx:
                    total += train_model(x, y)[1].float()
        if ddp:
            dist.all_reduce(total)
        out[name] = total.item() / eval_iters
    train_model.train()
    return out


def save(name, again=False):
    """Save a checkpoint; ckpt.pt only once per iteration unless again (best_val_loss changed since). Every process
    takes part: their data streams and RNG states are gathered. The master writes."""
    global last_save_iter, last_save_time
    if name == "ckpt.pt" and iter_num == last_save_iter and not again:
        return
    states = gather(ddp, world_size, (train_loader.state_dict(), get_rng_state()))  # every process's stream
    if name == "ckpt.pt":
        last_save_iter = iter_num
        last_save_time = time.time()
    if not master_process:
        return
    path = os.path.join(out_dir, name)
    save_checkpoint({"model_type": model, "model_args": model_args, "model": raw_model.state_dict(),
                     "optimizer": [opt.state_dict() for opt in optimizers], "scaler": scaler.state_dict(),
                     "iter_num": iter_num, "tokens_per_iter": tokens_per_iter, "best_val_loss": best_val_loss,
                     "train_seconds": clock, "config": config, "meta": meta,
                     "train_loader": [s[0] for s in states], "rng": [s[1] for s in states]}, path)
    if name == "ckpt.pt" and keep_checkpoints > 0:
        keep_newest(out_dir, iter_num, keep_checkpoints)


def evaluate():
    """Save ckpt.pt, evaluate, log, and save best.pt when val loss improves."""
    global best_val_loss, evals_without_improvement
    if always_save_checkpoint:
        save("ckpt.pt")  # before eval: an error during eval must not lose the training since the last save
    losses = estimate_loss()
    others = "".join(f", {name} loss {losses[name]:.4f}" for name in other_sets)
    say(f"eval {iter_num}: train loss {losses['train']:.4f}, {val_name} loss {losses[val_name]:.4f}{others}")
    run_log.write(iter_num, val_loss=losses[val_name], **{f"loss_{n}": losses[n] for n in other_sets})
    if losses[val_name] >= best_val_loss:
        evals_without_improvement += 1
        return
    best_val_loss = losses[val_name]
    evals_without_improvement = 0
    if iter_num > start_iter:
        save("best.pt")
        save("ckpt.pt", again=True)  # written before the eval, with the old best_val_loss


@dataclass
class Stop:
    """Why training stops: the reason printed, whether to save ckpt.pt first, whether it is an error (exit 1)."""

    reason: str
    save: bool = False
    error: bool = False


def why_stop(signalled, over_budget):
    """The one place that decides whether training stops here, and why; None: go on."""
    if signalled:
        return Stop(f"stopped by {stop_signal.name or 'a signal'}", save=True)
    if over_budget:
        return Stop(f"time budget of {max_minutes} min", save=True)
    if eval_only:
        return Stop("evaluated")
    if iter_num >= max_iters:
        return Stop("done")
    if early_stopping_patience and evals_without_improvement >= early_stopping_patience:
        return Stop(f"early stopping: no better val loss in {evals_without_improvement} evals")
    if skipped_in_a_row >= max_skipped_steps:
        # the skipped steps left the weights alone: the last checkpoint is still good
        return Stop(f"{skipped_in_a_row} non-finite steps in a row: lower --learning_rate, try --dtype=float32, "
                    "or check the data", error=True)
    return None


def report(loss, lr, grad_norm, dt, T):
    """One log row, and a progress line: a tqdm bar's postfix on a terminal, a plain line elsewhere."""
    tokens_per_sec = tokens_per_iter / dt
    row = {"loss": loss, "lr": lr, "tokens_per_sec": round(tokens_per_sec, 1), "grad_norm": grad_norm,
           "peak_mem_mb": round(peak_memory_mb(device_type), 1), "seq_len": T,
           "tokens": iter_num * tokens_per_iter, "epoch": round(train_loader.epochs(), 4)}  # epoch: this process's
    if peak:
        row["mfu"] = raw_model.estimate_mfu(tokens_per_iter / world_size, dt, peak, T)
        speed = f"mfu {100 * row['mfu']:.1f}%"
    else:
        speed = f"{raw_model.flops_per_token(T) * tokens_per_sec / 1e12:.3f} TFLOP/s"
    row.update({k: round(v.item(), 4) for k, v in raw_model.metrics().items()})  # BDH: active neurons
    if "x_active" in row:
        speed += f", active x {100 * row['x_active']:.1f}% y {100 * row['y_active']:.1f}%"
    run_log.write(iter_num, **row)
    if progress:
        progress.set_postfix_str(f"loss {loss:.4f}, lr {lr:.1e}, {tokens_per_sec:,.0f} tok/s, {speed}")
        return
    scale = f", loss scale {scaler.get_scale():.0f}" if dtype == "float16" else ""
    print(f"iter {iter_num}/{max_iters} ({100 * iter_num / max_iters:.0f}%): loss {loss:.4f}, lr {lr:.2e}, "
          f"{1000 * dt:.1f} ms/iter, {tokens_per_sec:,.0f} tok/s, {speed}, {row['peak_mem_mb']:,.0f} MB{scale}, "
          f"eta {(max_iters - iter_num) * dt / 60:.1f} min", flush=True)


stop_signal = StopSignal()  # Ctrl-C or SIGTERM: finish the iteration, save, stop

# -----------------------------------------------------------------------------
# the training loop
progress = None
if master_process and sys.stdout.isatty():  # a live bar on a terminal; plain lines in CI logs and notebooks
    from tqdm import tqdm

    progress = tqdm(total=max_iters, initial=iter_num, dynamic_ncols=True)
say = progress.write if progress else print
start_iter = iter_num
start_time = time.time()
last_save_iter = iter_num  # a checkpoint of this iteration exists (resume), or there is nothing to save (scratch)
last_save_time = start_time
evals_without_improvement = 0
skipped_in_a_row = 0
last_T = block_size
clock = clock_at_start
loss_sum = torch.zeros((), device=device)  # summed on the device: one sync per log line, not one per step
t0 = time.time()
while True:
    if iter_num % eval_interval == 0 or iter_num >= max_iters or eval_only:
        eval_start = time.time()
        evaluate()
        t0 += time.time() - eval_start  # eval and saving time is not training time
    # what each process sees on its own (a signal, its clock), agreed on in one collective
    now = time.time()
    signalled, save_due, clock = agree(ddp, device, stop_signal.name is not None,
                                       checkpoint_minutes and now - last_save_time >= 60 * checkpoint_minutes,
                                       clock_at_start + now - start_time)
    # the budget: this process's minutes, or with the time schedule the run's, resumes included
    over_budget = max_minutes and (clock if lr_schedule_over == "time" else now - start_time) >= 60 * max_minutes
    stop = why_stop(signalled, over_budget)
    if (stop and stop.save) or save_due:
        save("ckpt.pt")
    if stop:
        break

    # one optimizer step: micro_steps micro-steps, then clip and update
    lr = schedule(optimizers, iter_num, clock, config)  # every group's learning rate, Muon's momentum
    T = seq_len_at(stages, progress_at(iter_num, clock, config))
    raw_model.track_activity = (iter_num + 1) % log_interval == 0  # BDH counts active neurons for the log only
    if T != last_T:
        say(f"iteration {iter_num}: sequences of {T} tokens, {micro_batch * block_size // T} per micro-step")
        last_T = T
    with out_of_memory_hint(micro_batch, block_size):
        for micro_step in range(micro_steps):
            x, y = train_loader.next_batch()
            x, y = x.view(-1, T), y.view(-1, T)  # the curriculum: a block_size row as block_size / T shorter ones
            # in DDP, gradients are averaged across processes on the last micro-step only (forward included)
            sync = not ddp or micro_step == micro_steps - 1
            with nullcontext() if sync else train_model.no_sync():
                with ctx:
                    _, loss = train_model(x, y)
                loss = loss / micro_steps  # the sum over micro-steps is the mean over the batch
                scaler.scale(loss).backward()
            loss_sum += loss.detach()
    for opt in optimizers:
        scaler.unscale_(opt)  # clip and measure the true gradients, not the loss-scaled ones
    grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), grad_clip if grad_clip > 0 else float("inf"))
    # a step with a NaN or inf gradient would ruin the weights: skip it (in float16, GradScaler does this itself);
    # checking costs one sync per step
    if dtype != "float16" and not torch.isfinite(grad_norm):
        skipped_in_a_row += 1
        say(f"warning: non-finite loss or gradient at iteration {iter_num}: step skipped ({skipped_in_a_row} in a row)")
    else:
        skipped_in_a_row = 0
        for opt in optimizers:
            scaler.step(opt)
    scaler.update()
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    iter_num += 1

    if iter_num % log_interval == 0:
        steps = min(log_interval, iter_num - start_iter)  # since the last log line, or since a resume
        mean_loss = loss_sum.item() / steps  # .item() waits for the device: time after it
        report(mean_loss, lr, grad_norm.item(), (time.time() - t0) / steps, T)
        loss_sum.zero_()
        t0 = time.time()
    if progress:
        progress.update(1)

if progress:
    progress.close()
stop_signal.restore()  # a notebook kernel gets its own Ctrl-C back
if ddp:
    del train_model  # DDP holds the process group: let it go first (see end_process_group)
    end_process_group()
summary = f"{iter_num} iterations in {(time.time() - start_time) / 60:.1f} min, best val loss {best_val_loss:.4f}"
if stop.error:
    raise SystemExit(f"error: {stop.reason} (last good checkpoint: {os.path.join(out_dir, 'ckpt.pt')}; {summary})")
print(f"{stop.reason}: {summary}; checkpoint in {out_dir}")
