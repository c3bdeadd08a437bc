"""studies/gpu_check.py: its quick run passes every stage on a CPU, so the GPU command never rots; its runner reports
a stage that raises, hangs or fails a check, and runs the stages after it; bench.py takes every model field that
gpu_check passes it from a config file."""

import dataclasses
import json
import os
import runpy
import subprocess
import sys
import time

from configurator import config_keys
from model import BDHConfig, GPTConfig
from tests.helpers import REPO, run_script

sys.path.insert(0, os.path.join(REPO, "studies"))
import gpu_check  # noqa: E402


def test_quick_cpu_run_passes_every_stage_in_under_a_minute(tmp_path):
    out, tmp = tmp_path / "check", tmp_path / "tmp"
    tmp.mkdir()
    t0 = time.monotonic()
    proc = run_script("studies/gpu_check.py", "--device=cpu", "--quick=True", f"--out_dir={out}",
                      env={**os.environ, "TMPDIR": str(tmp)}, timeout=300)
    seconds = time.monotonic() - t0
    summary = json.loads((out / "summary.json").read_text())
    stages = summary["stages"]
    assert list(stages) == [name for name, _, _ in gpu_check.STAGES]
    assert all(s["status"] == "ok" for s in stages.values()), proc.stdout[-4000:]
    assert seconds < 60, seconds  # the promise for --quick on a CPU
    assert summary["machine"]["device"] == "cpu" and summary["machine"]["sdpa_backend"] == "flash"  # torch's CPU one
    for stage in ("train_bf16", "train_fp16"):
        for name in ("gpt", "bdh"):
            run = stages[stage][name]
            assert run["val_loss_last"] < run["val_loss_first"]
            assert run["resume"] == {"from_iter": 4, "steps": 4, "bit_exact_steps": 4, "max_rel_diff": 0.0}
        assert stages[stage]["gpt"]["config"] == "config/tinystories_gpt.py"
    assert stages["train_fp16"]["gpt"]["loss_scale"] == 65536.0  # GradScaler's state, read from the checkpoint
    assert stages["train_bf16"]["gpt"]["sample"].startswith("Once upon a time")
    for row in stages["bench_gpt2"]["rows"] + stages["bench_configs"]["gpt"]["rows"]:
        assert row["tokens_per_sec"] > 0 and row["compile"] is False  # a CPU: eager only
    assert [r["T"] for r in stages["bdh"]["forms"]] == [16, 32, 64]
    assert stages["bdh"]["bdh_speed_1"]["rows"]["ours"]["ms_per_step"] > 0
    assert set(stages["generate"]["gpt_ms_per_token"]["cache"]) == {"8", "16", "32", "64"}
    # 8 tokens at most: a model 8 steps old may end the text at once (its end-of-text is the commonest token)
    assert stages["generate"]["serve"]["completion_tokens"] in range(9)
    # what comes back from a GPU machine: a few small files; the datasets and runs went to a temporary folder, gone
    files = sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs)
    assert files == sorted(["summary.json", "summary.md", *(f"logs/{name}.log" for name in stages)])
    assert sum(os.path.getsize(out / f) for f in files) < 2**20
    assert [f for f in os.listdir(tmp) if f.startswith("gpu_check-")] == []  # (torch keeps its caches there)
    text = (out / "summary.md").read_text()
    assert all(f"## {name}: ok" in text for name in stages)
    assert "7 of 7 stages ok" in proc.stdout


# -----------------------------------------------------------------------------
# the runner, with stages of the test's own


def stage_ok(check, figures):
    figures["value"] = 1


def stage_raises(check, figures):
    print("about to fail")
    figures["measured"] = 2  # figures recorded before the failure stay in the summary
    raise RuntimeError("this stage breaks")


def stage_hangs(check, figures):
    figures["child"] = subprocess.Popen(["sleep", "60"]).pid  # started by the stage: killed with it
    time.sleep(60)


def stage_fails_a_check(check, figures):
    figures.check("one plus one is three", 1 + 1 == 3)
    figures.check("one plus one is two", 1 + 1 == 2)  # a control: this one holds
    figures["after"] = True  # a check that fails doesn't stop the stage


def stage_reads_the_summary(check, figures):
    out = os.path.dirname(os.path.dirname(check.log))  # out/logs/<stage>.log
    with open(os.path.join(out, "summary.json")) as f:
        figures["seen"] = {name: s["status"] for name, s in json.load(f)["stages"].items()}


