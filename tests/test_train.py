"""train.py for real runs: exact resume after a kill, atomic checkpoints, stopping rules, DDP, notebooks, configs."""

import glob
import os
import re
import resource
import runpy
import signal
import subprocess
import sys

import pytest
import torch

import hardware
from checkpoints import load_checkpoint, save_checkpoint
from dataloader import split_batch
from hardware import resolve_device
from tests.helpers import ONE_THREAD, REPO, TINY_MODEL, assert_one_line_error, read_log, run_script


def train_args(data, out, *extra):
    return [f"--dataset={data}", f"--out_dir={out}", *TINY_MODEL, *extra]


def losses_by_iter(rows):
    """The training loss of each logged iteration; a resumed run's rows replace the killed run's for the same iter."""
    return {int(r["iter"]): r["loss"] for r in rows if r["loss"]}


def test_resume_after_sigkill_is_bit_exact(tiny_dataset, tmp_path, monkeypatch, capsys):
    N = 12
    # dropout on: resume must restore the RNG as well as weights, optimizer and data order
    args = ["--max_iters=24", f"--eval_interval={N}", "--log_interval=1", "--dropout=0.1", "--learning_rate=3e-3",
            "--warmup_iters=4", "--checkpoint_minutes=0"]
    train_in_process(monkeypatch, capsys, *train_args(tiny_dataset, tmp_path / "whole", *args))  # (a process less)

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "train.py", *train_args(tiny_dataset, killed, *args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**ONE_THREAD, "PYTHONUNBUFFERED": "1"})  # one thread, as this process trains
    for line in proc.stdout:
        if line.startswith(f"eval {N}:"):  # ckpt.pt at iteration N is on disk before this eval line
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert torch.load(killed / "ckpt.pt", weights_only=True)["iter_num"] == N
    run_script("train.py", *train_args(tiny_dataset, killed, *args, "--init_from=resume"), env=ONE_THREAD)

    whole, resumed = losses_by_iter(read_log(tmp_path / "whole")), losses_by_iter(read_log(killed))
    assert sorted(whole) == list(range(1, 25))
    assert resumed == whole  # full-precision strings: bit for bit
    assert read_log(killed)[-1]["val_loss"] == read_log(tmp_path / "whole")[-1]["val_loss"]


def test_checkpoint_interrupted_mid_write_leaves_the_previous_one(tmp_path, monkeypatch):
    path = str(tmp_path / "ckpt.pt")
    save_checkpoint({"iter_num": 1, "model": {"w": torch.ones(3)}}, path)
    real_save = torch.save

    def dying_save(obj, f):
        real_save(obj, f)
        with open(f, "r+b") as fh:  # a half-written file, then the machine dies
            fh.truncate(10)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"iter_num": 2, "model": {"w": torch.zeros(3)}}, path)
    assert load_checkpoint(path, keys=["iter_num"])["iter_num"] == 1  # the loader train.py and sample.py use


def train_in_process(monkeypatch, capsys, *args):
    """train.py as `%run train.py args` runs it: in this process (no torch import to wait for); returns its stdout."""
    monkeypatch.setattr(sys, "argv", ["train.py", *args])
    runpy.run_path(os.path.join(REPO, "train.py"), run_name="__main__")
    return capsys.readouterr().out


