"""train.py's options for better models at the same compute: Muon, data orders, the sequence-length curriculum,
the time-driven schedule and per-domain validation, each kept to what a user relies on (exact resume, constant
tokens per step, the log)."""

import os

import pytest
import torch

import model as model_module
from tests.helpers import read_log
from tests.test_train import losses_by_iter, train_args, train_in_process


@pytest.mark.parametrize("options", [
    ["--sampling=epoch"],
    ["--sampling=aligned", "--block_size_schedule=8:0.3,16:0.6"],
    ["--optimizer=muon", "--sampling=aligned", "--gradient_accumulation_steps=2"],
    ["--optimizer=muon", "--model=bdh", "--mlp_internal_dim_multiplier=4", "--sampling=epoch", "--muon_normuon=True"],
    ["--optimizer=muon", "--lr_schedule=trapezoid", "--muon_momentum_warmup=7", "--embedding_lr=0.02",
     "--head_lr=1e-3", "--scalar_lr=0.01", "--beta1=0.8", "--rope=True", "--norm=rmsnorm", "--mlp=relu2",
     "--qk_norm=True", "--tie_embeddings=False", "--zero_init=True", "--logit_softcap=15.0", "--x0_skip=True",
     "--value_embeds=True", "--bias=False", "--muon_normuon=True"],
], ids=["epoch", "aligned+curriculum", "muon+aligned+accumulation", "bdh+muon+epoch", "recipe"])
def test_each_option_resumes_bit_for_bit(tiny_dataset, tmp_path, monkeypatch, capsys, options):
    args = ["--eval_interval=5", "--log_interval=1", "--dropout=0.1", "--warmup_iters=2", "--learning_rate=3e-3",
            "--lr_decay_iters=10", *options]  # the same schedule for the run stopped at 5 as for the whole one
    train_in_process(monkeypatch, capsys, *train_args(tiny_dataset, tmp_path / "whole", *args, "--max_iters=10"))
    run = tmp_path / "stopped"
    train_in_process(monkeypatch, capsys, *train_args(tiny_dataset, run, *args, "--max_iters=5"))
    train_in_process(monkeypatch, capsys, *train_args(tiny_dataset, run, *args, "--max_iters=10",
                                                       "--init_from=resume"))
    whole = losses_by_iter(read_log(tmp_path / "whole"))
    assert sorted(whole) == list(range(1, 11))
    assert losses_by_iter(read_log(run)) == whole  # full-precision strings: bit for bit
    assert read_log(run)[-1]["val_loss"] == read_log(tmp_path / "whole")[-1]["val_loss"]


def test_the_curriculum_keeps_tokens_per_step_and_logs_its_stages(tiny_dataset, tmp_path, monkeypatch, capsys):
    shapes = []
    forward = model_module.GPT.forward

    def recording_forward(self, idx, targets=None, cache=None):
        if self.training:
            shapes.append(tuple(idx.shape))
        return forward(self, idx, targets, cache)

    monkeypatch.setattr(model_module.GPT, "forward", recording_forward)
    out = train_in_process(monkeypatch, capsys, *train_args(
        tiny_dataset, tmp_path, "--max_iters=10", "--log_interval=1", "--eval_interval=100",
        "--block_size_schedule=8:0.2,16:0.5", "--gradient_accumulation_steps=2"))
    # block_size 32, batch_size 4: 8 tokens x 16 rows for iterations 0-1, 16 x 8 for 2-4, then 32 x 4
    assert shapes == [(16, 8)] * 4 + [(8, 16)] * 6 + [(4, 32)] * 10  # two micro-steps per iteration
    assert all(b * t == 4 * 32 for b, t in shapes)  # the same tokens every micro-step
    rows = [r for r in read_log(tmp_path) if r["loss"]]
    assert [int(r["seq_len"]) for r in rows] == [8, 8, 16, 16, 16, 32, 32, 32, 32, 32]
    assert [int(r["tokens"]) for r in rows] == [i * 2 * 4 * 32 for i in range(1, 11)]
    assert "iteration 2: sequences of 16 tokens, 8 per micro-step" in out


def test_eval_sets_log_a_column_each_and_the_first_drives_val_loss(tiny_dataset, tmp_path, monkeypatch, capsys):
    other = os.path.join(tiny_dataset, "train.bin")  # any token file with the same tokenizer beside its meta.json
    name = os.path.basename(tiny_dataset) + "_train"
    out = train_in_process(monkeypatch, capsys, *train_args(tiny_dataset, tmp_path, "--max_iters=4",
                                                             "--eval_interval=2", f"--eval_sets=val,{other}"))
    evals = [r for r in read_log(tmp_path) if r["val_loss"]]
    assert len(evals) == 3 and all(r[f"loss_{name}"] for r in evals)
    train_losses = [float(line.split("train loss ")[1].split(",")[0]) for line in out.splitlines()
                    if line.startswith("eval ")]
    # the same file, the same eval batches: the extra column is the train split's estimate, val_loss is val's
    assert [round(float(r[f"loss_{name}"]), 4) for r in evals] == train_losses
    assert [float(r["val_loss"]) for r in evals] != [float(r[f"loss_{name}"]) for r in evals]
    ckpt = torch.load(tmp_path / "best.pt", weights_only=True)
    assert ckpt["best_val_loss"] == min(float(r["val_loss"]) for r in evals)


def test_a_new_eval_set_on_resume_adds_its_column_to_the_log(tiny_dataset, tmp_path, monkeypatch, capsys):
    args = train_args(tiny_dataset, tmp_path, "--eval_interval=2", "--log_interval=1")
    train_in_process(monkeypatch, capsys, *args, "--max_iters=2")
    other = os.path.join(tiny_dataset, "train.bin")
    train_in_process(monkeypatch, capsys, *args, "--max_iters=4", "--init_from=resume", f"--eval_sets=val,{other}")
    rows = read_log(tmp_path)
    column = f"loss_{os.path.basename(tiny_dataset)}_train"
    assert column in rows[0] and not rows[0][column] and rows[-1][column]  # old rows kept, padded
    assert losses_by_iter(rows).keys() == {1, 2, 3, 4}


def test_the_time_schedule_decays_over_the_budget_and_its_clock_survives_resume(tiny_dataset, tmp_path,
                                                                                 monkeypatch, capsys):
    args = train_args(tiny_dataset, tmp_path, "--max_iters=100000", "--eval_interval=100000", "--log_interval=5",
                      "--lr_schedule_over=time", "--warmup_iters=0", "--learning_rate=1e-3", "--min_lr=0")
    out = train_in_process(monkeypatch, capsys, *args, "--max_minutes=0.04")  # 2.4 s
    assert "time budget of 0.04 min" in out
    first = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert 2.4 <= first["train_seconds"] < 10
    lrs = [float(r["lr"]) for r in read_log(tmp_path) if r["lr"]]
    assert lrs == sorted(lrs, reverse=True) and lrs[0] > 0.9e-3 and lrs[-1] < 0.1e-3  # decayed by the budget's end
    # a longer budget on resume: the clock goes on from 2.4 s of 4.8, half way down the cosine, not from the top
    train_in_process(monkeypatch, capsys, *args, "--max_minutes=0.08", "--init_from=resume")
    second = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert 4.8 <= second["train_seconds"] < first["train_seconds"] + 10
    resumed = [float(r["lr"]) for r in read_log(tmp_path) if r["lr"]][len(lrs):]
    assert 0.2e-3 < resumed[0] < 0.8e-3 and resumed[-1] < 0.1e-3
