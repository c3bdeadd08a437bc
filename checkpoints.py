"""
Checkpoint files: saving them atomically with every random state training touches, loading them without running
pickled code (compile/DDP prefixes stripped), the resume fallback (ckpt.pt, then older ones), and load_model, which
rebuilds a run's model from its out_dir alone.
"""

import os
import random
import re
import shutil
from dataclasses import dataclass

import numpy as np
import torch

import hf  # imports transformers only when it converts
from dataloader import read_meta
from files import copy_atomic, first_line, write_atomic, write_json


def get_rng_state():
    """Every random number generator training touches, as tensors and plain lists (weights_only-loadable)."""
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_seed(seed):
    """Seed every random number generator training touches."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_rng_state(state):
    random.setstate(tuple(state["python"][:1]) + (tuple(state["python"][1]),) + tuple(state["python"][2:]))
    np.random.set_state((state["numpy"][0], np.array(state["numpy"][1], dtype=np.uint32), *state["numpy"][2:]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_checkpoint(checkpoint, path):
    write_atomic(path, lambda tmp: torch.save(checkpoint, tmp))


CHECKPOINT_KEYS = ("model_type", "model_args", "model", "iter_num", "config")  # what sampling needs
RESUME_KEYS = CHECKPOINT_KEYS + ("optimizer", "scaler", "best_val_loss", "train_loader", "rng", "meta")


def load_checkpoint(path, device="cpu", keys=CHECKPOINT_KEYS):
    """Open a checkpoint without running pickled code (weights_only) and strip compile/DDP key prefixes. A file
    that can't be read (truncated by a killed copy, not a checkpoint) or lacks keys is a ValueError naming it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path}; train first (python train.py --out_dir=...)")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError... for a damaged file
        raise ValueError(f"{path} is damaged or not a checkpoint ({first_line(e)})") from None
    missing = [k for k in keys if not isinstance(checkpoint, dict) or k not in checkpoint]
    if missing:
        raise ValueError(f"{path} is incomplete or not a checkpoint of this project (no {', '.join(missing)})")
    checkpoint["model"] = {strip_prefixes(k): v for k, v in checkpoint["model"].items()}
    return checkpoint


def checkpoint_files(out_dir):
    """A run folder's checkpoints in the order resume tries them: ckpt.pt, ckpt_<iter>.pt newest first, best.pt."""
    names = os.listdir(out_dir) if os.path.isdir(out_dir) else []
    numbered = sorted((f for f in names if re.fullmatch(r"ckpt_\d+\.pt", f)), key=lambda f: -int(f[5:-3]))
    return [f for f in ("ckpt.pt", *numbered, "best.pt") if f in names]


def load_resume_checkpoint(out_dir, device="cpu"):
    """For --init_from=resume: ckpt.pt, or, when it can't be loaded, the newest ckpt_<iter>.pt that can, then
    best.pt. Says which and why in one line. A damaged file stays where it is: the next save replaces ckpt.pt
    atomically, so it is overwritten only by a good checkpoint."""
    problems = []
    for path in [os.path.join(out_dir, name) for name in checkpoint_files(out_dir)]:
        try:
            checkpoint = load_checkpoint(path, device, RESUME_KEYS)
        except ValueError as e:
            problems.append(str(e))
            continue
        if problems:
            print(f"warning: {'; '.join(problems)}: resuming from {path} instead")
        return checkpoint, path
    if problems:
        raise ValueError(f"no checkpoint in {out_dir} can be resumed: {'; '.join(problems)}")
    raise FileNotFoundError(f"no checkpoint to resume in {out_dir}: train from scratch first (--init_from=scratch)")


def strip_prefixes(key):
    while key.startswith(("_orig_mod.", "module.")):  # torch.compile and DDP wrappers, in either order
        key = key.split(".", 1)[1]
    return key


def load_state(model, state, path):
    """Load a state dict into model; one that doesn't fit (a checkpoint from elsewhere) is a one-line ValueError."""
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        lines = str(e).strip().splitlines()
        raise ValueError(f"{path} does not match its model_args ({lines[min(1, len(lines) - 1)].strip()})") from None