def test_resume_falls_back_from_a_damaged_ckpt_pt_and_stays_exact(tiny_dataset, tmp_path, monkeypatch, capsys):
    args = ["--eval_interval=3", "--log_interval=1", "--keep_checkpoints=2", "--dropout=0.1"]
    train_in_process(monkeypatch, capsys, *train_args(tiny_dataset, tmp_path / "whole", *args, "--max_iters=9"))
    run = tmp_path / "damaged"
    train_in_process(monkeypatch, capsys, *train_args(tiny_dataset, run, *args, "--max_iters=6"))
    ckpt, best = (torch.load(run / name, weights_only=True) for name in ("ckpt.pt", "best.pt"))
    assert ckpt["best_val_loss"] == best["best_val_loss"] == float(read_log(run)[-1]["val_loss"])  # not a stale best
    with open(run / "ckpt.pt", "r+b") as f:  # a copy to Kaggle's output died halfway
        f.truncate(os.path.getsize(run / "ckpt.pt") // 2)
    damaged = (run / "ckpt.pt").read_bytes()

    out = train_in_process(monkeypatch, capsys, *train_args(tiny_dataset, run, *args, "--max_iters=6",
                                                             "--init_from=resume"))
    assert f"{run}/ckpt.pt is damaged or not a checkpoint" in out and f"resuming from {run}/ckpt_6.pt instead" in out
    assert (run / "ckpt.pt").read_bytes() == damaged  # nothing new to save: the damaged file stays for the user
    train_in_process(monkeypatch, capsys, *train_args(tiny_dataset, run, *args, "--max_iters=9", "--init_from=resume"))
    assert torch.load(run / "ckpt.pt", weights_only=True)["iter_num"] == 9  # replaced by a good one
    assert losses_by_iter(read_log(run)) == losses_by_iter(read_log(tmp_path / "whole"))  # bit for bit


def test_a_save_that_fails_keeps_the_previous_checkpoint(tiny_dataset, tmp_path, monkeypatch, capsys):
    args = train_args(tiny_dataset, tmp_path, "--eval_interval=2")
    train_in_process(monkeypatch, capsys, *args, "--max_iters=2")
    before = (tmp_path / "ckpt.pt").read_bytes()

    def small_disk():  # files may grow to 64 KB, a checkpoint can't: the write fails as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))

    proc = subprocess.run([sys.executable, "train.py", *args, "--max_iters=4", "--init_from=resume"], cwd=REPO,
                          capture_output=True, text=True, timeout=120, preexec_fn=small_disk)
    assert_one_line_error(proc, f"could not write {tmp_path}/ckpt.pt", "the previous one is intact")
    assert (tmp_path / "ckpt.pt").read_bytes() == before
    assert not os.path.exists(tmp_path / "ckpt.pt.tmp")


def test_early_stopping(tiny_dataset, tmp_path, monkeypatch, capsys):
    # learning rate 0: the val loss never improves after the first eval
    out = train_in_process(monkeypatch, capsys, *train_args(tiny_dataset, tmp_path, "--max_iters=1000",
                                                             "--eval_interval=5", "--early_stopping_patience=2",
                                                             "--learning_rate=0", "--decay_lr=False"))
    assert "early stopping" in out
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["iter_num"] == 10


def test_time_budget_saves_and_stops_then_resumes(tiny_dataset, tmp_path, monkeypatch, capsys):
    out = train_in_process(monkeypatch, capsys, *train_args(tiny_dataset, tmp_path, "--max_iters=1000000",
                                                             "--eval_interval=100000", "--max_minutes=0.03"))
    assert "time budget" in out
    it = torch.load(tmp_path / "ckpt.pt", weights_only=True)["iter_num"]
    assert 0 < it < 1000000
    train_in_process(monkeypatch, capsys, *train_args(tiny_dataset, tmp_path, "--init_from=resume",
                                                      f"--max_iters={it + 3}"))
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["iter_num"] == it + 3


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tiny_dataset, tmp_path):
    proc = subprocess.Popen([sys.executable, "train.py", *train_args(tiny_dataset, tmp_path, "--max_iters=1000000",
                                                                     "--eval_interval=100000", "--log_interval=5")],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**ONE_THREAD, "PYTHONUNBUFFERED": "1"})  # one thread, as this process trains
    for line in proc.stdout:
        if line.startswith("iter 10/"):
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stdout.read()
    assert proc.wait(timeout=60) == 0, rest
    assert "stopped by SIGTERM" in rest
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["iter_num"] >= 10


@pytest.mark.parametrize("world_size", range(1, 9))
def test_any_process_count_shares_the_default_step(world_size):
    # train.py's defaults: 1 micro-step of 32 sequences of 256 tokens = 8192 tokens per step
    micro_steps, sequences = split_batch(8192, world_size, 32, 256)
    tokens = micro_steps * world_size * sequences * 256
    assert 1 <= sequences <= 32 and micro_steps == 1
    assert abs(tokens - 8192) <= world_size * 256 / 2  # the nearest whole number of sequences per process
    assert tokens == 8192 or 8192 % (world_size * 256)  # exact wherever the step divides evenly


