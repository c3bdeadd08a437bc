"""prepare.py: what a user relies on. The token files decode back to the input documents, GPT-2 ids are tiktoken's,
every source and tokenizer lands in the same meta.json contract, output bytes depend only on input and flags, and
bad input or an interrupted run gives one line and leaves a prepared dataset alone. Offline: the hub is mocked."""

import json
import os
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest

import prepare
from tests.helpers import REPO, SHARED_DATA
from tokenizer import get_tokenizer

SAMPLE = os.path.join(SHARED_DATA, "tinystories", "TinyStories-train-sample.txt")
TIKTOKEN_CACHE = os.path.join(SHARED_DATA, "tiktoken_cache")
EOT = "<|endoftext|>"


@pytest.fixture
def gpt2(monkeypatch):
    """The GPT-2 encoding from the shared offline tiktoken cache."""
    if not os.path.isdir(TIKTOKEN_CACHE):
        pytest.skip(f"no tiktoken cache with the GPT-2 files at {TIKTOKEN_CACHE} (offline test data beside a checkout)")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", os.path.abspath(TIKTOKEN_CACHE))
    import tiktoken

    return tiktoken.get_encoding("gpt2")


@pytest.fixture(scope="session")
def raw_stories():
    """The TinyStories sample's stories as they stand between the separator lines (newlines around them); in a
    clone without the shared data, made-up stories, so that only the tests that need GPT-2 itself skip."""
    if not os.path.isfile(SAMPLE):
        return ["\n" + story + "\n" for story in made_up_stories(800)]
    with open(SAMPLE, encoding="utf-8") as f:
        return f.read().split("\n" + EOT + "\n")[:-1]  # the file ends right after the last separator


def made_up_stories(n):
    """Deterministic multi-paragraph stories with punctuation, quotes and non-ASCII text."""
    rng = random.Random(0)
    names = ["Lily", "Tom", "Zoë", "Ben", "Mia", "José", "Anna", "Max"]
    things = ["a red ball", "a tiny boat", "an old map", "a shiny key", "a soft hat", "a big kite", "a café cup"]
    acts = ["found", "lost", "shared", "painted", "carried", "hid", "fixed", "wanted"]
    feelings = ["happy", "sad", "proud", "scared", "excited", "sleepy", "curious"]
    stories = []
    for _ in range(n):
        paragraphs = []
        for _ in range(rng.randint(1, 4)):
            who, what = rng.choice(names), rng.choice(things)
            sentences = [f"{who} {rng.choice(acts)} {what} near the {rng.choice(['park', 'lake', 'hill'])}.",
                         f'"Look!" said {who}. "It is {rng.choice(feelings)} today \u2014 so am I."',
                         f"They were {rng.choice(feelings)}, and {rng.randint(2, 99)} birds sang. \U0001F426"]
            paragraphs.append(" ".join(rng.sample(sentences, rng.randint(1, 3))))
        stories.append("\n".join(paragraphs))
    return stories


@pytest.fixture(scope="session")
def stories(raw_stories):
    return [s.strip() for s in raw_stories]


def write_txt(path, docs):
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(d + "\n" + EOT + "\n" for d in docs))
    return str(path)


def run(out, *args):
    """prepare.main in this process, one worker unless asked; returns meta.json as written."""
    prepare.main([f"--out_dir={out}", "--num_proc=1", *args])
    with open(os.path.join(out, "meta.json")) as f:
        return json.load(f)


def tokens(out, split, meta):
    return np.fromfile(os.path.join(out, f"{split}.bin"), dtype=np.dtype(meta["dtype"]))


def split_like_prepare(docs, val_fraction=0.05):
    """The hold-out rule prepare.py documents: document i is val when floor((i + 1) * f) steps up."""
    is_val = [int((i + 1) * val_fraction) > int(i * val_fraction) for i in range(len(docs))]
    return [d for d, v in zip(docs, is_val) if not v], [d for d, v in zip(docs, is_val) if v]


