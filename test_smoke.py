"""End to end, as a user runs it: prepare -> train -> sample, and the one-line errors of bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.helpers import REPO, read_log, run_script
from tests.helpers import TINY_MODEL as TINY


def run(script, *args, check=True):
    return run_script(script, *args, check=check)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small synthetic_stories dataset and a model trained on it for 60 iterations."""
    tmp = tmp_path_factory.mktemp("smoke")
    data, out = str(tmp / "data"), str(tmp / "out")
    run("prepare.py", "--dataset=synthetic_stories", "--num_bytes=300000", f"--out_dir={data}")
    run("train.py", f"--dataset={data}", f"--out_dir={out}", "--max_iters=60", "--eval_interval=30",
        "--log_interval=10", "--learning_rate=3e-3", "--warmup_iters=5", *TINY)
    return data, out


def test_prepare_writes_bins_and_meta(trained):
    data, _ = trained
    meta = json.load(open(os.path.join(data, "meta.json")))
    assert meta["tokenizer"] == "bytes" and meta["vocab_size"] == 257 and meta["dtype"] == "uint16"
    for split in ("train", "val"):
        tokens = np.memmap(os.path.join(data, f"{split}.bin"), dtype=np.dtype(meta["dtype"]), mode="r")
        assert len(tokens) == meta[f"{split}_tokens"] > 0
        assert tokens.max() < meta["vocab_size"]
        assert (tokens == meta["eot_token"]).sum() == meta[f"{split}_documents"]  # one end-of-text per document
        assert tokens[-1] == meta["eot_token"]


def test_training_lowers_the_loss_and_writes_its_files(trained):
    _, out = trained
    for name in ("ckpt.pt", "best.pt", "config.json", "meta.json", "log.csv"):
        assert os.path.exists(os.path.join(out, name)), name
    val = [float(r["val_loss"]) for r in read_log(out) if r["val_loss"]]
    assert val[0] > 5.0 and val[-1] < val[0] - 1.0, val  # starts near ln(257) = 5.55 and drops
    ckpt = torch.load(os.path.join(out, "ckpt.pt"), weights_only=True)  # no pickled code in checkpoints
    assert ckpt["iter_num"] == 60 and not any(k.startswith(("_orig_mod.", "module.")) for k in ckpt["model"])


def test_sample_decodes_from_out_dir_alone(trained):
    _, out = trained
    proc = run("sample.py", f"--out_dir={out}", "--start=Once upon a time", "--num_samples=2",
               "--max_new_tokens=40", "--device=cpu")
    samples = proc.stdout.split("\nloaded ", 1)[1].split("\n", 1)[1].split("---------------")
    assert len(samples) == 3 and samples[2].strip() == ""  # two samples, each ended by the separator
    assert all(s.strip().startswith("Once upon a time") for s in samples[:2])
    assert max(len(s.strip()) for s in samples[:2]) > len("Once upon a time") + 10  # it wrote something


def test_sample_is_reproducible_and_the_kv_cache_changes_nothing(trained):
    _, out = trained
    args = (f"--out_dir={out}", "--num_samples=2", "--max_new_tokens=30", "--device=cpu", "--seed=5")
    def samples(*extra):
        return run("sample.py", *args, *extra).stdout.split("\nloaded ", 1)[1]

    cached = samples()
    assert cached == samples() and cached.count("---------------") == 2
    assert cached == samples("--use_cache=False")  # recomputing the context for every token: the same tokens


def test_eval_reports_loss_perplexity_and_bits_per_byte(trained):
    _, out = trained
    proc = run("eval.py", f"--out_dir={out}", "--device=cpu")
    row = proc.stdout.strip().splitlines()[-1].split()
    loss, ppl, bpb = map(float, row[1:4])
    assert row[0] == "val" and ppl == pytest.approx(2.718281828 ** loss, rel=1e-3) and 0 < bpb < 8


def test_prompt_from_a_file_and_interactive_prompts(trained, tmp_path):
    _, out = trained
    (tmp_path / "prompt.txt").write_text("Tom and his dog")
    proc = run("sample.py", f"--out_dir={out}", f"--start=FILE:{tmp_path / 'prompt.txt'}", "--num_samples=1",
               "--max_new_tokens=20", "--device=cpu")
    assert "Tom and his dog" in proc.stdout
    proc = subprocess.run([sys.executable, "sample.py", f"--out_dir={out}", "--interactive=True", "--num_samples=1",
                           "--max_new_tokens=10", "--device=cpu"], input="Lily\nBen\n\n", capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0 and "> Lily" in proc.stdout and "> Ben" in proc.stdout


def test_compare_gpt_and_bdh_runs_writes_the_table_and_the_loss_curves(trained, tmp_path):
    data, out = trained
    other = str(tmp_path / "other")
    run("train.py", f"--dataset={data}", f"--out_dir={other}", "--max_iters=10", "--eval_interval=5", *TINY,
        "--model=bdh", "--mlp_internal_dim_multiplier=4")
    png = tmp_path / "compare.png"
    proc = run("eval.py", f"--compare={out},{other}", "--eval_batches=3", "--max_new_tokens=10", "--device=cpu",
               f"--compare_png={png}")
    table = proc.stdout.split("run ", 1)[1].splitlines()
    assert table[1].startswith(out) and table[2].startswith(other)
    assert table[1].split()[1] == "gpt" and table[2].split()[1] == "bdh"
    tokens = [int(line.split()[4].replace(",", "")) for line in table[1:3]]
    assert tokens == [60 * 4 * 32, 10 * 4 * 32]  # iterations x batch_size x block_size
    assert proc.stdout.count("(seed 1337) ---") == 2  # a sample per run, same prompt and seed
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
