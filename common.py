"""
What the scripts share, so none of them copies the others: picking device/dtype/compile, finding prepared data,
the batch loader (the one place where targets are shifted), checkpoint files, and the training log (log.csv, which
eval.py reads back). Errors are exceptions with a one-line message; the scripts print them (configurator.py).
"""

import ast
import bisect
import csv
import importlib
import json
import math
import os
import random
import re
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
    if not isinstance(device, str) or not re.fullmatch(r"cpu|mps|cuda(:\d+)?", device):
        raise ValueError(f"--device={device!r}; use auto, cpu, cuda, cuda:<index> or mps")
    device_type = device.split(":")[0]
    if device_type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device={device} but no CUDA GPU is visible; use --device=cpu or --device=auto")
    if device_type == "cuda" and ":" in device and int(device[5:]) >= torch.cuda.device_count():
        raise ValueError(f"--device={device} but this machine has {torch.cuda.device_count()} GPU(s), "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if device_type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("--device=mps but this machine has no Apple GPU; use --device=cpu or --device=auto")
    if compile not in ("auto", True, False):
        raise ValueError(f"--compile={compile!r}; use auto, True or False")
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
            return folder, read_meta(os.path.join(folder, "meta.json"))
    raise FileNotFoundError(
        f"no prepared dataset {dataset!r} (looked for data/{dataset}/meta.json); "
        f"prepare it first: python prepare.py --dataset={dataset}"
    )


def eval_set_paths(eval_sets, data_dir, meta):
    """--eval_sets ("val,data/c4/val.bin") -> {name: token file}: 'val' and 'train' are the dataset's own splits;
    a path is another prepared token file, with the same tokenizer in the meta.json beside it. Its name (a log
    column, loss_<name>) is its folder's, plus the file's stem where that is not val: c4, code, c4_test."""
    paths = {}
    for item in filter(None, (part.strip() for part in eval_sets.split(","))):
        if item in ("val", "train"):
            paths[item] = os.path.join(data_dir, f"{item}.bin")
            continue
        if not os.path.isfile(item):
            raise FileNotFoundError(f"--eval_sets: no token file {item}; give 'val' or paths to .bin files that "
                                    "prepare.py wrote")
        folder, stem = os.path.split(os.path.abspath(item))
        other = os.path.join(folder, "meta.json")
        if not os.path.isfile(other) or read_meta(other)["tokenizer"] != meta["tokenizer"]:
            raise ValueError(f"--eval_sets: {item} needs a meta.json beside it with tokenizer {meta['tokenizer']!r} "
                             "(the training data's): prepare it with the same --tokenizer")
        stem = os.path.splitext(stem)[0]
        name = re.sub(r"\W+", "_", os.path.basename(folder) + ("" if stem == "val" else f"_{stem}"))
        paths[name if name not in paths else f"{name}_{len(paths)}"] = item
    if not paths:
        raise ValueError("--eval_sets is empty; give at least 'val'")
    return paths


def parse_block_size_schedule(schedule, block_size):
    """'128:0.2,256:0.5' -> [(128, 0.2), (256, 0.5), (block_size, 1.0)]: each stage's sequence length and the share
    of training it lasts until. Each length divides block_size: the loader's block_size rows split into whole
    shorter ones, so data order and resume never depend on the stage."""
    stages = []
    for part in filter(None, schedule.replace(" ", "").split(",")):
        try:
            length, until = part.split(":")
            length, until = int(length), float(until)
        except ValueError:
            raise ValueError(f"--block_size_schedule={schedule!r}: write stages as length:share, e.g. "
                             f"\"{block_size // 4}:0.2,{block_size // 2}:0.5\"") from None
        if not (0 < length < block_size and block_size % length == 0):
            raise ValueError(f"--block_size_schedule: {length} must be shorter than --block_size={block_size} and "
                             f"divide it, e.g. {block_size // 2}")
        if not 0 < until < 1 or (stages and (length <= stages[-1][0] or until <= stages[-1][1])):
            raise ValueError(f"--block_size_schedule={schedule!r}: lengths and shares must grow, shares between 0 "
                             "and 1")
        stages.append((length, until))
    return stages + [(block_size, 1.0)]


def read_json(path, fix=""):
    """A JSON file; one that isn't JSON is a ValueError naming it (and saying fix, if given)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing{'; ' + fix if fix else ''}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}){'; ' + fix if fix else ''}") from None


def write_json(obj, path):
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)

    write_atomic(path, write)


def read_meta(path):
    """meta.json, checked for what every script relies on: the tokenizer, vocab_size, and the bins' dtype."""
    fix = "restore it (a run's meta.json is a copy of its dataset's) or prepare the data again (python prepare.py ...)"
    meta = read_json(path, fix)
    missing = [k for k in ("tokenizer", "vocab_size", "dtype") if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise ValueError(f"{path} has no {', '.join(missing)}; {fix}")
    if meta["dtype"] not in ("uint16", "uint32"):
        raise ValueError(f"{path}: dtype {meta['dtype']!r} is not uint16 or uint32; {fix}")
    vocab_size, largest = meta["vocab_size"], np.iinfo(meta["dtype"]).max + 1
    if type(vocab_size) is not int or not 0 < vocab_size <= largest:
        raise ValueError(f"{path}: vocab_size {vocab_size!r} is not a whole number from 1 to {largest:,} "
                         f"({meta['dtype']}); {fix}")
    for key in ("eot_token", "max_token_id"):  # max_token_id: the largest id prepare.py wrote to the bins
        if key in meta and (type(meta[key]) is not int or not 0 <= meta[key] < vocab_size):
            raise ValueError(f"{path}: {key} {meta[key]!r} is not a token id below vocab_size {vocab_size}: "
                             f"meta.json and the data disagree; {fix}")
    return meta


SCAN_ALL_TOKENS = 2**25  # a token file up to this size has every id checked at start (~20 ms); larger ones sampled
SAMPLE_TOKENS = 2**14  # ... in 32 evenly spaced stretches of this many tokens (a mixed-up file is wrong everywhere)


def open_tokens(path, meta, block_size):
    """A token file (train.bin, val.bin) as a read-only memmap, after checks that cost next to nothing: it exists,
    holds a whole number of tokens, at least one window of block_size + 1, and no id >= vocab_size (every id of a
    file up to SCAN_ALL_TOKENS, else evenly spaced stretches; BatchLoader checks every batch it draws)."""
    fix = "prepare the data again (python prepare.py ...)"
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing; {fix}")
    dtype = np.dtype(meta["dtype"])
    size = os.path.getsize(path)
    if size % dtype.itemsize:
        raise ValueError(f"{path} has {size:,} bytes, not a whole number of {dtype.name} tokens (meta.json's dtype): "
                         f"it is truncated or from another dataset; {fix}")
    if size // dtype.itemsize < block_size + 1:
        raise ValueError(f"{path} holds {size // dtype.itemsize} tokens, fewer than block_size + 1 = {block_size + 1}; "
                         "use a smaller --block_size or prepare more data")
    data = np.memmap(path, dtype=dtype, mode="r")
    step = max(1, len(data) // 32)
    parts = [data] if len(data) <= SCAN_ALL_TOKENS else [data[i : i + SAMPLE_TOKENS] for i in range(0, len(data), step)]
    check_token_ids(max(int(p.max()) for p in parts), meta["vocab_size"], path)
    return data


def check_token_ids(largest, vocab_size, path):
    """An id >= vocab_size would index past the embedding table: an IndexError on a CPU, a device-side assert that
    kills the process on a GPU."""
    if largest >= vocab_size:
        raise ValueError(f"{path} holds token id {largest}, but meta.json's vocab_size is {vocab_size}: the data and "
                         "meta.json come from different tokenizers; prepare the data again (python prepare.py ...)")


def find_documents(data, eot_token):
    """Start offsets of the documents of a token file (0 and after each end-of-text), read in slices: bounded
    memory. A document runs to the next start and holds its end-of-text."""
    step = 1 << 24
    ends = [np.flatnonzero(data[i : i + step] == eot_token) + i + 1 for i in range(0, len(data), step)]
    starts = np.concatenate([[0], *ends]).astype(np.int64)
    return starts[starts < len(data)]


SAMPLING = ("random", "epoch", "aligned")


class BatchLoader:
    """Batches of windows of block_size + 1 tokens from a flat token file (a uint16/uint32 memmap written by
    prepare.py), as (x, y) with y shifted one token against x. sampling chooses the windows:
      random   at random offsets, drawn with replacement (nanoGPT's)
      epoch    every window of a block_size grid (a random offset each epoch) once per epoch, shuffled, reshuffled
               each epoch
      aligned  each window starts at a document start: documents (split into window-sized pieces where longer)
               are best-fit packed into windows, and where none fits the rest, the shortest is cropped (nanochat)
    With several processes, each draws its own random stream (seed + rank), or its own share of each epoch."""

    BUFFER_DOCS = 1000  # aligned: documents to choose the best fit from

    def __init__(self, path, meta, batch_size, block_size, device="cpu", seed=0, sampling="random", rank=0,
                 world_size=1):
        if sampling not in SAMPLING:
            raise ValueError(f"--sampling={sampling!r}; use one of {', '.join(SAMPLING)}")
        self.path = path
        self.meta = meta
        self.batch_size = batch_size
        self.block_size = block_size
        self.device = device
        self.seed = seed
        self.sampling = sampling
        self.rank = rank
        self.world_size = world_size
        self.generator = torch.Generator().manual_seed(seed + rank)
        self.data = open_tokens(path, meta, block_size)
        self.batches_since_open = 0
        self.windows_drawn = 0
        self.epoch, self.position, self.buffer = 0, 0, []  # epoch and aligned: where this process is in its share
        if sampling == "aligned":
            self.doc_starts = find_documents(self.data, meta["eot_token"])
            if len(self.doc_starts) < world_size:
                raise ValueError(f"{path} holds {len(self.doc_starts)} documents, fewer than the {world_size} "
                                 "processes that share them: use --sampling=epoch or random")
        if sampling != "random":
            self.start_epoch()

    def start_epoch(self):
        """This process's share of the epoch's shuffled order: windows of a grid with a random offset (epoch) or
        documents (aligned). From (seed, epoch) alone, so a resume rebuilds it."""
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.sampling == "epoch":
            offset = int(torch.randint(self.block_size, (1,), generator=g))
            count = (len(self.data) - 1 - offset) // self.block_size  # windows of block_size + 1 that fit
            if count < self.world_size:
                offset, count = 0, (len(self.data) - 1) // self.block_size
            self.order = offset + self.block_size * torch.randperm(count, generator=g).numpy()
        else:
            self.order = torch.randperm(len(self.doc_starts), generator=g).numpy()
        self.order = self.order[self.rank :: self.world_size]

    def next_window(self):
        """The start of the next window of the epoch's order."""
        if self.position >= len(self.order):
            self.epoch, self.position = self.epoch + 1, 0
            self.start_epoch()
        self.position += 1
        return int(self.order[self.position - 1])

    def next_document(self):
        """(start, length) of the next document of the epoch's order."""
        i = self.next_window()
        end = self.doc_starts[i + 1] if i + 1 < len(self.doc_starts) else len(self.data)
        return int(self.doc_starts[i]), int(end - self.doc_starts[i])

    def aligned_row(self):
        """block_size + 1 tokens packed from whole documents, best fit first."""
        space, parts = self.block_size + 1, []
        while space:
            # the buffer streams on across epochs: each document still comes once per epoch
            while len(self.buffer) < min(self.BUFFER_DOCS, len(self.order)):
                self.add_to_buffer(*self.next_document())
            i = bisect.bisect_right(self.buffer, [space, len(self.data)]) - 1  # the longest that fits
            length, start = self.buffer.pop(max(i, 0))  # none fits: crop the shortest, drop its rest
            parts.append(self.data[start : start + min(length, space)])
            space -= min(length, space)
        return np.concatenate(parts)

    def add_to_buffer(self, start, length):
        piece = self.block_size + 1
        for s in range(start, start + length, piece):  # a long document: window-sized pieces
            bisect.insort(self.buffer, [min(piece, start + length - s), s])

    def next_batch(self):
        # pages a memmap has read stay mapped and look like a leak that grows to the file's size (nanoGPT #287);
        # reopening every 1000 batches bounds that at no measurable cost (reopening on every batch does cost)
        if self.batches_since_open >= 1000:
            self.data = np.memmap(self.path, dtype=self.data.dtype, mode="r")
            self.batches_since_open = 0
        self.batches_since_open += 1
        T = self.block_size
        if self.sampling == "aligned":
            windows = np.stack([self.aligned_row() for _ in range(self.batch_size)])  # (B, T + 1)
        else:
            if self.sampling == "random":
                ix = torch.randint(len(self.data) - T, (self.batch_size,), generator=self.generator).tolist()
            else:
                ix = [self.next_window() for _ in range(self.batch_size)]
            windows = np.stack([self.data[i : i + T + 1] for i in ix])  # (B, T + 1)
        self.windows_drawn += self.batch_size
        check_token_ids(int(windows.max()), self.meta["vocab_size"], self.path)  # microseconds; a GPU assert is worse
        windows = torch.from_numpy(windows.astype(np.int64))
        x, y = windows[:, :-1].contiguous(), windows[:, 1:].contiguous()  # THE shift: y[t] is the token after x[t]
        if str(self.device).startswith("cuda"):
            return x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device), y.to(self.device)

    def epochs(self):
        """Passes over the data so far, as a fraction (random: windows drawn times their length over the file)."""
        if self.sampling == "random":
            return self.windows_drawn * self.block_size * self.world_size / len(self.data)
        return self.epoch + self.position / max(1, len(self.order))

    def state_dict(self):
        return {"generator": self.generator.get_state(), "sampling": self.sampling, "windows_drawn": self.windows_drawn,
                "epoch": self.epoch, "position": self.position, "buffer": [list(b) for b in self.buffer]}

    def load_state_dict(self, state):
        if state.get("sampling", "random") != self.sampling:
            raise ValueError(f"the checkpoint's data order is sampling={state.get('sampling', 'random')!r}, this run "
                             f"asks for {self.sampling!r}; resume with --sampling={state.get('sampling', 'random')}")
        self.generator.set_state(state["generator"])
        self.windows_drawn = state.get("windows_drawn", 0)
        self.epoch, self.position = state.get("epoch", 0), state.get("position", 0)
        self.buffer = [list(b) for b in state.get("buffer", [])]
        if self.sampling != "random":  # the epoch's order, rebuilt from (seed, epoch)
            self.start_epoch()


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
               "x_active", "y_active",  # BDH's fractions of active neurons
               "seq_len", "tokens", "epoch"]  # the curriculum's sequence length, tokens trained, passes over the data

    def __init__(self, out_dir, append, tensorboard=False, wandb_config=None, enabled=True, extra_columns=()):
        self.path = os.path.join(out_dir, "log.csv")
        self.columns = self.columns + [c for c in extra_columns if c not in self.columns]  # e.g. loss_<eval set>
        self.start = time.time()
        self.enabled = enabled
        self.tensorboard = None
        self.wandb = None
        if not enabled:
            return
        if not (append and os.path.exists(self.path)):
            with open(self.path, "w") as f:
                f.write(",".join(self.columns) + "\n")
        else:  # resumed: keep the columns written so far, in their order, and add new ones (a new eval set)
            with open(self.path, newline="") as f:
                reader = csv.DictReader(f)
                rows, old = list(reader), list(reader.fieldnames or [])
            self.columns = old + [c for c in self.columns if c not in old]
            if len(self.columns) > len(old):
                write_atomic(self.path, lambda tmp: self._rewrite(tmp, rows))
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

    def _rewrite(self, tmp, rows):
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, self.columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)

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