def error_of(*args, out):
    """The one-line message of the error prepare.main raises for a user's mistake."""
    with pytest.raises((ValueError, OSError, ImportError, SystemExit)) as e:  # SystemExit: an interrupt
        run(out, *args)
    msg = str(e.value.code if isinstance(e.value, SystemExit) else e.value)
    assert msg and "\n" not in msg, msg
    return msg


def files_of(folder):
    return {n: open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder))}


# -----------------------------------------------------------------------------
# the promise: decoding gives back the documents, GPT-2 ids are tiktoken's


def test_gpt2_ids_are_tiktokens_and_decode_to_the_documents(tmp_path, gpt2, stories):
    docs = stories[:400]
    meta = run(tmp_path / "out", f"--input={write_txt(tmp_path / 'stories.txt', docs)}")
    train_docs, val_docs = split_like_prepare(docs)
    assert meta["tokenizer"] == "gpt2" and meta["dtype"] == "uint16" and meta["vocab_size"] == 50257
    assert meta["eot_token"] == gpt2.eot_token and meta["files"] == []
    for split, split_docs in (("train", train_docs), ("val", val_docs)):
        ids = tokens(tmp_path / "out", split, meta)
        expected = [t for d in split_docs for t in gpt2.encode_ordinary(d) + [gpt2.eot_token]]
        assert ids.tolist() == expected
        assert gpt2.decode(ids.tolist()) == "".join(d + EOT for d in split_docs)
        assert meta[f"{split}_tokens"] == len(ids) and meta[f"{split}_documents"] == len(split_docs)
    assert meta["val_documents"] == 20  # 5% of 400, spread through the corpus
    largest = max(int(tokens(tmp_path / "out", split, meta).max()) for split in ("train", "val"))
    assert meta["max_token_id"] == largest == gpt2.eot_token  # the end-of-text id is GPT-2's largest


def test_default_is_tinystories_from_the_hub_with_gpt2(tmp_path, monkeypatch, gpt2, raw_stories):
    """`python prepare.py` with no arguments: load_dataset('roneneldan/TinyStories'), its train and validation
    splits, GPT-2 tokens, data/tinystories. The hub is mocked with the local sample in real datasets tables."""
    import datasets

    calls = []

    def load_dataset(name, config=None, streaming=False):
        calls.append((name, config, streaming))
        return datasets.DatasetDict({
            "train": datasets.Dataset.from_dict({"text": raw_stories[:200]}),
            "validation": datasets.Dataset.from_dict({"text": raw_stories[200:230]}),
        })

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.chdir(tmp_path)
    prepare.main(["--num_proc=1"])
    assert calls == [("roneneldan/TinyStories", None, False)]
    with open("data/tinystories/meta.json") as f:
        meta = json.load(f)
    assert meta["tokenizer"] == "gpt2" and meta["command"] == "python prepare.py --num_proc=1"
    assert "roneneldan/TinyStories" in meta["source"] and "validation -> val" in meta["source"]
    for split, docs in (("train", raw_stories[:200]), ("val", raw_stories[200:230])):
        ids = tokens("data/tinystories", split, meta).tolist()
        assert ids == [t for d in docs for t in gpt2.encode_ordinary(d.strip()) + [gpt2.eot_token]]
        assert meta[f"{split}_documents"] == len(docs)


