"""bench.py: its table and JSON carry what users pick a model and GPU by, and the reference check can fail."""

import json

from conftest import run_script

TINY = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=4", "--vocab_size=257",
        "--warmup_steps=1", "--timed_steps=3", "--generate_tokens=8", "--device=cpu"]


def test_bench_reports_training_and_generation_speed(tmp_path):
    path = tmp_path / "bench.json"
    # a loose noise margin: CI machines are shared; BENCHMARKS.md holds the measured ratio
    run_script("bench.py", *TINY, "--reference=True", "--noise=0.5", f"--json_path={path}")
    report = json.loads(path.read_text())
    ours, ref = report["results"]
    assert ours["model"] == "gpt" and ref["model"] == "reference" and ours["params"] == ref["params"]
    for key in ("train_tokens_per_sec", "ms_per_step", "flops_per_sec", "peak_mem_mb", "generate_tokens_per_sec"):
        assert ours[key] > 0, key
    assert ours["mfu"] is None  # no peak FLOP/s is known for a CPU: FLOP/s instead


def test_reference_check_fails_when_ours_is_slower():
    # --noise=-1 demands our step be twice as fast as the reference: impossible, so the check must fire
    proc = run_script("bench.py", *TINY, "--reference=True", "--noise=-1", check=False)
    assert proc.returncode != 0 and "slower than the reference" in proc.stderr