def write_atomic(path, write):
    """write(tmp) fills a temporary file, then a rename puts it at path: a crash, a full disk or a missing permission
    leaves the previous file as it was, never a truncated one. A failure is an OSError saying so."""
    tmp = path + ".tmp"
    try:
        write(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write (disk full) as a RuntimeError
        if os.path.exists(tmp):
            os.remove(tmp)
        kept = "the previous one is intact" if os.path.exists(path) else "there was none before"
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free / 2**20
        raise OSError(f"could not write {path} ({_first_line(e)}; {free:,.0f} MB free on its disk); {kept}: free disk "
                      "space or fix permissions, then resume with --init_from=resume") from None


def _first_line(e):
    """The gist of an exception's message: its first sentence, without terminal colour codes."""
    text = re.sub(r"\x1b\[[0-9;]*m|^\[enforce fail at [^\]]*\][ .]*", "", str(e)).strip() or type(e).__name__
    return text.splitlines()[0].split(". ")[0][:200]


def copy_atomic(src, dst):
    write_atomic(dst, lambda tmp: shutil.copyfile(src, tmp))


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
        raise ValueError(f"{path} is damaged or not a checkpoint ({_first_line(e)})") from None
    missing = [k for k in keys if not isinstance(checkpoint, dict) or k not in checkpoint]
    if missing:
        raise ValueError(f"{path} is incomplete or not a checkpoint of this project (no {', '.join(missing)})")
    checkpoint["model"] = {_strip_prefixes(k): v for k, v in checkpoint["model"].items()}
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


def _strip_prefixes(key):
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


# -----------------------------------------------------------------------------
# text generation (sample.py, serve.py) and checks of what it wrote


class Completion:
    """One continuation of a prompt, as text that arrives while it is generated: iterating yields pieces of text,
    one forward pass each (a piece waits while its last character's bytes are split across tokens; the last piece
    holds what is left). It ends at end-of-text (not included) or after max_new_tokens. Then `tokens` holds the
    new ids and `finish_reason` is 'stop' or 'length' (OpenAI's names). An empty prompt starts a new document
    (after end-of-text). The caller holds torch.no_grad() and autocast."""

    def __init__(self, model, enc, prompt, max_new_tokens, temperature=1.0, top_k=None, top_p=None, generator=None,
                 use_cache=True):
        self.model = model
        self.enc = enc
        self.prompt_tokens = enc.encode(prompt) if prompt else [enc.eot_token]
        self.settings = (max_new_tokens, temperature, top_k, top_p, generator, use_cache)
        self.tokens = []
        self.finish_reason = None

    def __iter__(self):
        device = next(self.model.parameters()).device
        x = torch.tensor([self.prompt_tokens], dtype=torch.long, device=device)
        shown = ""
        for token in self.model.generate_stream(x, *self.settings):
            if token.item() == self.enc.eot_token:  # a story ends at end-of-text
                self.finish_reason = "stop"
                break
            self.tokens.append(token.item())
            text = self.enc.decode(self.tokens)
            if not text.endswith("\ufffd"):  # else wait: a character's bytes are split across tokens
                yield text[len(shown):]
                shown = text
        self.finish_reason = self.finish_reason or "length"
        if len(self.text) > len(shown):
            yield self.text[len(shown):]

    @property
    def text(self):
        return self.enc.decode(self.tokens)


def validator(spec):
    """A check of a sample's text, by name: 'json' (it parses as JSON), 'python' (it parses as Python source) or
    'module:function', the user's own (a true result passes; false or an exception fails). Returns check(text),
    which gives None for a text that passes, else the reason in one line."""
    if spec == "json":
        return _reason_of(json.loads, (json.JSONDecodeError,))
    if spec == "python":
        return _reason_of(ast.parse, (SyntaxError, ValueError))  # ValueError: a null byte in the text
    module_name, _, function_name = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if not (module_name and function_name):
        raise ValueError(f"--validate={spec!r}: use json, python or module:function (your own check)")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # the user's module beside where they run the script
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # not found, or an error in the module itself
        raise ValueError(f"--validate={spec}: can't import {module_name} ({type(e).__name__}: {e})") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ValueError(f"--validate={spec}: {module_name} has no function {function_name}")

    def check(text):
        try:
            result = function(text)
        except Exception as e:  # the user's check failing on a sample is that sample's failure
            return f"{type(e).__name__}: {e}".splitlines()[0]
        return None if result else f"{spec} returned {result!r}"

    return check


def _reason_of(parse, errors):
    def check(text):
        try:
            parse(text)
        except errors as e:
            return f"{type(e).__name__}: {e}".splitlines()[0]
        return None

    return check


def split_batch(tokens, world_size, batch_size, block_size):
    """How each of world_size processes takes its share of an optimizer step of `tokens` tokens: (micro-steps,
    sequences per micro-step), at most batch_size sequences per micro-step. The exact share when one exists, else
    the nearest count of tokens; among equals, the fewest micro-steps."""
    share = tokens / (world_size * block_size)  # sequences per process per step
    fewest = max(1, math.ceil(share / batch_size))
    candidates = []
    for micro_steps in range(fewest, 2 * fewest + 1):
        sequences = min(batch_size, max(1, round(share / micro_steps)))
        candidates.append((abs(micro_steps * sequences - share), micro_steps, sequences))
    _, micro_steps, sequences = min(candidates)
    return micro_steps, sequences