def quiet_check(tmp_path):
    (tmp_path / "work").mkdir(exist_ok=True)
    return gpu_check.Check("cpu", "cpu", "float32", False, True, str(tmp_path / "work"), "", "", "bytes")


def gone(pid, seconds=10):
    """Whether pid has ended (a zombie waiting for init counts) within seconds."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_a_stage_that_hangs_raises_or_fails_a_check_is_reported_and_the_next_stages_run(tmp_path):
    out = tmp_path / "out"
    stage_list = [("hangs", stage_hangs, 1), ("raises", stage_raises, 1), ("check", stage_fails_a_check, 1),
                  ("last", stage_reads_the_summary, 1)]
    t0 = time.monotonic()
    summary = gpu_check.run_stages(stage_list, str(out), 8.0, quiet_check(tmp_path), {"device": "cpu"})
    stages = summary["stages"]
    assert {name: s["status"] for name, s in stages.items()} == {"hangs": "timeout", "raises": "failed",
                                                                "check": "failed", "last": "ok"}
    # the hang got its quarter of the 8 s budget, and was killed with the process it started
    assert 1.5 < stages["hangs"]["seconds"] < 3.5 and time.monotonic() - t0 < 8
    assert "killed" in stages["hangs"]["error"] and gone(stages["hangs"]["child"])
    assert stages["raises"]["error"] == "RuntimeError: this stage breaks" and stages["raises"]["measured"] == 2
    assert "about to fail" in stages["raises"]["log_tail"]
    assert stages["check"]["error"] == "checks that did not hold: one plus one is three"
    assert stages["check"]["after"] is True
    # written after every stage: the last stage read the earlier ones' outcomes from the file
    assert stages["last"]["seen"] == {"hangs": "timeout", "raises": "failed", "check": "failed", "last": "running"}
    assert json.loads((out / "summary.json").read_text()) == summary
    text = (out / "summary.md").read_text()
    assert "## hangs: timeout" in text and "did not hold: one plus one is three" in text


def test_a_stage_that_would_start_past_the_budget_is_skipped_not_dropped(tmp_path):
    stage_list = [("hangs", stage_hangs, 1.0), ("after", stage_ok, 0.0)]  # nothing promised to the second
    summary = gpu_check.run_stages(stage_list, str(tmp_path / "out"), 1.5, quiet_check(tmp_path), {})
    after = summary["stages"]["after"]
    assert summary["stages"]["hangs"]["status"] == "timeout"
    assert after["status"] == "skipped" and "too little to start" in after["error"] and "value" not in after
    # the control: with time promised to it, the second stage runs
    summary = gpu_check.run_stages([("first", stage_ok, 0.5), ("after", stage_ok, 0.5)], str(tmp_path / "out2"), 1.5,
                                   quiet_check(tmp_path), {})
    after = summary["stages"]["after"]
    assert (after["status"], after["value"]) == ("ok", 1)


# -----------------------------------------------------------------------------
# bench.py as gpu_check uses it


def test_bench_takes_every_model_field_and_the_recipe_options_reach_the_model(tmp_path, monkeypatch):
    fields = {f.name for config in (GPTConfig, BDHConfig) for f in dataclasses.fields(config)}
    import bench

    assert fields <= set(config_keys(vars(bench))), fields - set(config_keys(vars(bench)))
    path = tmp_path / "bench.json"
    recipe = {"qk_norm": True, "tie_embeddings": False, "zero_init": True, "logit_softcap": 15.0, "x0_skip": True,
              "value_embeds": True, "mlp": "relu2"}
    monkeypatch.setattr(sys, "argv", ["bench.py", *gpu_check.flags(recipe), "--n_layer=2", "--n_head=2", "--n_embd=32",
                                      "--block_size=16", "--batch_size=2", "--vocab_size=257", "--warmup_steps=0",
                                      "--timed_steps=1", "--generate_tokens=2", "--device=cpu", "--threads=1",
                                      f"--json={path}"])
    runpy.run_path(os.path.join(REPO, "bench.py"), run_name="__main__")
    (row,) = json.loads(path.read_text())["results"]
    assert {k: row["model_args"][k] for k in recipe} == recipe
    # an untied head and value embeddings are embedding parameters: not in the non-embedding count
    assert row["non_embedding_params"] < row["params"] - 2 * 257 * 32
