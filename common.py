"""
What the scripts share, so none of them copies the others: picking device/dtype/compile, finding prepared data,
the batch loader (the one place where targets are shifted), checkpoint files, and the training log (log.csv, which
eval.py reads back). Errors are exceptions with a one-line message; the scripts print them (configurator.py).
"""

import json
import os
import random
import shutil
import sys
import time
from contextlib import nullcontext

import numpy as np
import torch

REPO_DIR = os.path.dirname(os.path.abspath(__file__))

# dense bf16/fp16 tensor-core peak FLOP/s by device name, for MFU (first match wins, so specific names first)
PEAK_FLOPS = [
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("A100", 312e12),
    ("4090", 165e12),  # with fp32 accumulate, as PyTorch uses
    ("3090", 71e12),
    ("L4", 121e12),
    ("V100", 125e12),
    ("T4", 65e12),
    ("P100", 18.7e12),  # fp16 without tensor cores
]


def peak_flops(device_type, device_name=None):
    """The device's dense half-precision peak in FLOP/s, or None where unknown (CPU)."""
    if device_type != "cuda":
        return None
    name = device_name or torch.cuda.get_device_name()
    return next((flops for key, flops in PEAK_FLOPS if key in name), None)


# -----------------------------------------------------------------------------
# device, dtype, compile


def resolve_device(device="auto", dtype="auto", compile="auto"):
    """Turn 'auto' (or a request the hardware can't honour) into working choices; print one line saying why."""
    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    device_type = "cuda" if device.startswith("cuda") else ("mps" if device.startswith("mps") else "cpu")
    if device_type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device=cuda but no CUDA GPU is visible; use --device=cpu or --device=auto")
    why = []
    cc = torch.cuda.get_device_capability(device) if device_type == "cuda" else None
    if dtype == "auto":
        # bf16 only where the tensor cores have it (compute capability 8.0+); torch.cuda.is_bf16_supported() also
        # says yes on a T4, which emulates it slowly
        dtype = "float32" if device_type != "cuda" else ("bfloat16" if cc >= (8, 0) else "float16")
        why.append("dtype auto")
    elif dtype == "bfloat16" and device_type == "cuda" and cc < (8, 0):
        print(f"warning: this GPU (compute capability {cc[0]}.{cc[1]}) has no fast bfloat16: using float16")
        dtype = "float16"
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"--dtype={dtype!r}; use auto, float32, bfloat16 or float16")
    if compile == "auto":
        compile = device_type == "cuda" and _compile_problem(cc) is None
        why.append("compile auto")
    elif compile and device_type == "cuda" and _compile_problem(cc):
        print(f"warning: torch.compile turned off: {_compile_problem(cc)}")
        compile = False
    name = f" ({torch.cuda.get_device_name(device)}, compute capability {cc[0]}.{cc[1]})" if cc else ""
    print(f"device {device}{name}, dtype {dtype}, compile {compile}" + (f" [{', '.join(why)}]" if why else ""))
    return device, device_type, dtype, bool(compile)


def _compile_problem(cc):
    if cc < (7, 0):
        return f"Triton needs compute capability 7.0+, this GPU has {cc[0]}.{cc[1]} (e.g. P100)"
    if sys.platform == "win32":
        return "no Triton on Windows"
    try:
        import triton  # noqa: F401
    except ImportError:
        return "Triton is not installed"
    return None


def autocast(device_type, dtype):
    """Mixed precision context: a no-op in float32."""
    if dtype == "float32":
        return nullcontext()
    return torch.autocast(device_type=device_type, dtype=getattr(torch, dtype))


# -----------------------------------------------------------------------------
# prepared data


def find_dataset(dataset):
    """dataset is a folder under data/ or a path to one; returns (folder, meta dict)."""
    candidates = [dataset, os.path.join("data", dataset), os.path.join(REPO_DIR, "data", dataset)]
    for folder in candidates:
        if os.path.isfile(os.path.join(folder, "meta.json")):
            return folder, read_json(os.path.join(folder, "meta.json"))
    raise FileNotFoundError(
        f"no prepared dataset {dataset!r} (looked for data/{dataset}/meta.json); "
        f"prepare it first: python prepare.py --dataset={dataset}"
    )


def read_json(path):
    with open(path) as f:
        return json.load(f)


def write_json(obj, path):
    """Atomic: a crash mid-write leaves the previous file, never a truncated one."""
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(path + ".tmp", path)