@pytest.mark.parametrize("tokens, world_size, batch_size, block_size, expected", [
    (40 * 12 * 1024, 8, 12, 1024, (5, 12)),  # nanoGPT's GPT-2 run: 40 micro-steps of 12 on one GPU, 5 each on 8
    (40 * 12 * 1024, 1, 12, 1024, (40, 12)),
    (524288, 8, 16, 2048, (2, 16)),  # nanochat's total_batch_size
    (48 * 256, 1, 32, 256, (2, 24)),  # a smaller micro-batch rather than an overshoot
    (37 * 256, 1, 32, 256, (2, 18)),  # 37 sequences can't be split in at most 32: the nearest, 36
])
def test_split_batch(tokens, world_size, batch_size, block_size, expected):
    assert split_batch(tokens, world_size, batch_size, block_size) == expected


def test_an_impossible_total_batch_size_says_what_would_work(tiny_dataset, tmp_path):
    proc = run_script("train.py", *train_args(tiny_dataset, tmp_path / "run", "--total_batch_size=100"), check=False)
    assert_one_line_error(proc, "--total_batch_size=100 can't be met: use --total_batch_size=96")
    assert not os.path.exists(tmp_path / "run")  # stopped before it wrote anything


def test_three_process_ddp_with_the_default_step_trains_evaluates_and_checkpoints(tiny_dataset, tmp_path):
    # the default step (1 micro-step x 4 sequences x 32 tokens = 128 tokens) can't be split evenly 3 ways: each
    # process takes the nearest share, 1 sequence, and says so
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=3", "train.py",
           *train_args(tiny_dataset, tmp_path, "--max_iters=6", "--eval_interval=3", "--log_interval=1")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)  # a hang fails, not blocks
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "tokens per iteration: 96 = 1 micro-steps x 3 processes x 1 sequences x 32 tokens" in proc.stdout
    assert "nearest to 128" in proc.stdout
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert ckpt["iter_num"] == 6 and len(ckpt["train_loader"]) == 3 and ckpt["tokens_per_iter"] == 96
    a, b = (s["generator"] for s in ckpt["train_loader"][:2])
    assert not torch.equal(a, b)  # every process draws its own data stream
    assert proc.stdout.count("eval 6:") == 1  # rank 0 alone logs
    rows = read_log(tmp_path)
    assert [r["iter"] for r in rows if r["loss"]] == ["1", "2", "3", "4", "5", "6"]


def test_run_as_in_a_notebook(tiny_dataset, tmp_path, monkeypatch):
    # `%run train.py --key=value` in a cell: IPython puts the script and its arguments in sys.argv
    monkeypatch.setattr(sys, "argv", ["train.py", *train_args(tiny_dataset, tmp_path / "a", "--max_iters=3")])
    handler = signal.getsignal(signal.SIGINT)
    runpy.run_path(os.path.join(REPO, "train.py"), run_name="__main__")
    assert torch.load(tmp_path / "a" / "ckpt.pt", weights_only=True)["iter_num"] == 3
    assert signal.getsignal(signal.SIGINT) is handler  # the kernel gets its Ctrl-C back

    # train.py's text pasted into a cell and edited there: sys.argv holds the kernel's own arguments
    monkeypatch.setattr(sys, "argv", ["/usr/lib/python3/site-packages/ipykernel_launcher.py", "-f",
                                      "/root/.local/share/jupyter/runtime/kernel-1234.json"])
    source = open(os.path.join(REPO, "train.py")).read()
    edits = {"dataset": repr(tiny_dataset), "out_dir": repr(str(tmp_path / "b")), "max_iters": "3", "n_layer": "1",
             "n_embd": "32", "n_head": "2", "block_size": "32", "batch_size": "4", "eval_iters": "1"}
    for key, value in edits.items():
        source, n = re.subn(rf"^{key} = .*$", f"{key} = {value}", source, count=1, flags=re.M)
        assert n == 1, key
    monkeypatch.chdir(REPO)
    exec(compile(source, "<cell>", "exec"), {"__name__": "__main__"})
    assert torch.load(tmp_path / "b" / "ckpt.pt", weights_only=True)["iter_num"] == 3


