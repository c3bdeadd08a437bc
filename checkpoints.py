"""
Checkpoint files: saving them atomically with every random state training touches, loading them without running
pickled code (compile/DDP prefixes stripped), the resume fallback (ckpt.pt, then older ones), and load_model, which
rebuilds a run's model from its out_dir alone.
"""

import os
import random
import re

import numpy as np
import torch

from dataloader import read_meta
from files import first_line, write_atomic


def get_rng_state():
    """Every random number generator training touches, as tensors and plain lists (weights_only-loadable)."""
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


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


def load_model(out_dir, checkpoint="latest", device="cpu"):
    """The model a run saved, in eval mode, with its checkpoint dict and meta.json: all from out_dir alone.
    checkpoint is 'latest' (ckpt.pt), 'best' (best.pt) or a path."""
    from model import create_model

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
    return model.eval().to(device), ckpt, meta