def test_any_hub_dataset_split_column_and_streaming(tmp_path, monkeypatch, stories):
    """--hf with a config, a split, a text column and streaming; no validation split: val_fraction holds out."""
    import datasets

    calls = []

    def load_dataset(name, config=None, streaming=False):
        calls.append((name, config, streaming))
        table = datasets.Dataset.from_dict({"story": stories[:100], "id": list(range(100))})
        return datasets.IterableDatasetDict({"all": table.to_iterable_dataset()})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    meta = run(tmp_path / "out", "--hf=someone/stories", "--hf_config=en", "--hf_split=all", "--text_column=story",
               "--streaming=True", "--tokenizer=bytes", "--val_fraction=0.1")
    assert calls == [("someone/stories", "en", True)]
    train_docs, val_docs = split_like_prepare(stories[:100], 0.1)
    enc = get_tokenizer("bytes")
    assert enc.decode(tokens(tmp_path / "out", "val", meta)) == "".join(d + EOT for d in val_docs)
    assert meta["train_documents"] == 90 and meta["val_documents"] == 10
    msg = error_of("--hf=someone/stories", "--tokenizer=bytes", out=tmp_path / "o2")  # no split 'train'
    assert "no split 'train'" in msg and "all" in msg
    msg = error_of("--hf=someone/stories", "--hf_split=all", "--tokenizer=bytes", out=tmp_path / "o3")
    assert "no column 'text'" in msg and "story, id" in msg


def test_unreachable_hub_says_so_and_shows_input(tmp_path, monkeypatch, gpt2):
    """What datasets 5 raises offline (checked on a machine without internet): a builtin ConnectionError."""
    import datasets

    def load_dataset(name, *args, **kwargs):
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    msg = error_of(out=tmp_path / "out")
    assert "can't reach the Hugging Face hub" in msg and "--input=" in msg
    assert not os.path.exists(tmp_path / "out")  # nothing half-written


