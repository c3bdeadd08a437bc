"""A catalogue of bad inputs, per script: wrong values, damaged checkpoints, data that doesn't match its meta.json,
files that are missing. Each case must end with a non-zero exit status, no traceback, one line on stderr that names
the problem (`error: ...`, the last line: prepare.py's progress bar may stand above it), and every file the user had
(the run folder, the prepared data) byte for byte as before.

The cases run in children forked from a process that has imported torch once (helpers.ForkServer): ~0.3 s a case
instead of 3. test_the_fork_server_answers_as_a_real_process_does checks a sample against real processes."""

import hashlib
import json
import os
import shutil
import socket

import numpy as np
import pytest
import torch

from model import create_model
from tests.helpers import TINY_MODEL, ForkServer, run_script


@pytest.fixture(scope="module")
def trained_run(tiny_dataset, tmp_path_factory):
    """A finished tiny run: ckpt.pt, best.pt, ckpt_2.pt, ckpt_4.pt, config.json, meta.json, log.csv."""
    out = tmp_path_factory.mktemp("bad_inputs") / "run"
    run_script("train.py", f"--dataset={tiny_dataset}", f"--out_dir={out}", *TINY_MODEL, "--max_iters=4",
               "--eval_interval=2", "--keep_checkpoints=2")
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = ForkServer(str(tmp_path_factory.mktemp("fork_server")))
    yield server
    server.close()


@pytest.fixture
def user(tmp_path, tiny_dataset, trained_run):
    """A user's files, copies this test may damage: data/ (a prepared dataset) and run/ (a trained run)."""
    shutil.copytree(tiny_dataset, tmp_path / "data")
    shutil.copytree(trained_run, tmp_path / "run")
    return tmp_path


def snapshot(folder):
    """Every file under folder with the hash of its bytes."""
    return {os.path.join(d, f): hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
            for d, _, files in os.walk(folder) for f in files}


# -----------------------------------------------------------------------------
# ways to damage a user's files (each takes the test's folder)


def edit_meta(folder, **changes):
    """Change meta.json's fields; None removes one."""
    def edit(tmp):
        path = tmp / folder / "meta.json"
        meta = json.loads(path.read_text())
        meta.update(changes)
        path.write_text(json.dumps({k: v for k, v in meta.items() if v is not None}))
    return edit


def write(name, content):
    def setup(tmp):
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return setup


def truncate(*names, size=1000):
    """A copy that died mid-way: the first size bytes."""
    def setup(tmp):
        for name in names:
            with open(tmp / name, "r+b") as f:
                f.truncate(size)
    return setup


def remove(*names):
    def setup(tmp):
        for name in names:
            os.remove(tmp / name)
    return setup


def edit_checkpoint(**changes):
    def setup(tmp):
        ckpt = torch.load(tmp / "run/ckpt.pt", weights_only=True)
        for key, value in changes.items():
            if isinstance(value, dict):
                ckpt[key].update(value)
            else:
                ckpt[key] = value
        torch.save(ckpt, tmp / "run/ckpt.pt")
    return setup


def tokens(name, ids, extra_bytes=b""):
    return write(name, np.asarray(ids, dtype=np.uint16).tobytes() + extra_bytes)


def uint32_view(tmp):
    """meta.json says uint32 for the uint16 bins: an even number of tokens, so only the ids give it away."""
    edit_meta("data", dtype="uint32")(tmp)
    for split in ("train", "val"):
        path = tmp / "data" / f"{split}.bin"
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 4 * 4)


LISTENING = []  # sockets that keep their ports busy until the tests end


def busy_port(tmp):
    """A config file setting port to one that another program listens on."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    LISTENING.append(sock)
    (tmp / "busy.py").write_text(f"port = {sock.getsockname()[1]}\n")



def bdh_run(name, **model_args):
    """A BDH run at tmp/name: run/'s files, its ckpt.pt holding a tiny BDH (model_args: its fields changed)."""
    def setup(tmp):
        shutil.copytree(tmp / "run", tmp / name)
        ckpt = torch.load(tmp / name / "ckpt.pt", weights_only=True)
        args = {"vocab_size": 257, "n_layer": 2, "n_head": 2, "n_embd": 32, "mlp_internal_dim_multiplier": 4,
                "dropout": 0.0, "embedding_rank": 0, "gradient_checkpointing": False, **model_args}
        ckpt.update(model_type="bdh", model_args=args, model=create_model("bdh", args).state_dict())
        torch.save(ckpt, tmp / name / "ckpt.pt")
    return setup


