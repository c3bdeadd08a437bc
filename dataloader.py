"""
Prepared data, as prepare.py writes it and training reads it: finding a dataset and its meta.json (checked), the
token files (checked before any work), the eval sets, the length curriculum's stages, how processes share a step's
tokens, and BatchLoader, which draws the (x, y) windows: the one place where targets are shifted.
"""

import bisect
import math
import os
import re

import numpy as np
import torch

from files import read_json

REPO_DIR = os.path.dirname(os.path.abspath(__file__))


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


def seq_len_at(stages, done):
    """The sequence length of the curriculum's stage at a point of training (done: 0 to 1, optim.progress_at)."""
    return next(length for length, until in stages if done < until or until == 1.0)


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


def plan_batch(total_batch_size, gradient_accumulation_steps, batch_size, block_size, world_size):
    """(micro-steps, sequences per micro-step, tokens per step) of a step of total_batch_size tokens (0: of
    gradient_accumulation_steps x batch_size x block_size) on world_size processes (nanochat's total_batch_size).
    Where no split meets the tokens asked for exactly: the nearest, said in a note, or with total_batch_size an
    error that names the nearest."""
    tokens_wanted = total_batch_size or gradient_accumulation_steps * batch_size * block_size
    micro_steps, micro_batch = split_batch(tokens_wanted, world_size, batch_size, block_size)
    tokens_per_iter = micro_steps * world_size * micro_batch * block_size
    if tokens_per_iter != tokens_wanted:
        nearest = (f"{tokens_per_iter:,} tokens per step is the nearest to {tokens_wanted:,} that {world_size} "
                   f"process(es) can split into {block_size}-token sequences, at most {batch_size} per micro-step")
        if total_batch_size:
            raise ValueError(f"--total_batch_size={total_batch_size} can't be met: use --total_batch_size="
                             f"{tokens_per_iter} ({nearest})")
        print(f"note: {nearest}")
    print(f"tokens per iteration: {tokens_per_iter:,} = {micro_steps} micro-steps x {world_size} processes x "
          f"{micro_batch} sequences x {block_size} tokens")
    return micro_steps, micro_batch, tokens_per_iter