def test_real_hub_call_offline_is_one_line(tmp_path):
    """The real load_dataset('roneneldan/TinyStories') path, in offline mode so that it fails at once: exit 1, one
    line, no traceback (with no network it fails the same way after retrying for ~25 s)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "cache"),
           "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run([sys.executable, os.path.join(REPO, "prepare.py"), f"--out_dir={tmp_path / 'out'}",
                           "--tokenizer=bytes", "--num_proc=1"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "error: can't reach the Hugging Face hub to load roneneldan/TinyStories" in proc.stderr
    assert "--input=" in proc.stderr


# -----------------------------------------------------------------------------
# tokenizers


def test_bpe_is_trained_stored_and_decodes_from_a_copy_like_train_makes(tmp_path, stories):
    pytest.importorskip("tokenizers", reason="bpe:N needs the tokenizers package (requirements-test.txt)")
    docs = stories[:300]
    meta = run(tmp_path / "out", f"--input={write_txt(tmp_path / 'stories.txt', docs)}", "--tokenizer=bpe:400")
    assert meta["tokenizer"] == "bpe:400" and meta["vocab_size"] == 400 and meta["files"] == ["tokenizer.json"]
    assert meta["eot_token"] == 0 and meta["dtype"] == "uint16"
    run_dir = tmp_path / "run"  # train.py copies meta.json and meta["files"] into out_dir; sample.py reads only that
    run_dir.mkdir()
    for name in ["meta.json", *meta["files"]]:
        shutil.copy(tmp_path / "out" / name, run_dir / name)
    enc = get_tokenizer(meta["tokenizer"], str(run_dir))
    train_docs, val_docs = split_like_prepare(docs)
    ids = tokens(tmp_path / "out", "train", meta)
    assert enc.decode(ids.tolist()) == "".join(d + EOT for d in train_docs)
    assert ids.max() < 400 and len(ids) < 0.6 * sum(len(d) + 1 for d in train_docs)  # it does compress
    first = files_of(tmp_path / "out")
    run(tmp_path / "out", f"--input={tmp_path / 'stories.txt'}", "--tokenizer=bpe:400", "--num_proc=2")
    again = files_of(tmp_path / "out")
    assert again.pop("meta.json") != first.pop("meta.json")  # the command differs: --num_proc=2
    assert again == first  # same tokenizer.json, same bins


def test_sample_decodes_a_bpe_run_from_out_dir_alone(tmp_path, stories):
    """prepare (bpe:N) -> train.py -> sample.py as a user runs them; the data folder is gone before sampling."""
    pytest.importorskip("tokenizers", reason="bpe:N needs the tokenizers package (requirements-test.txt)")
    data, out = tmp_path / "data", tmp_path / "run"
    run(data, f"--input={write_txt(tmp_path / 'in.txt', stories[:200])}", "--tokenizer=bpe:320")
    tiny = ["--n_layer=1", "--n_head=1", "--n_embd=16", "--block_size=16", "--batch_size=2", "--max_iters=2",
            "--eval_interval=1", "--eval_iters=1", "--warmup_iters=0", "--device=cpu", "--dtype=float32",
            "--compile=False"]
    for script, args in (("train.py", [f"--dataset={data}", f"--out_dir={out}", *tiny]),
                         ("sample.py", [f"--out_dir={out}", "--start=Once upon a time", "--num_samples=1",
                                        "--max_new_tokens=10", "--device=cpu", "--dtype=float32"])):
        if script == "sample.py":
            shutil.rmtree(data)
        proc = subprocess.run([sys.executable, os.path.join(REPO, script), *args], capture_output=True, text=True,
                              timeout=120, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "\nOnce upon a time" in proc.stdout


def test_tokenizer_json_by_path_is_stored_as_hf_name(tmp_path, stories):
    tokenizers = pytest.importorskip("tokenizers", reason="tokenizer.json files need the tokenizers package")
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>"], show_progress=False,
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(stories[:50], trainer=trainer)  # a Llama-style end of text: </s>
    tok.save(str(tmp_path / "my_tokenizer.json"))
    docs = stories[:60] + ["A story that says </s> and <|endoftext|> as plain text."] * 2
    meta = run(tmp_path / "out", f"--input={write_txt(tmp_path / 'in.txt', docs)}",
               f"--tokenizer={tmp_path / 'my_tokenizer.json'}")
    assert meta["tokenizer"] == "hf:my_tokenizer.json" and meta["files"] == ["my_tokenizer.json"]
    assert meta["eot_token"] == tok.token_to_id("</s>") == 1
    enc = get_tokenizer(meta["tokenizer"], str(tmp_path / "out"))
    train_docs, _ = split_like_prepare(docs)
    ids = tokens(tmp_path / "out", "train", meta).tolist()
    assert ids.count(1) == len(train_docs)  # a document's own "</s>" is text, not an end-of-text token
    assert enc.decode(ids) == "".join(d + "</s>" for d in train_docs)


def test_uint32_when_the_vocabulary_does_not_fit_uint16(tmp_path):
    tokenizers = pytest.importorskip("tokenizers", reason="tokenizer.json files need the tokenizers package")
    vocab = {f"w{i}": i for i in range(70_000)} | {"[UNK]": 70_000, "<|endoftext|>": 70_001}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tok.save(str(tmp_path / "big.json"))
    docs = [f"w{i} w{69_999 - i} w7" for i in range(40)]
    path = write_txt(tmp_path / "in.txt", docs)
    meta = run(tmp_path / "out", f"--input={path}", f"--tokenizer={tmp_path / 'big.json'}")
    assert meta["dtype"] == "uint32" and meta["vocab_size"] == 70_002
    train_docs, _ = split_like_prepare(docs)
    expected = [t for i in range(40) if docs[i] in train_docs for t in (i, 69_999 - i, 7, 70_001)]
    assert tokens(tmp_path / "out", "train", meta).tolist() == expected


def test_synthetic_stories_default_to_bytes(tmp_path):
    synthetic_stories = pytest.importorskip("synthetic_stories", reason="synthetic_stories.py not in this checkout")
    meta = run(tmp_path / "out", "--dataset=synthetic_stories", "--num_bytes=20000", "--seed=3")
    assert meta["tokenizer"] == "bytes" and meta["vocab_size"] == 257 and meta["dtype"] == "uint16"
    train_docs, val_docs = split_like_prepare([s.strip() for s in synthetic_stories.generate_stories(20000, 3)])
    enc = get_tokenizer("bytes")
    assert enc.decode(tokens(tmp_path / "out", "train", meta)) == "".join(d + EOT for d in train_docs)
    assert meta["val_documents"] == len(val_docs) > 0


def test_max_token_id_is_checked_while_writing(tmp_path, monkeypatch, stories):
    def bad_encode(spec, directory, chunk):
        return [("train", np.array([1, 300], dtype=np.uint32), len(chunk))]

    monkeypatch.setattr(prepare, "encode_chunk", bad_encode)
    msg = error_of(f"--input={write_txt(tmp_path / 'in.txt', stories[:40])}", "--tokenizer=bytes", out=tmp_path / "o")
    assert "token id 300 >= the tokenizer's vocab_size 257" in msg


# -----------------------------------------------------------------------------
# local files


@pytest.mark.parametrize("fmt", ["jsonl", "json", "parquet", "csv"])
def test_table_files_give_the_same_tokens_as_txt(tmp_path, stories, fmt):
    import datasets

    docs = stories[:60]
    txt_meta = run(tmp_path / "txt", f"--input={write_txt(tmp_path / 'in.txt', docs)}", "--tokenizer=bytes")
    table = datasets.Dataset.from_dict({"id": list(range(60)), "story": docs})
    path = str(tmp_path / f"in.{fmt}")
    {"jsonl": table.to_json, "json": table.to_json, "parquet": table.to_parquet, "csv": table.to_csv}[fmt](path)
    meta = run(tmp_path / fmt, f"--input={path}", "--tokenizer=bytes", "--text_column=story")
    for split in ("train", "val"):
        assert (tokens(tmp_path / fmt, split, meta) == tokens(tmp_path / "txt", split, txt_meta)).all()
    if fmt == "jsonl":
        msg = error_of(f"--input={path}", "--tokenizer=bytes", out=tmp_path / "o")
        assert "no column 'text'" in msg and "id, story" in msg and "--text_column" in msg


def test_folder_glob_default_name_and_blank_line_documents(tmp_path, monkeypatch, stories):
    corpus = tmp_path / "my-corpus"
    (corpus / "sub").mkdir(parents=True)
    write_txt(corpus / "b.txt", stories[30:60])
    write_txt(corpus / "sub" / "a.txt", stories[:30])  # sub/a.txt sorts after b.txt
    (corpus / "LICENSE").write_text("not a document")
    (corpus / "notes.md").write_text("ignored too")
    monkeypatch.chdir(tmp_path)
    prepare.main([f"--input={corpus}", "--tokenizer=bytes", "--num_proc=1"])
    with open("data/my-corpus/meta.json") as f:
        meta = json.load(f)
    train_docs, _ = split_like_prepare(stories[30:60] + stories[:30])
    enc = get_tokenizer("bytes")
    assert enc.decode(tokens("data/my-corpus", "train", meta)) == "".join(d + EOT for d in train_docs)
    meta = run(tmp_path / "g", f"--input={corpus}/**/*.txt", "--tokenizer=bytes")
    assert meta["train_documents"] == len(train_docs)
    assert prepare.input_name(f"{corpus}/**/*.txt") == "my-corpus" and prepare.input_name("x/input.txt") == "input"

    paragraphs = ["First one.\nStill the first.", "Second one.", "Third,\n  indented."] * 10
    (tmp_path / "p.txt").write_text("\n\n".join(paragraphs) + "\n \n\n")
    meta = run(tmp_path / "p", f"--input={tmp_path / 'p.txt'}", "--tokenizer=bytes", "--blank_line_docs=True")
    train_docs, _ = split_like_prepare(paragraphs)
    assert enc.decode(tokens(tmp_path / "p", "train", meta)) == "".join(d + EOT for d in train_docs)


def test_long_documents_are_tokenized_in_pieces_with_the_same_ids(tmp_path, monkeypatch, gpt2, stories):
    """Memory stays bounded for a document of any length (a book, a file of one line): it is read and tokenized in
    pieces, cut where GPT-2's tokenizer gives the same ids as for the whole text."""
    import datasets

    monkeypatch.setattr(prepare, "PIECE_CHARS", 300)
    book = "\n".join(stories[:40])  # ~30k characters, one document
    one_line = " ".join(s.replace("\n", " ") for s in stories[40:80])
    docs = [book, "A short one.", one_line] + stories[80:97]
    expected_train, _ = split_like_prepare(docs)
    expected = [t for d in expected_train for t in gpt2.encode_ordinary(d) + [gpt2.eot_token]]
    meta = run(tmp_path / "txt", f"--input={write_txt(tmp_path / 'in.txt', docs)}")
    assert tokens(tmp_path / "txt", "train", meta).tolist() == expected
    datasets.Dataset.from_dict({"text": docs}).to_json(str(tmp_path / "in.jsonl"))
    meta = run(tmp_path / "jsonl", f"--input={tmp_path / 'in.jsonl'}")
    assert tokens(tmp_path / "jsonl", "train", meta).tolist() == expected
    assert meta["train_documents"] == len(expected_train)