def both(*setups):
    def setup(tmp):
        for step in setups:
            step(tmp)
    return setup

ALL_CHECKPOINTS = ("run/ckpt.pt", "run/ckpt_2.pt", "run/ckpt_4.pt", "run/best.pt")

# -----------------------------------------------------------------------------
# the catalogue: (script, arguments, setup or None, text the error line must hold). In arguments {tmp} is the
# test's folder, holding data/ and run/.

TRAIN = ["--dataset={tmp}/data", "--out_dir={tmp}/new", *TINY_MODEL, "--max_iters=2"]
RESUME = ["--dataset={tmp}/data", "--out_dir={tmp}/run", *TINY_MODEL, "--max_iters=8", "--init_from=resume"]
SAMPLE = ["--out_dir={tmp}/run", "--device=cpu", "--max_new_tokens=5", "--num_samples=1"]
EVAL = ["--out_dir={tmp}/run", "--device=cpu"]
SERVE = ["--out_dir={tmp}/run", "--device=cpu", "--port=0"]  # each case fails before serving
EXPORT = ["--out_dir={tmp}/run", "--hf_dir={tmp}/hf"]
BENCH = ["--dataset={tmp}/data", "--device=cpu", "--n_layer=1", "--n_head=2", "--n_embd=32", "--block_size=16",
         "--batch_size=2", "--warmup_steps=0", "--timed_steps=1", "--generate_tokens=2"]
TEXT = "Once upon a time there was a cat.\n<|endoftext|>\nThe dog ran home.\n<|endoftext|>\n" * 50
MERGE = ["--runs={tmp}/bdh,{tmp}/bdh", "--out_dir={tmp}/merged"]  # a later --runs or --out_dir replaces these
PREPARE = ["--input={tmp}/corpus.txt", "--out_dir={tmp}/data", "--tokenizer=bytes", "--num_proc=1"]
GPU_CHECK = ["--out_dir={tmp}/check", "--device=cpu", "--quick=True"]  # each case fails before any stage
CORPUS = write("corpus.txt", TEXT)

