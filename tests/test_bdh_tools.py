"""eval.py's BDH tools: the neuron report counts what the layers really fire, and the loss by position equals the
direct computation (BDH's chunked form against its direct form; GPT's sliding windows against its plain forward).
Also: train.py logs BDH's active fractions per layer."""

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import eval_reports
from checkpoints import load_model
from dataloader import open_tokens
from tests.helpers import ONE_THREAD, TINY_MODEL, read_log, run_script
from tokenizer import get_tokenizer

T = 32  # the tiny runs' block_size (TINY_MODEL)


def val_tokens(tiny_dataset, meta):
    return open_tokens(os.path.join(tiny_dataset, "val.bin"), meta, T)


def record_neurons(model, x):
    """Every layer's (x_sparse, y_sparse) for the batch x, through the model's hook."""
    seen = []
    model.neuron_hook = lambda layer, xs, ys: seen.append((xs.clone(), ys.clone()))
    with torch.no_grad():
        model(x)
    model.neuron_hook = None
    return seen


def test_neuron_report_counts_what_the_layers_fire(tiny_runs, tiny_dataset):
    model, _, meta = load_model(tiny_runs["bdh"])
    tokens = val_tokens(tiny_dataset, meta)
    enc = get_tokenizer(meta["tokenizer"], tiny_runs["bdh"])
    counts = eval_reports.count_neurons(model, tokens, T, batch_size=4, max_batches=2)
    report = eval_reports.neuron_report(counts, tokens, enc, top_neurons=4, selective_below=0.5)
    assert model.neuron_hook is None  # unset again

    # a direct count over the same 8 windows
    x = torch.from_numpy(tokens[: 8 * T].astype(np.int64)).view(8, T)
    seen = record_neurons(model, x)
    L, nh, N = model.config.n_layer, model.config.n_head, model.config.N
    assert report["tokens"] == 8 * T
    for v, kind in (("x", 0), ("y", 1)):
        fires = torch.stack([(s[kind] > 0).sum(dim=(0, 2)) for s in seen])  # (L, nh, N)
        assert report[v]["fires"] == fires.tolist()
        active = torch.stack([(s[kind] > 0).float().mean(dim=(0, 2, 3)) for s in seen])  # (L, nh)
        assert np.allclose(report[v]["active"], active.numpy(), atol=1e-6)
        rate = fires / (8 * T)
        for layer in range(L):  # the bins hold every neuron once: never, ..., above half the tokens
            bins = report[v]["rate_bins"][layer]
            assert sum(bins) == nh * N
            assert bins[0] == (fires[layer] == 0).sum() and bins[-1] == (rate[layer] > 0.5).sum()

    # the selective neurons: the rare ones (at most half the tokens here) that are strongest when they fire
    selective = report["x"]["selective"]
    assert selective, "a tiny model fires about half its neurons: some fire on less than half the tokens"
    means = [s["mean_when_firing"] for s in selective]
    assert means == sorted(means, reverse=True)
    xs = torch.stack([s[0] for s in seen])  # (L, B, nh, T, N)
    fires = (xs > 0).sum(dim=(1, 3))  # (L, nh, N)
    mean_when_firing = xs.sum(dim=(1, 3)) / fires.clamp(min=1)
    eligible = (fires >= eval_reports.CONTEXTS) & (fires <= 0.5 * 8 * T)
    assert means[0] == pytest.approx(mean_when_firing[eligible].max().item(), rel=1e-5)
    for s in selective:
        layer, head, n = s["layer"], s["head"], s["neuron"]
        assert s["rate"] <= 0.5 and eligible[layer, head, n]
        strongest = xs[layer, :, head, :, n].max().item()
        assert s["contexts"][0]["activation"] == pytest.approx(strongest, rel=1e-5)
        for c in s["contexts"]:  # each context's token, run again in its window, drives the neuron that much
            p = c["position"]
            assert c["text"] == enc.decode([int(tokens[p])])
            before = enc.decode(tokens[max(0, p - eval_reports.CONTEXT_TOKENS) : p].tolist())
            assert c["before"] == before[-eval_reports.CONTEXT_CHARS :]
            window = torch.from_numpy(tokens[p // T * T : p // T * T + T].astype(np.int64))[None]
            again = record_neurons(model, window)[layer][0][0, head, p % T, n].item()
            assert again == pytest.approx(c["activation"], rel=1e-5) and again > 0


def test_neuron_report_writes_its_table_png_and_json(tiny_runs, tmp_path):
    pytest.importorskip("matplotlib", reason="the PNG needs matplotlib")
    proc = run_script("eval.py", f"--out_dir={tiny_runs['bdh']}", "--neurons=True", "--neuron_batches=2",
                      f"--png={tmp_path}/n.png", f"--json={tmp_path}/n.json", "--device=cpu", env=ONE_THREAD)
    assert "active fraction" in proc.stdout and "x_sparse layer 1" in proc.stdout and ">50%" in proc.stdout
    assert open(tmp_path / "n.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    report = json.load(open(tmp_path / "n.json"))
    assert report["tokens"] == 2 * 8 * T  # 2 batches of eval.py's batch_size 8
    assert np.array(report["x"]["active"]).shape == (2, 2)  # (n_layer, n_head)
    assert np.array(report["y"]["fires"]).shape == (2, 2, 64)  # N = 4 * 32 / 2 neurons per head


def direct_position_losses(model, x, y):
    """(B, T) nats of a plain forward."""
    with torch.no_grad():
        logits, _ = model(x)
    return F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none").view(x.shape)


def test_bdh_by_position_equals_its_direct_form(tiny_runs, tiny_dataset):
    model, _, meta = load_model(tiny_runs["bdh"])
    n = 80  # past the training length of 32
    docs = eval_reports.long_documents(val_tokens(tiny_dataset, meta), meta["eot_token"], n + 1, "val")
    assert docs.shape[1] == n + 1 and (docs[:, :-1] != meta["eot_token"]).all()  # each inside one document
    model.chunk_size = 8  # the chunked form in several chunks, each reading the state of the ones before
    curve, n_docs = eval_reports.loss_by_position(model, docs, batch_size=4, max_batches=2)
    assert model.attention_form == "auto" and n_docs == 8
    model.attention_form = "direct"
    x = torch.from_numpy(docs[:8])
    direct = direct_position_losses(model, x[:, :-1], x[:, 1:]).mean(dim=0)
    assert np.allclose(curve[:T], direct[:T].numpy(), rtol=1e-4, atol=1e-5)  # within the training length
    assert np.allclose(curve, direct.numpy(), rtol=1e-4, atol=1e-5)  # and past it: the forms are one model


def test_gpt_sliding_window_equals_the_plain_forward(tiny_runs, tiny_dataset):
    model, _, meta = load_model(tiny_runs["gpt"])
    docs = torch.from_numpy(eval_reports.long_documents(val_tokens(tiny_dataset, meta), meta["eot_token"], 81,
                                                        "val")[:4])
    x, y = docs[:, :-1], docs[:, 1:]
    losses = eval_reports.position_losses(model, x, y, stride=8)
    assert torch.allclose(losses[:, :T], direct_position_losses(model, x[:, :T], y[:, :T]), atol=1e-5)
    # past block_size: windows of 32 ending at 32, 40, 48, ..., 80, each scoring its last 8 positions
    for p in (32, 39, 50, 79):
        end = 32 + (p - 32) // 8 * 8 + 8
        window = direct_position_losses(model, x[:, end - T : end], y[:, end - T : end])
        assert torch.allclose(losses[:, p], window[:, p - (end - T)], atol=1e-5)
        assert T - 8 + 1 <= p - (end - T) + 1 <= T  # the context it sees
    assert torch.allclose(eval_reports.position_losses(model, x[:, :T], y[:, :T]), losses[:, :T], atol=1e-6)


def test_by_position_compares_runs_on_the_same_documents(tiny_runs, tmp_path):
    pytest.importorskip("matplotlib", reason="the PNG needs matplotlib")
    proc = run_script("eval.py", f"--out_dir={tiny_runs['bdh']}", f"--compare={tiny_runs['gpt']}", "--by_position=64",
                      "--eval_batches=1", f"--png={tmp_path}/p.png", f"--json={tmp_path}/p.json", "--device=cpu",
                      env=ONE_THREAD)
    assert "sees the last 17 to 32 tokens" in proc.stdout  # GPT past its block_size, windows moving by 16
    assert open(tmp_path / "p.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    result = json.load(open(tmp_path / "p.json"))
    assert [r["model"] for r in result["runs"]] == ["bdh", "gpt"] and result["documents"] == 8
    for r in result["runs"]:
        assert len(r["loss"]) == 64 and r["training_length"] == T
        assert [(b["start"], b["end"]) for b in r["buckets"]] == [(0, 1), (1, 2), (2, 4), (4, 8), (8, 16), (16, 32),
                                                                  (32, 64)]
        assert r["buckets"][-1]["loss"] == pytest.approx(np.mean(r["loss"][32:]))
    assert "32-63" in proc.stdout and "*" in proc.stdout.splitlines()[-3]


def test_bdh_training_logs_active_fractions_per_layer(tiny_runs):
    rows = [r for r in read_log(tiny_runs["bdh"]) if r["loss"]]
    assert rows
    for row in rows:
        for i in range(2):
            for v in "xy":
                assert 0 < float(row[f"{v}_active_l{i}"]) <= 1, row
        layers = [float(row[f"x_active_l{i}"]) for i in range(2)]
        assert float(row["x_active"]) == pytest.approx(np.mean(layers), abs=1e-4)  # the mean of the layers


def test_bdh_active_fractions_reach_tensorboard(tiny_dataset, tmp_path):
    pytest.importorskip("tensorboard", reason="--tensorboard_log needs the tensorboard package")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_script("train.py", f"--dataset={tiny_dataset}", f"--out_dir={tmp_path}/run", *TINY_MODEL, "--model=bdh",
               "--mlp_internal_dim_multiplier=4", "--max_iters=2", "--log_interval=1", "--tensorboard_log=True",
               env=ONE_THREAD)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    for tag in ("x_active", "y_active", "x_active_l0", "y_active_l1"):
        values = [e.value for e in events.Scalars(tag)]
        assert values and all(0 < v <= 1 for v in values), tag