def load_model(out_dir, checkpoint="latest", device="cpu", quantize=""):
    """The model a run saved, in eval mode, with its checkpoint dict and meta.json: all from out_dir alone.
    checkpoint is 'latest' (ckpt.pt), 'best' (best.pt) or a path; quantize='int8' gives its matrices int8 weights
    (quantize.py: CPU only, for inference)."""
    from model import create_model
    from quantize import check_quantize, quantize_model

    check_quantize(quantize, device)  # before the load: a bad value costs nothing
    name = {"latest": "ckpt.pt", "best": "best.pt"}.get(checkpoint)
    path = os.path.join(out_dir, name) if name else checkpoint
    try:
        ckpt = load_checkpoint(path, device)
    except ValueError as e:  # name the run's other checkpoints
        others = [f for f in checkpoint_files(out_dir) if os.path.join(out_dir, f) != path]
        names = {"best.pt": "best", "ckpt.pt": "latest"}
        hint = " or ".join(f"--checkpoint={names.get(f, os.path.join(out_dir, f))}" for f in others)
        raise ValueError(f"{e}; {'try ' + hint if hint else 'this run has no other checkpoint'}") from None
    ckpt["path"] = path
    meta = read_meta(os.path.join(out_dir, "meta.json"))
    if ckpt["model_args"].get("vocab_size") != meta["vocab_size"]:
        raise ValueError(
            f"{path} was trained with vocab_size {ckpt['model_args'].get('vocab_size')} but {out_dir}/meta.json's "
            f"tokenizer {meta['tokenizer']!r} has {meta['vocab_size']}; the checkpoint and meta.json come from "
            "different runs"
        )
    model = create_model(ckpt["model_type"], ckpt["model_args"])
    load_state(model, ckpt["model"], path)
    return quantize_model(model.eval().to(device), quantize, device), ckpt, meta


# -----------------------------------------------------------------------------
# what training starts from


@dataclass
class Start:
    """What train.py starts from: the model's type and fields, the weights to load (None: a fresh init), and for a
    resumed run its checkpoint (optimizer, data order, RNG states) and where it stopped."""

    model_type: str
    model_args: dict
    weights: dict = None  # a state dict in our GPT's or BDH's names
    source: str = ""  # where the weights come from: a checkpoint's path, or init_from's name
    checkpoint: dict = None  # --init_from=resume: the whole checkpoint
    iter_num: int = 0
    best_val_loss: float = float("inf")
    train_seconds: float = 0.0  # seconds the run trained before (the time schedule's clock)


# model fields that may change on resume: they change how the model trains, not what it is
RESUMABLE = ("dropout", "gradient_checkpointing")


def resolve_start(init_from, out_dir, model_type, model_args, config, defaults, meta, device, resumable=RESUMABLE):
    """Where training starts, checked before any work. 'scratch': out_dir must hold no checkpoint (nothing is ever
    overwritten). 'resume': the architecture comes from the checkpoint; a setting the user asks to change must agree
    with it, except the resumable fields (they change how the model trains, not what it is); changed training
    settings are printed. 'gpt2'...|PATH: the architecture comes from the transformers model; dropout and a
    shorter block_size come from ours. Returns a Start."""
    if init_from not in ("scratch", "resume", *hf.GPT2_NAMES) and not os.path.isdir(init_from):
        raise ValueError(f"--init_from={init_from!r}; use scratch, resume, {', '.join(hf.GPT2_NAMES)} or the folder of "
                         "a transformers GPT-2 or Llama model")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"--out_dir={out_dir} is a file, not a folder; choose another --out_dir")
    dataset = config.get("dataset")
    if init_from == "resume":
        checkpoint, path = load_resume_checkpoint(out_dir, device)
        if checkpoint["meta"]["tokenizer"] != meta["tokenizer"]:
            raise ValueError(f"{path} was trained on tokenizer {checkpoint['meta']['tokenizer']!r}, dataset "
                             f"{dataset!r} has {meta['tokenizer']!r}; resume with the run's own dataset")
        if model_type != defaults["model"] and model_type != checkpoint["model_type"]:
            raise ValueError(f"{path} holds a {checkpoint['model_type']} model, not {model_type}: drop --model or "
                             "use a new --out_dir")
        for k, v in checkpoint["model_args"].items():
            if k == "vocab_size" and v != model_args[k]:
                raise ValueError(f"{path} has vocab_size {v} but dataset {dataset!r} has {model_args[k]}")
            user_set = k in config and config[k] != defaults[k]
            if user_set and k not in resumable and model_args[k] != v:
                raise ValueError(f"{path} was trained with {k}={v!r}, this run asks for {k}={model_args[k]!r}; the "
                                 "architecture can't change on resume: drop the override or use a new --out_dir")
        args = {**checkpoint["model_args"], **{k: model_args[k] for k in resumable if k in model_args}}
        for k, v in checkpoint["config"].items():  # training settings may change on resume: say which did
            if k in config and k not in args and k != "init_from" and config[k] != v:
                print(f"resume: {k} changed from {v!r} to {config[k]!r}")
        print(f"resuming from {path} at iteration {checkpoint['iter_num']} (best val loss "
              f"{checkpoint['best_val_loss']:.4f})")
        return Start(checkpoint["model_type"], args, checkpoint["model"], path, checkpoint, checkpoint["iter_num"],
                     checkpoint["best_val_loss"], checkpoint.get("train_seconds", 0.0))
    if saved := sorted(checkpoint_files(out_dir)):
        raise ValueError(f"{out_dir} holds {', '.join(saved)}; continue with --init_from=resume, or train from scratch "
                         "into another --out_dir (nothing was overwritten)")
    if init_from == "scratch":
        return Start(model_type, model_args)
    if model_type != "gpt":  # before the download
        raise ValueError(f"--init_from={init_from} is a GPT; drop --model={model_type}")
    pretrained_args, weights = hf.from_hf(hf.load_hf(init_from))
    if pretrained_args["vocab_size"] != meta["vocab_size"]:
        raise ValueError(f"--init_from={init_from} has vocab_size {pretrained_args['vocab_size']}, dataset {dataset!r} "
                         f"(tokenizer {meta['tokenizer']!r}) has {meta['vocab_size']}: prepare the data with the "
                         "model's tokenizer (for GPT-2: --tokenizer=gpt2)")
    block_size = model_args["block_size"]
    if block_size > pretrained_args["block_size"]:
        raise ValueError(f"--block_size={block_size} is longer than {init_from}'s {pretrained_args['block_size']} "
                         "positions; use at most that")
    if "wpe.weight" in weights:
        weights["wpe.weight"] = weights["wpe.weight"][:block_size]  # the position table, cropped
    print(f"starting from {init_from}")
    return Start("gpt", {**pretrained_args, "block_size": block_size, **{k: model_args[k] for k in resumable}},
                 weights, init_from)


