"""
Prepare a dataset for train.py: documents -> one flat stream of token ids per split, an end-of-text token after
every document, plus meta.json saying how to read and decode them.

    python prepare.py                                        # TinyStories from the Hugging Face hub, GPT-2 tokens
    python prepare.py --dataset=synthetic_stories            # offline, generated here (~10 MB), byte tokens
    python prepare.py --hf=wikitext --hf_config=wikitext-103-raw-v1 --tokenizer=cl100k_base
    python prepare.py --input=/kaggle/input/my-corpus --text_column=content --tokenizer=bpe:8192
    python prepare.py --input='stories/*.txt' --max_docs=1000 --tokenizer=path/to/tokenizer.json

Sources: --dataset (tinystories, synthetic_stories), --hf (any hub dataset), --input (local .txt, .jsonl, .json,
.parquet, .csv files: a file, a glob or a folder). Tokenizers: see tokenizer.py; bpe:N is trained here, on the
training split, and stored beside the bins.

Writes <out_dir>/train.bin and val.bin (np.memmap-readable, dtype in meta.json), meta.json, and the tokenizer file
if there is one. Memory stays bounded whatever the corpus size: documents stream through in chunks, num_proc
processes tokenize them (results kept in order, so the output does not depend on num_proc), and the tokens are
appended to files in a staging folder that is moved into place at the end, meta.json last: a failed or interrupted
run leaves the previous dataset as it was.
"""

import glob
import importlib.util
import json
import multiprocessing
import os
import re
import shlex
import shutil
import signal
import tempfile
import time
from collections import deque
from itertools import chain

import numpy as np
from tqdm import tqdm

from configurator import config_keys, configure, report_errors_in_one_line
from tokenizer import get_tokenizer, train_bpe

# -----------------------------------------------------------------------------
# source: one of --dataset, --hf, --input
dataset = "tinystories"  # tinystories (from the Hugging Face hub) or synthetic_stories (generated here, offline)
hf = ""  # any Hugging Face hub dataset by name, e.g. --hf=roneneldan/TinyStories
hf_config = ""  # --hf: the dataset's configuration (subset), where it has several
hf_split = "train"  # --hf: the split to train on; val.bin comes from its validation split, else val_fraction
streaming = False  # --hf: read while downloading and keep no copy (for a --max_docs slice of a huge dataset)
input = ""  # local files: a path, a glob ('corpus/*.jsonl') or a folder of .txt .jsonl .json .parquet .csv files
text_column = "text"  # --hf, and --input files other than .txt: the column holding the documents
blank_line_docs = False  # .txt: documents end at blank lines (default: at a line holding only <|endoftext|>)
num_bytes = 10_000_000  # synthetic_stories: size of the generated text
seed = 1337  # synthetic_stories: same seed, same corpus
# output
tokenizer = "auto"  # gpt2, cl100k_base, o200k_base, bytes, char, bpe:N, path/to/tokenizer.json; auto: bytes for
# synthetic_stories (runs offline with no files), gpt2 for everything else
out_dir = ""  # default: data/<dataset name>; for --input the input's name
val_fraction = 0.05  # sources without a validation split: this share of the documents, spread evenly, is held out;
# a source that is one document (tiny Shakespeare) is split by position: the last val_fraction of it is val
max_docs = 0  # read at most this many documents from each split of the source (0: all), for quick slices
num_proc = 0  # tokenizing processes (0: one per core)
# -----------------------------------------------------------------------------
_defaults = {k: globals()[k] for k in config_keys(globals())}  # main() starts from these: calling it twice is safe