CASES = {
    "train": [
        # config values
        (["--n_head=5", "--n_embd=64"], None, "n_embd=64 must be a multiple of n_head=5"),
        (["--n_head=5", "--n_embd=64"], None, "e.g. n_head=4 or n_embd=65"),
        (["--n_embed=64"], None, "unknown config key 'n_embed'; did you mean n_embd"),
        (["--batch_size=big"], None, "--batch_size='big' is text, but batch_size takes a whole number"),
        (["--rope=True", "--n_embd=34"], None, "rope rotates pairs of dimensions"),
        (["--n_kv_head=3"], None, "n_head=2 must be a multiple of n_kv_head=3"),
        (["--model=bdh", "--n_head=3", "--mlp_internal_dim_multiplier=1"], None, "N = mlp_internal_dim_multiplier"),
        (["--n_layer=0"], None, "n_layer=0 must be a whole number >= 1"),
        (["--n_layer=2.5"], None, "--n_layer=2.5 is a number, but n_layer takes a whole number"),
        (["--batch_size=0"], None, "--batch_size=0 must be a number > 0"),
        (["--block_size=-8"], None, "--block_size=-8 must be a number > 0"),
        (["--gradient_accumulation_steps=0"], None, "--gradient_accumulation_steps=0 must be a number > 0"),
        (["--eval_interval=0"], None, "--eval_interval=0 must be a number > 0"),
        (["--learning_rate=-0.1"], None, "--learning_rate=-0.1 must be a number >= 0"),
        (["--beta2=1.5"], None, "--beta2=1.5 must be a number at least 0 and below 1"),
        (["--dropout=1.0"], None, "dropout=1.0 must be at least 0 and below 1"),
        (["--norm=batchnorm"], None, "norm='batchnorm': choose one of layernorm, rmsnorm"),
        (["--mlp=relu"], None, "mlp='relu': choose one of gelu, gelu_tanh, swiglu"),
        (["--model=transformer"], None, "unknown model 'transformer'; choose one of gpt, bdh"),
        (["--dtype=float8"], None, "--dtype='float8'; use auto, float32, bfloat16 or float16"),
        (["--device=gpu"], None, "--device='gpu'; use auto, cpu, cuda, cuda:<index> or mps"),
        (["--device=cuda"], None, "no CUDA GPU is visible"),
        (["--compile=maybe"], None, "--compile='maybe' is text, but compile takes True or False"),
        (["--init_from=gpt5"], None, "--init_from='gpt5'; use scratch, resume, gpt2, gpt2-medium"),
        (["--total_batch_size=100"], None, "can't be met: use --total_batch_size=96"),
        (["--optimizer=sgd"], None, "--optimizer='sgd'; use one of adamw, muon"),
        (["--muon_momentum=1.2"], None, "--muon_momentum=1.2 must be a number at least 0 and below 1"),
        (["--sampling=shuffled"], None, "--sampling='shuffled'; use one of random, epoch, aligned"),
        (["--lr_schedule_over=tokens"], None, "--lr_schedule_over='tokens'; use one of iters, time"),
        (["--lr_schedule_over=time"], None, "decays over the time budget: set --max_minutes too"),
        (["--block_size_schedule=16-0.2"], None, "write stages as length:share, e.g. \"8:0.2,16:0.5\""),
        (["--block_size_schedule=12:0.2"], None, "12 must be shorter than --block_size=32 and divide it, e.g. 16"),
        (["--block_size_schedule=16:0.5,8:0.7"], None, "lengths and shares must grow"),
        (["--block_size_schedule=16:1.5"], None, "lengths and shares must grow, shares between 0 and 1"),
        (["--eval_sets=val,{tmp}/nope.bin"], None, "--eval_sets: no token file {tmp}/nope.bin"),
        (["--eval_sets=val,{tmp}/c4/val.bin"], write("c4/val.bin", b"\0" * 200), "{tmp}/c4/val.bin needs a meta.json "
         "beside it with tokenizer 'bytes' (the training data's)"),
        (["--eval_sets="], None, "--eval_sets is empty; give at least 'val'"),
        (["--lerning_rate=0.1"], None, "unknown config key 'lerning_rate'; did you mean learning_rate"),
        (["--max_iters"], None, "argument '--max_iters' must look like --key=value"),
        (["config/nope.py"], None, "cannot read config file 'config/nope.py'"),
        (["{tmp}/typo.py"], write("typo.py", "lerning_rate = 1e-3\n"), "unknown config key 'lerning_rate' in"),
        (["{tmp}/bad.py"], write("bad.py", "batch_size = = 3\n"), "bad.py line 1: SyntaxError"),
        (["{tmp}/bad.py"], write("bad.py", "batch_size = n_batch * 2\n"), "NameError: name 'n_batch' is not defined"),
        # data
        (["--dataset=nope"], None, "no prepared dataset 'nope'"),
        (["--dataset=nope"], None, "prepare it first: python prepare.py --dataset=nope"),
        ([], write("data/meta.json", "{"), "meta.json is not valid JSON"),
        ([], write("data/meta.json", "[1, 2]"), "meta.json has no tokenizer, vocab_size, dtype"),
        ([], edit_meta("data", vocab_size=None), "meta.json has no vocab_size"),
        ([], edit_meta("data", vocab_size="257"), "vocab_size '257' is not a whole number"),
        ([], edit_meta("data", dtype="int8"), "dtype 'int8' is not uint16 or uint32"),
        ([], edit_meta("data", eot_token=300), "eot_token 300 is not a token id below vocab_size 257"),
        ([], edit_meta("data", max_token_id=300), "max_token_id 300 is not a token id below vocab_size 257"),
        ([], edit_meta("data", vocab_size=120, eot_token=None), "token id 256, but meta.json's vocab_size is 120"),
        ([], uint32_view, "token id"),
        ([], tokens("data/train.bin", range(200), b"x"), "has 401 bytes, not a whole number of uint16 tokens"),
        ([], tokens("data/val.bin", [1] * 10), "val.bin holds 10 tokens, fewer than block_size + 1 = 33"),
        ([], remove("data/val.bin"), "val.bin is missing"),
        # checkpoints and run folders
        (["--out_dir={tmp}/run"], None, "holds best.pt, ckpt.pt, ckpt_2.pt, ckpt_4.pt; continue with --init_from="),
        (["--out_dir={tmp}/run"], remove("run/ckpt.pt", "run/ckpt_2.pt", "run/ckpt_4.pt"), "holds best.pt;"),
        (["--out_dir={tmp}/file"], write("file", "not a folder"), "is a file, not a folder"),
    ],
    "resume": [  # train.py --init_from=resume (a damaged ckpt.pt alone is no error: test_train.py's fallback test)
        (["--out_dir={tmp}/empty"], None, "no checkpoint to resume in"),
        ([], truncate(*ALL_CHECKPOINTS), "can be resumed: {tmp}/run/ckpt.pt is damaged or not a checkpoint"),
        (["--n_layer=3"], None, "trained with n_layer=2, this run asks for n_layer=3"),
        (["--model=bdh"], None, "holds a gpt model, not bdh"),
        (["--optimizer=muon"], None, "was trained with --optimizer=adamw, this run asks for muon"),
        (["--sampling=epoch"], None, "data order is sampling='random', this run asks for 'epoch'; resume with"),
        ([], edit_meta("data", tokenizer="gpt2"), "was trained on tokenizer 'bytes', dataset"),
        ([], edit_meta("data", vocab_size=300), "has vocab_size 257 but dataset"),
        ([], lambda tmp: [torch.save({"model": {}}, tmp / name) for name in ALL_CHECKPOINTS], "is incomplete"),
    ],
    "sample": [
        (["--out_dir={tmp}/nope"], None, "no checkpoint at"),
        ([], truncate("run/ckpt.pt"), "ckpt.pt is damaged or not a checkpoint"),
        ([], truncate("run/ckpt.pt"), "try --checkpoint={tmp}/run/ckpt_4.pt or --checkpoint={tmp}/run/ckpt_2.pt or "
                                      "--checkpoint=best"),
        ([], write("run/ckpt.pt", b""), "ckpt.pt is damaged or not a checkpoint"),
        ([], write("run/ckpt.pt", b"PK\x03\x04 not really a zip"), "ckpt.pt is damaged or not a checkpoint"),
        ([], lambda tmp: torch.save({"weights": torch.ones(2)}, tmp / "run/ckpt.pt"), "is incomplete"),
        ([], lambda tmp: torch.save({"f": print}, tmp / "run/ckpt.pt"), "is damaged or not a checkpoint"),
        ([], edit_checkpoint(model_args={"n_embd": 64}), "does not match its model_args"),
        ([], edit_checkpoint(model_args={"n_head": 5}), "n_embd=32 must be a multiple of n_head=5"),
        ([], edit_checkpoint(model_args={"flash": True}), "gpt has no field flash"),
        ([], edit_checkpoint(model_type="rnn"), "unknown model 'rnn'"),
        ([], remove("run/meta.json"), "meta.json is missing"),
        ([], write("run/meta.json", "nonsense"), "meta.json is not valid JSON"),
        ([], edit_meta("run", vocab_size=300), "the checkpoint and meta.json come from different runs"),
        (["--checkpoint={tmp}/other.pt"], None, "no checkpoint at"),
        (["--checkpoint=best"], truncate("run/best.pt"), "best.pt is damaged"),
        (["--top_p=0"], None, "--top_p=0.0 must be above 0 and at most 1"),
        (["--temperature=-1"], None, "--temperature=-1.0 must be a number >= 0"),
        (["--num_samples=0"], None, "--num_samples=0 must be a number > 0"),
        (["--top_k=-5"], None, "--top_k=-5 must be a number >= 0"),
        (["--start=FILE:{tmp}/none.txt"], None, "can't read the prompt"),
        (["--start=FILE:{tmp}/p.txt"], write("p.txt", b"\xff\xfe\x00bad"), "can't read the prompt"),
        (["--temprature=0.5"], None, "did you mean temperature"),
        (["--device=cuda:7"], None, "--device=cuda:7 but no CUDA GPU is visible"),
        (["--validate=xml"], None, "--validate='xml': use json, python or module:function"),
        (["--validate=no_such_module:check"], None, "can't import no_such_module (ModuleNotFoundError"),
        (["--validate=json:nope"], None, "--validate=json:nope: json has no function nope"),
        (["--quantize=int4"], None, "--quantize='int4'; use int8 (int8 weights on a CPU) or leave it empty"),
        (["--quantize=int8", "--device=cuda"], None, "--quantize=int8 runs on the CPU (PyTorch's int8 kernels"),
        (["--quantize=int8", "--dtype=bfloat16"], None, "computes around its int8 products in float32"),
    ],
    "serve": [
        (["--out_dir={tmp}/nope"], None, "no checkpoint at"),
        ([], truncate("run/ckpt.pt"), "ckpt.pt is damaged or not a checkpoint"),
        ([], remove("run/meta.json"), "meta.json is missing"),
        (["--out_dir={tmp}/run,{tmp}/run"], None, "--out_dir names two runs called 'run'"),
        (["--out_dir=,"], None, "--out_dir names no run"),
        (["--port=70000"], None, "--port=70000 must be a whole number from 0 to 65535"),
        (["--port=-1"], None, "--port=-1 must be a whole number from 0 to 65535"),
        (["--port=http"], None, "--port='http' is text, but port takes a whole number"),
        (["{tmp}/busy.py"], busy_port, "on 127.0.0.1 is in use; choose another --port (0: any free one)"),
        (["--host="], None, "--host='' would listen on every network interface"),
        (["--max_tokens=0"], None, "--max_tokens=0 must be a number > 0"),
        (["--max_tokens=5000"], None, "--max_tokens=5000 is above --max_tokens_limit=2048"),
        (["--validate=no_such_module:check"], None, "can't import no_such_module"),
        (["--prot=8000"], None, "unknown config key 'prot'; did you mean port"),
        (["--max_concurrent=0"], None, "--max_concurrent=0 must be a number > 0"),
        (["--request_timeout=0"], None, "--request_timeout=0.0 must be a number > 0"),
        (["--device=cuda"], None, "no CUDA GPU is visible"),
        (["--quantize=int8", "--device=cuda"], None, "--quantize=int8 runs on the CPU"),
    ],
    "eval": [
        ([], truncate("run/ckpt.pt"), "ckpt.pt is damaged or not a checkpoint"),
        (["--eval_sets={tmp}/nope.bin"], None, "no eval set"),
        (["--eval_sets={tmp}/odd.bin"], write("odd.bin", b"x" * 101), "not a whole number of uint16 tokens"),
        (["--eval_sets={tmp}/big.bin"], tokens("big.bin", [1000] * 100), "holds token id 1000"),
        (["--eval_sets={tmp}/short.bin"], tokens("short.bin", [1] * 10), "fewer than block_size + 1 = 33"),
        (["--compare={tmp}/run,{tmp}/nope"], None, "no checkpoint at"),
        (["--batch_size=0"], None, "--batch_size=0 must be a number > 0"),
        (["--eval_batches=-1"], None, "--eval_batches=-1 must be a number >= 0"),
        ([], remove("run/meta.json"), "meta.json is missing"),
        (["--checkpoint=best"], write("run/best.pt", b"\x00" * 64), "best.pt is damaged"),
        (["--quantize=int4"], None, "--quantize='int4'; use int8"),
        (["--eval_set=val"], None, "did you mean eval_sets"),
        # BDH tools (the run here is a GPT)
        (["--neurons=True"], None, "--neurons is for BDH runs; {tmp}/run holds a gpt model"),
        (["--by_position=100000"], None, "needs val documents of at least 100001 tokens; the longest in {tmp}/run"),
        (["--by_position=0"], None, "--by_position=0 must be a whole number > 0"),
        (["--by_position=-3"], None, "--by_position=-3 must be a whole number > 0"),
        (["--by_position=2.5"], None, "--by_position=2.5 must be a whole number > 0"),
        (["--neurons=True", "--by_position=8"], None, "--neurons reports on one run (--out_dir)"),
        (["--png={tmp}/p.png"], None, "--png and --json go with --neurons or --by_position"),
        (["--by_position=8", "--compare={tmp}/nope"], None, "no checkpoint at"),
    ],
    "prepare": [
        (["--input={tmp}/nope.txt"], None, "no files match --input="),
        ([], write("corpus.txt", ""), "too few to split into train and val"),
        ([], write("corpus.txt", b"\xff\xfe bad bytes"), "is not UTF-8 text"),
        (["--val_fraction=2"], CORPUS, "--val_fraction=2.0 must be between 0 and 1"),
        (["--num_proc=-1"], CORPUS, "must be >= 0"),
        (["--tokenizer=bpe:100"], CORPUS, "N must be >= 257"),
        (["--tokenizer={tmp}/tok.json"], CORPUS, "no such file"),
        (["--dataset=synthetic_stories"], CORPUS, "give one source"),
        (["--input={tmp}/table.csv"], write("table.csv", "a,b\n1,2\n"), "column 'text'"),
        (["--max_doc=5"], CORPUS, "did you mean max_docs"),
    ],
    "bench": [
        (["--model=xyz"], None, "--model='xyz'; choose gpt, bdh or all"),
        (["--attention_form=fast"], None, "--attention_form='fast'; choose auto, direct or chunked"),
        (["--dataset=nope"], None, "no prepared dataset 'nope'"),
        (["--dataset=nope"], None, "prepare it first: python prepare.py --dataset=nope"),
        (["--batch_size=0"], None, "--batch_size=0 must be a number > 0"),
        (["--timed_steps=0"], None, "--timed_steps=0 must be a number > 0"),
        (["--n_head=5", "--n_embd=64"], None, "n_embd=64 must be a multiple of n_head=5"),
        ([], write("data/meta.json", "{"), "meta.json is not valid JSON"),
        ([], tokens("data/train.bin", [5000] * 100), "holds token id 5000"),
        (["--device=cuda"], None, "no CUDA GPU is visible"),
        (["--n_layer=2.5"], None, "--n_layer=2.5 is a number, but n_layer takes a whole number"),
    ],
    "merge": [
        (["--runs={tmp}/bdh"], bdh_run("bdh"), "--runs='{tmp}/bdh': give two BDH run folders, --runs=A,B"),
        (["--runs={tmp}/bdh,{tmp}/nope"], bdh_run("bdh"), "no checkpoint at {tmp}/nope/ckpt.pt"),
        (["--runs={tmp}/bdh,{tmp}/run"], bdh_run("bdh"), "{tmp}/run holds a gpt model; merge.py merges BDH runs"),
        (["--runs={tmp}/bdh,{tmp}/wide"], both(bdh_run("bdh"), bdh_run("wide", n_embd=64)),
         "{tmp}/bdh has n_embd=32, {tmp}/wide has n_embd=64: merge.py merges runs of one shape"),
        (["--runs={tmp}/bdh,{tmp}/deep"], both(bdh_run("bdh"), bdh_run("deep", n_layer=3)), "n_layer=2, {tmp}/deep"),
        (["--runs={tmp}/bdh,{tmp}/chars"], both(bdh_run("bdh"), bdh_run("chars"), edit_meta("chars", tokenizer="char")),
         "have different tokenizers ('bytes', 'char'): merged neurons must read the same tokens"),
        ([], both(bdh_run("bdh"), write("merged/ckpt.pt", "a checkpoint")), "merged holds ckpt.pt; merge into a new"),
        (["--out_dir={tmp}/bdh"], bdh_run("bdh"), "bdh holds best.pt, ckpt.pt, ckpt_2.pt, ckpt_4.pt; merge into a new"),
        (["--out_dir={tmp}/file"], both(bdh_run("bdh"), write("file", "x")), "--out_dir={tmp}/file is a file"),
        ([], both(bdh_run("bdh"), truncate("bdh/ckpt.pt")), "{tmp}/bdh/ckpt.pt is damaged or not a checkpoint"),
        ([], bdh_run("bdh", embedding_rank=8), "factorized embeddings (embedding_rank > 0) can't be averaged"),
        (["--data_dir={tmp}/nodata"], bdh_run("bdh"), "no prepared dataset '{tmp}/nodata'"),
        (["--data_dir={tmp}/data"], both(bdh_run("bdh"), edit_meta("data", tokenizer="char")),
         "--data_dir={tmp}/data has tokenizer 'char', the runs 'bytes'"),
        (["--pair_order=random"], bdh_run("bdh"), "--pair_order='random'; use frequency or concat"),
        (["--run={tmp}/bdh"], None, "unknown config key 'run'; did you mean runs"),
    ],
    "export": [  # nothing written: no {tmp}/hf, no .gguf, the folder in use as it was
        (["--out_dir={tmp}/bdh"], bdh_run("bdh"), "only GPT runs export to transformers"),
        (["--hf_dir={tmp}/used"], write("used/keep.txt", "mine"), "exists and is not an empty folder"),
        (["--hf_dir=", "--format=gguf", "--to={tmp}/m.gguf"], write("m.gguf", "mine"), "--to={tmp}/m.gguf exists"),
        (["--format=onnx"], None, "--format='onnx'; use hf (a transformers folder) or gguf"),
        (["--hf_dir="], None, "say where to write the export: --hf_dir=PATH"),
        (["--to={tmp}/m.gguf"], None, "--to is --format=gguf's file; a transformers export goes to --hf_dir=PATH"),
        (["--format=gguf"], None, "--hf_dir is --format=hf's folder; a GGUF export goes to --to=FILE.gguf"),
        (["--hf_dir=", "--format=gguf"], None, "say where to write the export: --to=FILE.gguf"),
        (["--hf_dir=", "--format=gguf", "--to={tmp}/nodir/m.gguf"], None, "its folder does not exist"),
        (["--hf_dir=", "--format=gguf", "--to={tmp}/m.gguf", "--gguf_type=q4"], None, "--gguf_type='q4'; use one of"),
        (["--out_dir={tmp}/nope"], None, "no checkpoint at"),
    ],
    "gpu_check": [
        (["--device=cuda"], None, "--device=cuda but no CUDA GPU is visible; use --device=cpu"),
        (["--budget_minutes=0"], None, "--budget_minutes=0.0 must be a number > 0"),
        (["--out_dir={tmp}/file"], write("file", "x"), "--out_dir={tmp}/file is a file, not a folder"),
        (["--out_dir={tmp}/done"], write("done/summary.json", "{}"), "already holds a summary (summary.json) of an "
         "earlier check; choose another --out_dir"),
        (["--work_dir={tmp}/file"], write("file", "x"), "--work_dir={tmp}/file is a file, not a folder"),
        (["--stages=bench,train"], None, "--stages: no stage 'bench'; choose from machine, bench_gpt2, bench_configs"),
        (["--stages=,"], None, "--stages is empty; give 'all' or some of machine, bench_gpt2"),
        (["--gpt_config={tmp}/nope.py"], None, "--gpt_config={tmp}/nope.py: no such config file"),
        (["--bdh_config={tmp}/bad.py"], write("bad.py", "n_layer = = 2\n"),
         "config file {tmp}/bad.py line 1: SyntaxError"),
        (["--tokenizer=bpe:100"], None, "--tokenizer='bpe:100'; use one of auto, gpt2, bytes"),
    ],
}
BASE = {"train": TRAIN, "resume": RESUME, "sample": SAMPLE, "eval": EVAL, "prepare": PREPARE, "bench": BENCH,
        "serve": SERVE, "merge": MERGE, "gpu_check": GPU_CHECK, "export": EXPORT}