def restore_training(start, optimizers, scaler, loader, rank, world_size, config):
    """A resumed run's optimizer, loss-scaler, data-order and RNG states, loaded in place. Returns False where this
    process can't continue its data stream (the checkpoint had another process count): the caller starts a new one,
    never a replay of batches already seen. A weights-only checkpoint (merge.py's) leaves all as it is."""
    checkpoint, path = start.checkpoint, start.source
    if checkpoint["optimizer"] is None:
        print(f"{path} holds weights only: a fresh optimizer, data order from --seed={config['seed']}")
        return True
    saved = checkpoint["optimizer"] if isinstance(checkpoint["optimizer"], list) else [checkpoint["optimizer"]]
    if len(saved) != len(optimizers):
        raise ValueError(f"{path} was trained with --optimizer={checkpoint['config'].get('optimizer', 'adamw')}, "
                         f"this run asks for {config['optimizer']}: its state can't carry over; resume with the run's "
                         "own")
    for opt, state in zip(optimizers, saved):
        opt.load_state_dict(state)
    scaler.load_state_dict(checkpoint["scaler"])
    if len(checkpoint["train_loader"]) != world_size:  # one data stream and RNG state per process
        print(f"warning: the checkpoint has {len(checkpoint['train_loader'])} data streams, this run {world_size}: "
              "data order and dropout continue from new seeds")
        return False
    loader.load_state_dict(checkpoint["train_loader"][rank])
    set_rng_state(checkpoint["rng"][rank])
    return True


def keep_newest(out_dir, iter_num, keep):
    """Copy ckpt.pt to ckpt_<iter_num>.pt and delete all but the newest keep of those."""
    copy_atomic(os.path.join(out_dir, "ckpt.pt"), os.path.join(out_dir, f"ckpt_{iter_num}.pt"))
    numbered = [f for f in checkpoint_files(out_dir) if f.startswith("ckpt_")]  # newest first
    for f in numbered[keep:]:
        os.remove(os.path.join(out_dir, f))


def start_run_folder(out_dir, config, meta, data_dir):
    """out_dir with config.json, and meta.json and the tokenizer's files copied from the dataset: sample.py, eval.py
    and serve.py then need out_dir alone."""
    os.makedirs(out_dir, exist_ok=True)
    write_json(config, os.path.join(out_dir, "config.json"))
    write_json(meta, os.path.join(out_dir, "meta.json"))
    for name in meta.get("files", []):  # e.g. a trained tokenizer file stored beside the bins
        shutil.copy(os.path.join(data_dir, name), os.path.join(out_dir, name))