# -----------------------------------------------------------------------------
# scale and determinism


def test_same_bytes_for_any_num_proc_and_chunking(tmp_path, monkeypatch, gpt2, stories):
    path = write_txt(tmp_path / "in.txt", stories[:600])
    run(tmp_path / "one", f"--input={path}", "--num_proc=1")
    monkeypatch.setattr(prepare, "CHUNK_CHARS", 3000)  # many small tasks in flight at once
    run(tmp_path / "two", f"--input={path}", "--num_proc=2")
    one, two = files_of(tmp_path / "one"), files_of(tmp_path / "two")
    meta_one, meta_two = json.loads(one.pop("meta.json")), json.loads(two.pop("meta.json"))
    assert one == two and {**meta_one, "command": ""} == {**meta_two, "command": ""}


def test_max_docs_slices_each_split(tmp_path, stories):
    meta = run(tmp_path / "out", f"--input={write_txt(tmp_path / 'in.txt', stories[:300])}", "--tokenizer=bytes",
               "--max_docs=100")
    assert meta["train_documents"] + meta["val_documents"] == 100 and meta["val_documents"] == 5


# -----------------------------------------------------------------------------
# errors and failures: one line, and the prepared dataset is left as it was


def test_bad_input_is_a_one_line_error(tmp_path, stories):
    out = tmp_path / "out"
    assert "unknown --dataset=tinystory" in error_of("--dataset=tinystory", out=out)
    assert "no files match --input=" in error_of(f"--input={tmp_path}/*.jsonl", out=out)
    (tmp_path / "a.docx").write_text("x")
    assert "can't read" in error_of(f"--input={tmp_path / 'a.docx'}", out=out)
    few = write_txt(tmp_path / "few.txt", stories[:5])
    assert "5 documents, too few" in error_of(f"--input={few}", "--tokenizer=bytes", out=out)
    assert "N must be >= 257" in error_of(f"--input={few}", "--tokenizer=bpe:100", out=out)
    assert "no such file" in error_of(f"--input={few}", "--tokenizer=missing.json", out=out)
    assert "give one source" in error_of(f"--input={few}", "--dataset=synthetic_stories", out=out)
    assert "val_fraction" in error_of(f"--input={few}", "--val_fraction=0", out=out)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    assert "not UTF-8" in error_of(f"--input={tmp_path / 'latin1.txt'}", "--tokenizer=bytes", out=out)
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n{not json\n')
    assert "could not read" in error_of(f"--input={tmp_path / 'bad.jsonl'}", "--tokenizer=bytes", out=out)
    assert not os.path.exists(out)


def test_failed_or_interrupted_run_leaves_the_prepared_dataset_alone(tmp_path, monkeypatch, stories):
    out = tmp_path / "out"
    run(out, f"--input={write_txt(tmp_path / 'in.txt', stories[:200])}", "--tokenizer=bytes")
    before = files_of(out)
    error_of(f"--input={write_txt(tmp_path / 'few.txt', stories[:3])}", "--tokenizer=bytes", out=out)
    assert files_of(out) == before

    calls = []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_encode(*args)

    real_encode = prepare.encode_chunk
    monkeypatch.setattr(prepare, "CHUNK_CHARS", 2000)
    monkeypatch.setattr(prepare, "encode_chunk", interrupted)
    msg = error_of(f"--input={write_txt(tmp_path / 'other.txt', stories[200:400])}", "--tokenizer=bytes", out=out)
    assert msg.startswith("interrupted:") and len(calls) == 3
    assert files_of(out) == before  # no staging folder left behind either


# -----------------------------------------------------------------------------
# nanoGPT's first step: characters, and a one-document source split by position


def test_char_tokenizer_round_trips_and_decodes_from_meta_alone(tmp_path, stories):
    out = tmp_path / "chars"
    meta = run(out, f"--input={write_txt(tmp_path / 'in.txt', stories[:50])}", "--tokenizer=char")
    chars = sorted(set("".join(stories[:50])))
    assert meta["tokenizer"] == "char" and meta["chars"] == "".join(chars)  # every character of the text, sorted
    assert meta["vocab_size"] == len(chars) + 1 and meta["eot_token"] == len(chars)  # then end-of-text
    enc = get_tokenizer("char", str(out))  # from meta.json alone, as sample.py reads out_dir
    train_docs, val_docs = split_like_prepare(stories[:50])
    for split, docs in (("train", train_docs), ("val", val_docs)):
        ids = tokens(out, split, meta).tolist()
        assert ids == [i for d in docs for i in [*enc.encode(d), enc.eot_token]]
        assert enc.decode(ids) == "".join(d + "<|endoftext|>" for d in docs)
    assert enc.encode("a b") == [chars.index("a"), chars.index(" "), chars.index("b")]
    with pytest.raises(ValueError, match="not in this character-level vocabulary"):
        enc.encode("\u00e9" if "\u00e9" not in chars else "\u2603")


def test_a_single_document_is_split_by_position_as_nanogpt_does(tmp_path):
    text = "".join(random.Random(0).choice("abcdefgh \n") for _ in range(10_001)).strip()
    path = tmp_path / "book.txt"
    path.write_text(text + "\n")
    meta = run(tmp_path / "book", f"--input={path}", "--tokenizer=char", "--val_fraction=0.1")
    enc = get_tokenizer("char", str(tmp_path / "book"))
    ids = enc.encode(text) + [enc.eot_token]
    cut = int(len(ids) * 0.9)  # nanoGPT: data[:int(n * 0.9)] trains, the rest is val
    assert tokens(tmp_path / "book", "train", meta).tolist() == ids[:cut]
    assert tokens(tmp_path / "book", "val", meta).tolist() == ids[cut:]
    assert (meta["train_tokens"], meta["val_tokens"]) == (cut, len(ids) - cut)


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_DATA, "tinyshakespeare")),
                    reason="tiny Shakespeare is in ../shared/data (not in a fresh clone)")
def test_tiny_shakespeare_gives_nanogpts_vocabulary_and_split(tmp_path):
    meta = run(tmp_path / "sc", f"--input={os.path.join(SHARED_DATA, 'tinyshakespeare', 'input.txt')}",
               "--tokenizer=char", "--val_fraction=0.1")
    # nanoGPT's data/shakespeare_char/prepare.py: 65 characters, 1,003,854 train and 111,540 val tokens
    assert len(meta["chars"]) == 65 and meta["vocab_size"] == 66
    assert (meta["train_tokens"], meta["val_tokens"]) == (1_003_854, 111_540)
