"""bench.py: its table and JSON carry what users pick a model and GPU by, and its checks can fail."""

import json

from tests.helpers import run_script

# one thread: a second costs tiny shapes more than it gives, and the test machine may be running other jobs
TINY = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=4", "--vocab_size=257",
        "--warmup_steps=1", "--timed_steps=3", "--generate_tokens=8", "--device=cpu", "--threads=1"]
TINY_BDH = ["--mlp_internal_dim_multiplier=4"]  # N = 4 * 32 / 2 = 64 neurons per head
SPEED_KEYS = ("train_tokens_per_sec", "ms_per_step", "flops_per_token", "flops_per_sec", "peak_mem_mb", "saved_mb",
              "generate_tokens_per_sec", "generate_nocache_tokens_per_sec")


def test_bench_reports_training_and_generation_speed_of_every_model(tmp_path):
    path = tmp_path / "bench.json"
    # a loose noise margin: CI machines are shared; BENCHMARKS.md holds the measured ratio
    run_script("bench.py", *TINY, *TINY_BDH, "--model=all", "--reference=True", "--noise=0.5", f"--json={path}")
    report = json.loads(path.read_text())
    gpt, bdh, ref = report["results"]
    assert (gpt["model"], bdh["model"], ref["model"]) == ("gpt", "bdh", "reference")
    assert gpt["params"] == ref["params"] and gpt["flops_per_token"] == ref["flops_per_token"]
    for row in (gpt, bdh):
        for key in SPEED_KEYS:
            assert row[key] > 0, (row["model"], key)
        assert row["mfu"] is None  # no peak FLOP/s is known for a CPU: FLOP/s instead
        assert row["seq_len"] == 32 and row["batch_size"] == 4
        assert abs(row["flops_per_sec"] - row["flops_per_token"] * row["train_tokens_per_sec"]) < 1e-6 * row[
            "flops_per_sec"]
    # each model got the shape keys, and only the fields its config class has
    assert bdh["model_args"]["n_embd"] == gpt["model_args"]["n_embd"] == 32
    assert "block_size" not in bdh["model_args"] and "mlp_internal_dim_multiplier" not in gpt["model_args"]
    assert bdh["model_args"]["dropout"] == 0.1 and gpt["model_args"]["dropout"] == 0.0  # each model's own default
    assert bdh["attention_form"] == "direct" and gpt["attention_form"] is None
    assert report["reference_ratio"]["compile_False"] > 0.5  # steps in turn: the check's ratio, within --noise


def test_bench_bdh_alone_takes_bdh_config_defaults(tmp_path):
    path = tmp_path / "bench.json"
    tiny = [a for a in TINY if not a.startswith(("--n_embd", "--n_head"))]
    run_script("bench.py", *tiny, "--model=bdh", "--mlp_internal_dim_multiplier=2", f"--json={path}")
    (bdh,) = json.loads(path.read_text())["results"]
    assert bdh["model"] == "bdh" and bdh["model_args"]["n_embd"] == 256 and bdh["model_args"]["n_head"] == 4
    assert all(bdh[key] > 0 for key in SPEED_KEYS)


def test_reference_check_fails_when_ours_is_slower():
    # --noise=-1 demands our step be twice as fast as the reference: impossible, so the check must fire
    proc = run_script("bench.py", *TINY, "--reference=True", "--noise=-1", check=False)
    assert proc.returncode != 0 and "slower than the reference" in proc.stderr


# large enough that the claims hold by a margin (N = 1024: recomputation is compute-bound; chunks of 64 at T = 1024),
# small enough for seconds on one CPU thread
CHECK = ["--model=bdh", "--bdh_check=True", "--device=cpu", "--threads=1", "--n_layer=1", "--n_head=2",
         "--n_embd=64", "--mlp_internal_dim_multiplier=32", "--vocab_size=2048", "--batch_size=1", "--dropout=0.0",
         "--chunk_size=64", "--bdh_check_T=128", "--bdh_check_long_T=1024", "--warmup_steps=1", "--timed_steps=3"]


def test_bdh_check_passes(tmp_path):
    path = tmp_path / "check.json"
    # a loose margin: parallel tests share the cores, and at T=128 auto and direct are the same computation, so
    # only noise separates them; the ratios measured in BENCHMARKS.md clear the real margins by far
    proc = run_script("bench.py", *CHECK, "--noise=0.5", f"--json={path}")
    check = json.loads(path.read_text())["bdh_check"]
    assert check["passed"] and len(check["ratios"]) == 5 and all(r["ok"] for r in check["ratios"])
    assert {(r["T"], r["form"]) for r in check["rows"]} == {(128, "auto"), (128, "direct"), (1024, "chunked"),
                                                            (1024, "direct")}
    assert check["generation"]["new_tokens"] == 256
    assert "n_layer 1, n_head 2, n_embd 64, N 1024" in proc.stdout  # the shape it used
    assert "autograd saves for backward" in check["memory_measure"]


def test_bdh_check_fails_when_a_ratio_falls_short():
    # --noise=-1 demands every form twice as fast as it can be: the check must fire, in one line
    proc = run_script("bench.py", *TINY, *TINY_BDH, "--model=bdh", "--bdh_check=True", "--bdh_check_T=32",
                      "--bdh_check_long_T=64", "--bdh_check_new_tokens=8", "--noise=-1", check=False)
    error = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode != 0 and error.startswith("error: (a) T=32 step time direct/auto is")


def test_generate_curve_times_each_position_with_and_without_cache(tmp_path):
    path = tmp_path / "curve.json"
    run_script("bench.py", *TINY, *TINY_BDH, "--model=all", "--generate_curve=64", f"--json={path}")
    rows = json.loads(path.read_text())["generate_curve"]
    assert [(r["model"], r["position"]) for r in rows] == [(m, p) for m in ("gpt", "bdh") for p in (8, 16, 32, 64)]
    assert all(r["ms_per_token_cache"] > 0 and r["ms_per_token_nocache"] > 0 for r in rows)


def test_bench_on_a_prepared_dataset_takes_its_tokens_and_vocabulary(tmp_path, tiny_dataset):
    path = tmp_path / "bench.json"
    args = [a for a in TINY if not a.startswith("--vocab_size")]
    run_script("bench.py", *args, f"--dataset={tiny_dataset}", "--vocab_size=50257", f"--json={path}")
    report = json.loads(path.read_text())
    assert report["config"]["vocab_size"] == 257  # the data's, not the flag's: its ids must fit the model
    assert report["results"][0]["model_args"]["vocab_size"] == 257