PARAMS = [pytest.param(kind, args, setup, needle, id=f"{kind}-{i}-{needle[:40]}")
          for kind, cases in CASES.items() for i, (args, setup, needle) in enumerate(cases)]


def run_case(runner, kind, args, tmp):
    script = {"resume": "train.py", "gpu_check": "studies/gpu_check.py"}.get(kind, f"{kind}.py")
    return runner(script, *[a.format(tmp=tmp) for a in BASE[kind] + args])


@pytest.mark.parametrize("kind, args, setup, needle", PARAMS)
def test_bad_input_is_one_line_and_changes_nothing(kind, args, setup, needle, user, server):
    if setup:
        setup(user)
    before = snapshot(user)
    proc = run_case(server.run, kind, args, user)
    err = proc.stderr.strip()
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert errors == [err.splitlines()[-1]] and errors[0].startswith("error: "), err
    assert needle.format(tmp=user) in errors[0], err
    assert snapshot(user) == before  # not one byte of the user's files changed, none added, none removed


# the second case of three kinds: a training run, a script that loads a run, a server (each real process costs seconds)
SAMPLED = [p for p in PARAMS if p.id.split("-")[1] == "1" and p.id.split("-")[0] in ("train", "sample", "serve")]


@pytest.mark.parametrize("kind, args, setup, needle", SAMPLED)
def test_the_fork_server_answers_as_a_real_process_does(kind, args, setup, needle, user, server):
    if setup:
        setup(user)
    forked = run_case(server.run, kind, args, user)
    real = run_case(lambda *a: run_script(*a, check=False), kind, args, user)
    assert (forked.returncode, forked.stderr) == (real.returncode, real.stderr)
    assert real.returncode != 0


def test_the_catalogue_covers_every_script():
    counts = {kind: len(cases) for kind, cases in CASES.items()}
    assert set(counts) == {"train", "resume", "sample", "eval", "prepare", "bench", "serve", "merge",
                           "gpu_check", "export"}, counts
    assert min(n for kind, n in counts.items() if kind != "resume") >= 10, counts