CONFIGS = sorted(glob.glob(os.path.join(REPO, "config", "*.py")))


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.basename(p) for p in CONFIGS])
def test_config_file_loads_and_trains_scaled_down(path, tiny_dataset, tmp_path, monkeypatch):
    text = open(path).read()
    set_keys = set(re.findall(r"^(\w+)\s*=", text, flags=re.M))
    scaled = ["--n_layer=1", "--n_head=2", "--n_embd=32"]
    scaled += ["--n_kv_head=1"] * ("n_kv_head" in set_keys) + ["--embedding_rank=8"] * ("embedding_rank" in set_keys)
    scaled += ["--mlp_internal_dim_multiplier=4"] * ("mlp_internal_dim_multiplier" in set_keys)
    scaled += ["--block_size_schedule=8:0.5"] * ("block_size_schedule" in set_keys)  # stages that divide 32
    if "init_from" in set_keys:  # a fine-tune: a tiny local GPT-2 folder stands in for the hub's
        transformers = pytest.importorskip("transformers", reason="init_from needs transformers")
        cfg = transformers.GPT2Config(vocab_size=257, n_positions=32, n_embd=32, n_layer=1, n_head=2)
        transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "gpt2")
        scaled += [f"--init_from={tmp_path / 'gpt2'}", "--batch_size=2"]
    monkeypatch.setattr(sys, "argv", ["train.py", path, *train_args(tiny_dataset, tmp_path, *scaled, "--max_iters=2",
                                                                    "--eval_interval=2", "--warmup_iters=1",
                                                                    "--gradient_accumulation_steps=1")])
    runpy.run_path(os.path.join(REPO, "train.py"), run_name="__main__")
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["iter_num"] == 2
    if os.path.basename(path).startswith("tinystories") and "bdh" not in path:
        # the TinyStories GPT configs keep to what transformers computes: their runs export, logits within 1e-4
        pytest.importorskip("transformers", reason="the export check needs transformers")
        import hf
        from checkpoints import load_model

        model, _, _ = load_model(str(tmp_path))
        theirs = hf.to_hf(model).eval()
        x = torch.randint(0, 257, (2, 32), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            assert (theirs(x).logits[..., :257] - model(x)[0][..., :257]).abs().max() < 1e-4


def test_non_finite_steps_are_skipped_then_stop_the_run(tiny_dataset, tmp_path, monkeypatch):
    # every gradient norm comes back NaN: no step may touch the weights, and the run stops with a message
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, max_norm: torch.tensor(float("nan")))
    monkeypatch.setattr(sys, "argv", ["train.py", *train_args(tiny_dataset, tmp_path, "--max_iters=50",
                                                              "--eval_interval=2", "--max_skipped_steps=3")])
    with pytest.raises(SystemExit, match="3 non-finite steps in a row") as e:
        runpy.run_path(os.path.join(REPO, "train.py"), run_name="__main__")
    assert "\n" not in str(e.value)
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)  # saved at iteration 2, from untouched weights
    torch.manual_seed(1337)  # train.py's seed: the initial weights
    from model import create_model

    fresh = create_model("gpt", ckpt["model_args"]).state_dict()
    assert all(torch.equal(fresh[k], v) for k, v in ckpt["model"].items())


@pytest.mark.parametrize("capability, asked, expect_dtype, expect_compile", [
    ((6, 0), ("auto", "auto"), "float16", False),  # P100: no bf16, no Triton
    ((7, 5), ("bfloat16", True), "float16", True),  # T4: bf16 only emulated -> fp16
    ((8, 0), ("auto", "auto"), "bfloat16", True),  # A100
    ((6, 0), ("float32", True), "float32", False),  # an explicit compile on a P100 is turned off
])
def test_auto_device_choices(capability, asked, expect_dtype, expect_compile, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Test GPU")
    monkeypatch.setattr(hardware, "_compile_problem", lambda cc: "old GPU" if cc < (7, 0) else None)
    device, device_type, dtype, compile = resolve_device("auto", *asked)
    assert (device, dtype, compile) == ("cuda", expect_dtype, expect_compile)


def test_compile_is_refused_below_compute_capability_7():
    assert "7.0" in hardware._compile_problem((6, 0))