HUB_DATASETS = {"tinystories": "roneneldan/TinyStories"}
LOADERS = {".txt": None, ".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}  # datasets' loaders
VAL_SPLITS = ("validation", "valid", "val")  # a hub dataset's validation split, by the names in use
EOT_LINE = re.compile(r"^[ \t]*<\|endoftext\|>[ \t]*(?:\n|$)", re.MULTILINE)
BLANK_LINES = re.compile(r"\n(?:[ \t]*\n)+")
PIECE_CHARS = 1 << 20  # a longer document is tokenized in pieces of about this size, so memory stays bounded
CHUNK_CHARS = 1 << 18  # text per task for a tokenizing process


# -----------------------------------------------------------------------------
# sources: each yields a document as (text, ends_document) pieces; surrounding whitespace is stripped and empty
# documents are dropped, whatever the source


def pieces(doc):
    """One document as (text, ends_document) pieces of at most ~2 * PIECE_CHARS: a whole book stays bounded."""
    doc = doc.strip()
    start = 0
    while len(doc) - start > 2 * PIECE_CHARS:
        cut = _cut(doc, start, start + PIECE_CHARS)
        yield doc[start:cut], False
        start = cut
    if doc:
        yield doc[start:], True


def _cut(text, start, limit):
    """Where to cut a long text, at most at limit: after a newline or before a space, between two non-space
    characters, where GPT-2-style tokenizers split the two parts just as they would split the whole."""
    for sep, after in (("\n", 1), (" ", 0)):
        i = text.rfind(sep, (start + limit) // 2, limit)
        while i > (start + limit) // 2:
            if not text[i - 1].isspace() and not text[i + 1].isspace():
                return i + after
            i = text.rfind(sep, (start + limit) // 2, i)
    return limit


def read_txt(path):
    """The documents of a .txt file as pieces, read in blocks: bounded memory even for a file of one long line."""
    separator = BLANK_LINES if blank_line_docs else EOT_LINE
    pending, started = "", False  # started: pieces of the current document have been passed on already
    with open(path, encoding="utf-8") as f:
        while True:
            try:
                block = f.read(PIECE_CHARS)
            except UnicodeDecodeError as e:
                raise ValueError(f"{path} is not UTF-8 text ({e.reason}); convert it, e.g. with iconv")
            pending += block
            end = pending.rfind("\n") + 1 if block else len(pending)  # complete lines: no separator cut in two
            start = 0
            for m in separator.finditer(pending, 0, end):
                text = pending[start : m.start()]
                text = text.rstrip() if started else text.strip()
                if text or started:
                    yield text, True
                started, start = False, m.end()
            pending = pending[start:]
            if not started and len(pending) > 2 * PIECE_CHARS:
                pending = pending.lstrip()  # a document's leading whitespace goes anyway
            while len(pending) > 2 * PIECE_CHARS:  # a very long document: pass its beginning on
                cut = _cut(pending, 0, PIECE_CHARS)
                yield pending[:cut], False
                pending, started = pending[cut:], True
            if not block:
                text = pending.rstrip() if started else pending.strip()
                if text or started:
                    yield text, True
                return


class ColumnError(ValueError):
    """The text column is missing or holds something other than text: the message names the file and the fix."""


def read_table(table, where):
    """The documents in text_column of a datasets table (Dataset or IterableDataset), read in batches."""
    for batch in table.iter(batch_size=1000):
        if text_column not in batch:
            raise ColumnError(
                f"{where} has no column {text_column!r}; its columns: {', '.join(batch)}. "
                "Name the one holding the text with --text_column="
            )
        for doc in batch[text_column]:
            if doc is None:  # a missing value
                continue
            if not isinstance(doc, str):
                raise ColumnError(f"{where} column {text_column!r} holds {type(doc).__name__}, not text")
            yield from pieces(doc)


def read_files(files):
    for path in files:
        loader = LOADERS[_extension(path)]
        if loader is None:
            yield from read_txt(path)
            continue
        from datasets import load_dataset

        try:  # streaming: read in batches, no copy of the file in the datasets cache
            table = load_dataset(loader, data_files=path, split="train", streaming=True)
            yield from read_table(table, path)
        except ColumnError:
            raise
        except Exception as e:  # malformed JSON, CSV or Parquet
            raise ValueError(f"could not read {path} as {loader}: {_first_line(e)}") from e


def find_files(pattern):
    """--input as a sorted list of files: a file, a glob (** for subfolders) or a folder (searched recursively)."""
    if os.path.isdir(pattern):
        files = []
        for root, folders, names in os.walk(pattern):
            folders[:] = [d for d in folders if not d.startswith(".")]  # .ipynb_checkpoints holds copies
            files += [os.path.join(root, n) for n in names if not n.startswith(".") and _extension(n) in LOADERS]
        if not files:  # other files (Kaggle folders hold licences, READMEs) are left alone
            raise FileNotFoundError(f"no {', '.join(LOADERS)} files in the folder --input={pattern}")
    elif glob.has_magic(pattern):
        files = [f for f in glob.glob(pattern, recursive=True) if os.path.isfile(f)]
    else:
        files = [pattern] if os.path.isfile(pattern) else []
    if not files:
        raise FileNotFoundError(f"no files match --input={pattern}")
    for f in files:
        if _extension(f) not in LOADERS:
            raise ValueError(f"can't read {f}: --input takes {', '.join(LOADERS)} files")
    return sorted(files)


def input_name(pattern):
    """The input's stem, for the default out_dir: data/stories for stories.txt, stories/*.jsonl or stories/."""
    path = pattern.rstrip("/\\")
    while glob.has_magic(path):
        path = os.path.dirname(path)
    stem, extension = os.path.splitext(os.path.basename(path))
    return (stem if extension.lower() in LOADERS else stem + extension) or "input"


def _extension(path):
    return os.path.splitext(path)[1].lower()


def load_hub(name):
    """The dataset's splits from the Hugging Face hub: downloaded once into the datasets cache, or streamed."""
    try:
        import datasets
    except ImportError:
        raise ImportError("hub datasets are read with the datasets package: pip install datasets")
    print(f"loading {name}{f' ({hf_config})' if hf_config else ''} from the Hugging Face hub")
    try:
        return datasets.load_dataset(name, hf_config or None, streaming=streaming)
    except Exception as e:
        # datasets raises a builtin ConnectionError offline; http libraries' own errors are named like these
        if isinstance(e, ConnectionError) or any(w in type(e).__name__ for w in ("Connect", "Offline", "Timeout")):
            raise ConnectionError(
                f"can't reach the Hugging Face hub to load {name} ({_first_line(e)}). Without internet, prepare "
                "local files instead: python prepare.py --input=PATH (a .txt, .jsonl, .json, .parquet or .csv file, "
                "a glob or a folder; e.g. --input=/kaggle/input/tinystories/TinyStories-train.txt)"
            )
        raise ValueError(f"could not load {name} from the Hugging Face hub: {_first_line(e)}")


def _first_line(e):
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def first_docs(stream, n):
    """At most n documents (0: all) of a stream of pieces."""
    done = 0
    for text, ends in stream:
        if n and done >= n:
            return
        yield text, ends
        done += ends


def hold_out(stream):
    """Tag pieces with a split in one pass: document i goes to val when floor((i + 1) * val_fraction) steps up,
    which holds out val_fraction of the documents, spread evenly through the corpus (no count needed first)."""
    i = 0
    for text, ends in stream:
        yield ("val" if int((i + 1) * val_fraction) > int(i * val_fraction) else "train"), text, ends
        i += ends


def tagged(split, stream):
    return ((split, text, ends) for text, ends in stream)


def open_source():
    """-> (description, number of documents or None where unknown, stream): stream() yields (split, text,
    ends_document) and gives the same every time it is called (bpe:N reads the data twice)."""
    if input:
        files = find_files(input)
        desc = f"local files: --input={input} ({len(files)} files), val_fraction={val_fraction}"
        return desc, None, lambda: hold_out(first_docs(read_files(files), max_docs))
    if dataset == "synthetic_stories" and not hf:
        try:
            from synthetic_stories import generate_stories
        except ImportError:
            raise ImportError("synthetic_stories.py is missing: it ships beside prepare.py")
        desc = f"synthetic_stories (generated here: seed={seed}, num_bytes={num_bytes}), val_fraction={val_fraction}"

        def stories():
            for story in generate_stories(num_bytes, seed):
                yield from pieces(story)

        return desc, None, lambda: hold_out(first_docs(stories(), max_docs))
    name = hf or HUB_DATASETS[dataset]
    splits = load_hub(name)
    if hf_split not in splits:
        raise ValueError(f"{name} has no split {hf_split!r}; its splits: {', '.join(splits)} (--hf_split=)")
    train = splits[hf_split]
    val = next((s for s in VAL_SPLITS if s in splits and s != hf_split), None)
    desc = f"{name}{f' ({hf_config})' if hf_config else ''} from the Hugging Face hub, split {hf_split} -> train"
    tables = [train] + ([splits[val]] if val else [])
    known = all(hasattr(t, "__len__") for t in tables)  # a streamed table's length is unknown
    total = sum(min(len(t), max_docs or len(t)) for t in tables) if known else None
    if val:
        desc += f", {val} -> val"
        return desc, total, lambda: chain(
            tagged("train", first_docs(read_table(train, name), max_docs)),
            tagged("val", first_docs(read_table(splits[val], name), max_docs)),
        )
    desc += f", val_fraction={val_fraction} of it -> val"
    return desc, total, lambda: hold_out(first_docs(read_table(train, name), max_docs))


# -----------------------------------------------------------------------------
# tokenizing, in worker processes

_tokenizers = {}  # per process: each tokenizer is loaded once, then used for every chunk


def _worker_init():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle, once
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # pool.terminate() ends workers with it


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # a kill (Kaggle stopping a session, timeout) cleans up like Ctrl-C


def encode_chunk(spec, directory, chunk):
    """[(split, text, ends_document), ...] -> [(split, uint32 token ids with end-of-text after each document,
    number of documents), ...], one entry per run of pieces of the same split."""
    if (spec, directory) not in _tokenizers:
        _tokenizers[spec, directory] = get_tokenizer(spec, directory)
    enc = _tokenizers[spec, directory]
    runs = []
    for split, text, ends in chunk:
        if not runs or runs[-1][0] != split:
            runs.append((split, [], [0]))
        _, ids, docs = runs[-1]
        ids.extend(enc.encode(text))
        if ends:
            ids.append(enc.eot_token)
            docs[0] += 1
    return [(split, np.array(ids, dtype=np.uint32), docs[0]) for split, ids, docs in runs]


def chunks(stream):
    """Group (split, text, ends) pieces into tasks of about CHUNK_CHARS of text."""
    chunk, size = [], 0
    for piece in stream:
        chunk.append(piece)
        size += len(piece[1])
        if size >= CHUNK_CHARS:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def ordered_map(pool, fn, tasks, window):
    """fn(*task) for each task, in num_proc processes, results in task order with at most `window` tasks in
    flight: Pool.imap would read the whole input ahead into memory while the workers fall behind."""
    if pool is None:
        yield from (fn(*task) for task in tasks)
        return
    running = deque()
    for task in tasks:
        running.append(pool.apply_async(fn, task))
        if len(running) >= window:
            yield running.popleft().get()
    while running:
        yield running.popleft().get()


def tokenize(stream, pool, window, spec, staging, enc, dtype, total):
    """Tokenize the stream into staging/train.bin and val.bin; returns the token and document counts and the largest
    token id (train.py checks it against vocab_size without reading the bins)."""
    counts = {f"{split}_{what}": 0 for split in ("train", "val") for what in ("tokens", "documents")}
    counts["max_token_id"] = 0
    t0 = time.time()
    bar = tqdm(total=total, unit=" docs", desc="tokenizing", dynamic_ncols=True)
    train, val = open(os.path.join(staging, "train.bin"), "wb"), open(os.path.join(staging, "val.bin"), "wb")
    with bar, train, val:
        files = {"train": train, "val": val}
        tasks = ((spec, staging, chunk) for chunk in chunks(stream))
        for runs in ordered_map(pool, encode_chunk, tasks, window):
            for split, ids, docs in runs:
                largest = int(ids.max()) if len(ids) else 0
                # the model's embedding has vocab_size rows: a larger id would break training or sampling later
                if largest >= enc.vocab_size:
                    raise ValueError(f"token id {largest} >= the tokenizer's vocab_size {enc.vocab_size}")
                counts["max_token_id"] = max(counts["max_token_id"], largest)
                ids.astype(dtype).tofile(files[split])
                counts[f"{split}_tokens"] += len(ids)
                counts[f"{split}_documents"] += docs
                bar.update(docs)
            tokens = counts["train_tokens"] + counts["val_tokens"]
            bar.set_postfix_str(f"{tokens:,} tokens, {tokens / (time.time() - t0):,.0f} tokens/s", refresh=False)
    return counts


# -----------------------------------------------------------------------------


def tokenizer_spec():
    """The --tokenizer asked for, with auto resolved: bytes for synthetic_stories (offline, no files), else gpt2."""
    if tokenizer == "auto":
        return "bytes" if dataset == "synthetic_stories" and not (input or hf) else "gpt2"
    if tokenizer.startswith("bpe:"):  # checked now: training starts only after the data is loaded
        if not tokenizer[4:].isdigit() or int(tokenizer[4:]) < 257:
            raise ValueError(f"--tokenizer={tokenizer}: N must be >= 257 (bytes + end-of-text), e.g. bpe:4096")
        if importlib.util.find_spec("tokenizers") is None:
            raise ImportError("--tokenizer=bpe:N trains with the tokenizers package: pip install tokenizers")
    return tokenizer


def store_tokenizer(spec, staging, stream):
    """Put the tokenizer's file (if any) in staging -> (spec for meta.json, its file names). bpe:N trains here."""
    if spec == "char":  # nanoGPT's: every character of the text, both splits (a val-only character can't be encoded)
        chars = sorted(set().union(*(set(text) for _, text, _ in stream())))
        with open(os.path.join(staging, "meta.json"), "w", encoding="utf-8") as f:  # the final one replaces it
            json.dump({"tokenizer": "char", "chars": "".join(chars)}, f)
        return spec, []
    if spec.startswith("bpe:"):
        print(f"training a byte-level BPE of {int(spec[4:]):,} tokens on the training split")
        t0 = time.time()
        texts = (text for split, text, _ in stream() if split == "train")
        train_bpe(texts, int(spec[4:]), os.path.join(staging, "tokenizer.json"))
        print(f"trained in {time.time() - t0:.1f}s")
        return spec, ["tokenizer.json"]
    if spec.startswith("hf:") or spec.endswith(".json"):
        path = spec[3:] if spec.startswith("hf:") else spec
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--tokenizer={spec}: no such file")
        name = os.path.basename(path)
        if name in ("train.bin", "val.bin", "meta.json"):
            raise ValueError(f"--tokenizer={spec}: rename the file, {name} is one of the dataset's own")
        shutil.copyfile(path, os.path.join(staging, name))
        return f"hf:{name}", [name]
    return spec, []


def split_by_position(staging, dtype, counts):
    """Move the last val_fraction of the tokens of train.bin (a single document) to val.bin, in bounded memory."""
    itemsize = np.dtype(dtype).itemsize
    keep = min(counts["train_tokens"] - 1, int(counts["train_tokens"] * (1 - val_fraction)))  # nanoGPT's cut
    n_val = counts["train_tokens"] - keep
    with open(os.path.join(staging, "train.bin"), "r+b") as train, open(os.path.join(staging, "val.bin"), "wb") as val:
        train.seek(keep * itemsize)
        while block := train.read(1 << 24):
            val.write(block)
        train.truncate(keep * itemsize)
    counts.update(train_tokens=keep, val_tokens=n_val, val_documents=1)  # the one document's end
    print(f"one document: split by position, its last {val_fraction:.0%} ({n_val:,} tokens) is val")


def publish(staging, out, files):
    """Move the staged files into out, meta.json last. The old meta.json goes first: a crash halfway leaves no
    dataset that looks complete (train.py looks for meta.json)."""
    old = os.path.join(out, "meta.json")
    stale = []
    if os.path.exists(old):
        try:
            with open(old) as f:
                stale = [n for n in json.load(f).get("files", []) if n == os.path.basename(n) and n not in files]
        except (ValueError, AttributeError):  # a damaged meta.json: nothing to learn from it
            pass
        os.remove(old)
    for name in ["train.bin", "val.bin", *files]:
        os.replace(os.path.join(staging, name), os.path.join(out, name))
    for name in stale:  # the previous dataset's tokenizer file, say
        if os.path.isfile(os.path.join(out, name)):
            os.remove(os.path.join(out, name))
    os.replace(os.path.join(staging, "meta.json"), old)


def check_config():
    if sum([bool(input), bool(hf), dataset != _defaults["dataset"]]) > 1:
        raise ValueError("give one source: --dataset=, --hf= or --input=")
    if not (input or hf) and dataset not in (*HUB_DATASETS, "synthetic_stories"):
        raise ValueError(
            f"unknown --dataset={dataset}; available: {', '.join([*HUB_DATASETS, 'synthetic_stories'])}; "
            "or --hf=NAME for any Hugging Face hub dataset, --input=PATH for local files"
        )
    if not 0 < val_fraction < 1:
        raise ValueError(f"--val_fraction={val_fraction} must be between 0 and 1")
    if max_docs < 0 or num_proc < 0:
        raise ValueError("--max_docs and --num_proc must be >= 0 (0: all documents, all cores)")
    if input:
        find_files(input)  # a mistyped path is reported before anything is loaded


def main(argv=None):
    """Prepare the dataset that argv (default: the command line) asks for."""
    global out_dir
    globals().update(_defaults)
    config = configure(globals(), argv)
    check_config()
    if not out_dir:
        name = hf.split("/")[-1] + (f"-{hf_config}" if hf_config else "") if hf else dataset
        out_dir = os.path.join("data", input_name(input) if input else name)
    # the command that reproduces this run, however it was called (command line, config file, notebook)
    command = shlex.join(["python", "prepare.py"] + [f"--{k}={v}" for k, v in config.items() if v != _defaults[k]])
    procs = num_proc or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    created = not os.path.isdir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".prepare-", dir=out_dir)  # moved into place only when complete
    pool, t0 = None, time.time()
    try:
        on_term = signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:  # called from a thread other than the main one: signals stay as they are
        on_term = None
    try:
        spec = tokenizer_spec()
        _tokenizers.clear()
        trained = spec.startswith("bpe:") or spec == "char"  # made from the data, once it is loaded
        if not trained:  # fail fast, before a long download; workers forked after this share it
            spec, files = store_tokenizer(spec, staging, None)
            _tokenizers[spec, staging] = get_tokenizer(spec, staging)
        # the pool before datasets or BPE training start threads: forking a process that has threads is unsafe
        pool = multiprocessing.Pool(procs, initializer=_worker_init) if procs > 1 else None
        source, total, stream = open_source()
        if trained:
            spec, files = store_tokenizer(spec, staging, stream)
        enc = get_tokenizer(spec, staging)  # from the staged file, exactly as train.py and sample.py will load it
        dtype = np.uint16 if enc.vocab_size <= 2**16 else np.uint32
        print(f"tokenizer {spec}: vocab_size {enc.vocab_size:,} (the model pads it to a multiple of 64), "
              f"end-of-text {enc.eot_token}, {np.dtype(dtype).name} tokens, {procs} process{'es' * (procs > 1)}")
        counts = tokenize(stream(), pool, 2 * procs, spec, staging, enc, dtype, total)
        n_docs = counts["train_documents"] + counts["val_documents"]
        if n_docs == 1 and counts["train_tokens"] >= 2:  # one document: its end is val, as nanoGPT splits
            split_by_position(staging, dtype, counts)
        if not counts["train_documents"] or not counts["val_documents"]:
            raise ValueError(
                f"{n_docs} document{'s' * (n_docs != 1)}, too few to split into train and val "
                f"(val_fraction={val_fraction}); "
                ".txt documents end at a line holding only <|endoftext|>, or at blank lines with --blank_line_docs=True"
            )
        meta = {
            "tokenizer": spec,
            "vocab_size": enc.vocab_size,
            "dtype": np.dtype(dtype).name,
            "eot_token": enc.eot_token,
            **({"chars": enc.chars} if spec == "char" else {}),
            **counts,
            "source": source,
            "command": command,
            "files": files,
        }
        with open(os.path.join(staging, "meta.json"), "w") as f:
            json.dump(meta, f, indent=2)
        publish(staging, out_dir, files)
    except KeyboardInterrupt:
        raise SystemExit(f"interrupted: {out_dir} is as it was")
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        if on_term is not None:
            signal.signal(signal.SIGTERM, on_term)
        shutil.rmtree(staging, ignore_errors=True)
        if created and not os.listdir(out_dir):
            os.rmdir(out_dir)
    dt = time.time() - t0
    for split in ("train", "val"):
        print(f"{split}: {counts[f'{split}_documents']:,} documents, {counts[f'{split}_tokens']:,} tokens")
    tokens = counts["train_tokens"] + counts["val_tokens"]
    print(f"wrote {out_dir}/train.bin, val.bin, meta.json{''.join(', ' + f for f in files)} in {dt:.1f}s "
          f"({tokens / dt:,.0f} tokens/s)")
    return meta


if __name__ == "__main__":
    report_errors_in_one_line()
    main()