class BatchLoader:
    """Batches of random windows from a flat token file (a uint16/uint32 memmap written by prepare.py)."""

    def __init__(self, path, dtype, batch_size, block_size, device="cpu", seed=0):
        self.path = path
        self.dtype = np.dtype(dtype)
        self.batch_size = batch_size
        self.block_size = block_size
        self.device = device
        self.generator = torch.Generator().manual_seed(seed)
        self._open()
        if len(self.data) < block_size + 1:
            raise ValueError(
                f"{path} holds {len(self.data)} tokens, fewer than block_size + 1 = {block_size + 1}; "
                "use a smaller --block_size or prepare more data"
            )

    def _open(self):
        self.data = np.memmap(self.path, dtype=self.dtype, mode="r")
        self.batches_since_open = 0

    def next_batch(self):
        # pages a memmap has read stay mapped and look like a leak that grows to the file's size (nanoGPT #287);
        # reopening every 1000 batches bounds that at no measurable cost (reopening on every batch does cost)
        if self.batches_since_open >= 1000:
            self._open()
        self.batches_since_open += 1
        T = self.block_size
        ix = torch.randint(len(self.data) - T, (self.batch_size,), generator=self.generator).tolist()
        x = torch.from_numpy(np.stack([self.data[i : i + T] for i in ix]).astype(np.int64))
        y = torch.from_numpy(np.stack([self.data[i + 1 : i + 1 + T] for i in ix]).astype(np.int64))  # THE shift
        if str(self.device).startswith("cuda"):
            return x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device), y.to(self.device)

    def state_dict(self):
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])


# -----------------------------------------------------------------------------
# checkpoints


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


def peak_memory_mb(device_type):
    """Peak memory so far: allocated tensors on a GPU, the process's resident set on a CPU."""
    if device_type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    import resource  # not on Windows, which has no CPU training worth measuring here anyway

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class RunLog:
    """Where training writes its numbers: out_dir/log.csv always (appended to on resume), TensorBoard and wandb
    when asked, each imported only then. A process other than the master writes nothing."""

    columns = ["iter", "loss", "val_loss", "lr", "tokens_per_sec", "mfu", "grad_norm", "peak_mem_mb", "elapsed_s",
               "x_active", "y_active"]  # the last two: BDH's fractions of active neurons

    def __init__(self, out_dir, append, tensorboard=False, wandb_config=None, enabled=True):
        self.path = os.path.join(out_dir, "log.csv")
        self.start = time.time()
        self.enabled = enabled
        self.tensorboard = None
        self.wandb = None
        if not enabled:
            return
        if not (append and os.path.exists(self.path)):
            with open(self.path, "w") as f:
                f.write(",".join(self.columns) + "\n")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ImportError("--tensorboard_log=True needs TensorBoard: pip install tensorboard") from None
            self.tensorboard = SummaryWriter(os.path.join(out_dir, "tensorboard"))
        if wandb_config is not None:
            try:
                import wandb
            except ImportError:
                raise ImportError("--wandb_log=True needs wandb: pip install wandb (then wandb login)") from None
            self.wandb = wandb
            wandb.init(**wandb_config, resume="allow")

    def write(self, it, **metrics):
        if not self.enabled:
            return
        metrics["elapsed_s"] = round(time.time() - self.start, 2)
        row = [str(it)] + [repr(metrics[c]) if c in metrics else "" for c in self.columns[1:]]
        with open(self.path, "a") as f:  # repr keeps full precision: resumed runs compare bit for bit
            f.write(",".join(row) + "\n")
        if self.tensorboard:
            for k, v in metrics.items():
                self.tensorboard.add_scalar(k, v, it)
        if self.wandb:
            self.wandb.log(metrics, step=it)


def copy_atomic(src, dst):
    shutil.copyfile(src, dst + ".tmp")
    os.replace(dst + ".tmp", dst)


def save_checkpoint(checkpoint, path):
    """Write to a temporary name, then rename: an interrupted save never replaces a good checkpoint."""
    torch.save(checkpoint, path + ".tmp")
    os.replace(path + ".tmp", path)


def load_checkpoint(path, device="cpu"):
    """Open a checkpoint without running pickled code (weights_only) and strip compile/DDP key prefixes."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path}; train first (python train.py --out_dir=...)")
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    checkpoint["model"] = {_strip_prefixes(k): v for k, v in checkpoint["model"].items()}
    return checkpoint


def _strip_prefixes(key):
    while key.startswith(("_orig_mod.", "module.")):  # torch.compile and DDP wrappers, in either order
        key = key.split(".", 1)[1]
    return key


def load_model(out_dir, checkpoint="latest", device="cpu"):
    """The model a run saved, in eval mode, with its checkpoint dict and meta.json: all from out_dir alone.
    checkpoint is 'latest' (ckpt.pt), 'best' (best.pt) or a path."""
    from model import create_model

    name = {"latest": "ckpt.pt", "best": "best.pt"}.get(checkpoint)
    path = os.path.join(out_dir, name) if name else checkpoint
    ckpt = load_checkpoint(path, device)
    ckpt["path"] = path
    meta = read_json(os.path.join(out_dir, "meta.json"))
    if ckpt["model_args"]["vocab_size"] != meta["vocab_size"]:
        raise ValueError(
            f"{path} was trained with vocab_size {ckpt['model_args']['vocab_size']} but {out_dir}/meta.json's "
            f"tokenizer {meta['tokenizer']!r} has {meta['vocab_size']}; the checkpoint and meta.json come from "
            "different runs"
        )
    model = create_model(ckpt["model_type"], ckpt["model_args"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        lines = str(e).strip().splitlines()
        raise ValueError(f"{path} does not match its model_args ({lines[min(1, len(lines) - 1)].strip()})")
    return model.eval().to(device), ckpt, meta
