"""merge.py: the merged BDH keeps each source's neurons, computes its three attention forms alike, equals a model
merged with itself, and is a run folder that samples, evaluates and resumes."""

import json
import math
import os

import pytest
import torch

import model as model_module
from checkpoints import load_model
from merge import merge_bdh, neuron_order, rotary_frequencies
from model import BDH, BDHConfig
from tests.helpers import ONE_THREAD, TINY_MODEL, read_log, run_script

torch.set_num_threads(1)  # tiny models: a second thread costs more than it gives

TINY_BDH = dict(vocab_size=64, n_layer=2, n_head=2, n_embd=32, dropout=0.0)


def tiny_bdh(multiplier, seed):
    torch.manual_seed(seed)
    return BDH(BDHConfig(**TINY_BDH, mlp_internal_dim_multiplier=multiplier)).eval()


def tokens(seed, shape=(2, 24)):
    return torch.randint(0, 64, shape, generator=torch.Generator().manual_seed(seed))


def unpermuted(merged_weight, order, dim):
    """A merged neuron tensor back in the order A's neurons, then B's."""
    return merged_weight.index_select(dim, torch.argsort(order))


def test_merging_keeps_the_shape_and_each_models_neurons():
    a, b = tiny_bdh(4, seed=0), tiny_bdh(2, seed=1)  # N = 64 and 32 per head
    merged = merge_bdh(a, b)
    assert merged.config.N == a.config.N + b.config.N == 96
    assert merged.config.mlp_internal_dim_multiplier == 6
    for k in ("vocab_size", "n_layer", "n_head", "n_embd", "dropout", "embedding_rank"):
        assert getattr(merged.config, k) == getattr(a.config, k)
    order = neuron_order(64, 32)
    assert sorted(order.tolist()) == list(range(96))  # a permutation: every neuron once
    # (nh, D, N): each source's columns, E over sqrt(2), E_v as it was; D_x (nh, N, D): each source's rows per head
    for k, scale in (("encoder", math.sqrt(2)), ("encoder_v", 1)):
        both = unpermuted(getattr(merged, k), order, dim=2)
        assert torch.equal(both[:, :, :64], getattr(a, k) / scale)
        assert torch.equal(both[:, :, 64:], getattr(b, k) / scale)
    decoder = unpermuted(merged.decoder.view(2, 96, 32), order, dim=1)
    assert torch.equal(decoder[:, :64], a.decoder.view(2, 64, 32) / math.sqrt(2))
    assert torch.equal(decoder[:, 64:], b.decoder.view(2, 32, 32) / math.sqrt(2))
    # the same neurons fire: relu(x @ E) only shrinks by sqrt(2)
    x = torch.randn(5, 32)
    active = (torch.relu(x @ merged.encoder) > 0).index_select(2, torch.argsort(order))
    assert torch.equal(active[:, :, :64], torch.relu(x @ a.encoder) > 0)
    for k in ("embed", "lm_head"):
        assert torch.equal(getattr(merged, k).weight, (getattr(a, k).weight + getattr(b, k).weight) / 2)


def test_neuron_pairs_keep_their_rotary_frequencies_where_they_can():
    order = neuron_order(64, 64)
    assert torch.equal(order[::2] % 2, torch.zeros(64, dtype=torch.long))  # pairs stay together, in order
    source = torch.cat((rotary_frequencies(64), rotary_frequencies(64)))[order[::2] // 2]
    merged = rotary_frequencies(128)
    assert torch.equal(merged[::2], rotary_frequencies(64))  # A's pairs: at their own frequencies, exactly
    shift = merged[1::2] / source[1::2]  # B's: one slot further, theta^(-1/N) times their own
    torch.testing.assert_close(shift, torch.full((32,), model_module.BDH_ROPE_THETA ** (-1 / 64)))
    assert torch.equal(neuron_order(64, 32, "concat"), torch.arange(96))


def test_a_model_merged_with_itself_computes_the_same_logits(monkeypatch):
    a = tiny_bdh(4, seed=0)
    idx = tokens(2)
    # with every neuron pair at one rotary frequency, reordering neurons is exact: the merge alone is tested
    monkeypatch.setattr(model_module, "BDH_ROPE_THETA", 1.0)
    torch.testing.assert_close(merge_bdh(a, a)(idx)[0], a(idx)[0], rtol=1e-6, atol=1e-6)
    monkeypatch.undo()
    # with the real frequencies B's pairs turn theta^(-1/N) slower (16% at this N of 64, 2% at 512), and the logits
    # move; a merge that ignores the frequencies (concat) moves them further
    errors = {order: (merge_bdh(a, a, order)(idx)[0] - a(idx)[0]).abs().max().item() for order in ("frequency",
                                                                                                    "concat")}
    assert 0 < errors["frequency"] < errors["concat"] / 2, errors


def test_the_merged_models_attention_forms_agree():
    merged = merge_bdh(tiny_bdh(4, seed=0), tiny_bdh(2, seed=1))
    idx = tokens(3, (3, 16))
    merged.attention_form = "direct"
    direct = merged(idx)[0]
    merged.attention_form, merged.chunk_size = "chunked", 5
    torch.testing.assert_close(merged(idx)[0], direct, rtol=1e-5, atol=1e-5)
    prompt = idx[:, :5]
    outs = [merged.generate(prompt, 20, generator=torch.Generator().manual_seed(0), use_cache=c) for c in (True, False)]
    assert outs[0].shape == (3, 25) and torch.equal(*outs)


@pytest.fixture(scope="module")
def merged_run(tiny_runs, tiny_dataset, tmp_path_factory):
    """tiny_runs' BDH (N 64 per head) merged with a BDH of N 32 trained here on the same data."""
    folder = tmp_path_factory.mktemp("merge")
    narrow = str(folder / "narrow")
    run_script("train.py", f"--dataset={tiny_dataset}", f"--out_dir={narrow}", *TINY_MODEL, "--model=bdh",
               "--mlp_internal_dim_multiplier=2", "--max_iters=4", "--eval_interval=4", env=ONE_THREAD)
    out = str(folder / "merged")
    proc = run_script("merge.py", f"--runs={tiny_runs['bdh']},{narrow}", f"--out_dir={out}", env=ONE_THREAD)
    assert "N=96 per head" in proc.stdout, proc.stdout
    return out


def test_a_merged_run_samples_and_evaluates(merged_run, tiny_runs):
    assert sorted(os.listdir(merged_run)) == ["ckpt.pt", "config.json", "log.csv", "meta.json"]
    model, ckpt, _ = load_model(merged_run)
    with open(os.path.join(tiny_runs["bdh"], "config.json")) as f:
        first_dataset = json.load(f)["dataset"]  # the first run's: eval.py's val (tiny_runs may be another worker's)
    assert ckpt["iter_num"] == 0 and ckpt["config"]["dataset"] == first_dataset and model.config.N == 96
    proc = run_script("sample.py", f"--out_dir={merged_run}", "--device=cpu", "--num_samples=1",
                      "--max_new_tokens=20", env=ONE_THREAD)
    assert "loaded" in proc.stdout and "(iteration 0, bdh" in proc.stdout
    proc = run_script("eval.py", f"--out_dir={merged_run}", "--device=cpu", "--eval_batches=2", env=ONE_THREAD)
    val = next(line for line in proc.stdout.splitlines() if line.startswith("val "))
    assert math.isfinite(float(val.split()[1]))


def test_a_merged_run_fine_tunes_with_a_fresh_optimizer(merged_run, tiny_dataset, tmp_path):
    out = tmp_path / "merged"
    os.makedirs(out)
    for name in os.listdir(merged_run):  # a copy: the other test reads the merged checkpoint as merge.py wrote it
        (out / name).write_bytes(open(os.path.join(merged_run, name), "rb").read())
    proc = run_script("train.py", f"--dataset={tiny_dataset}", f"--out_dir={out}", *TINY_MODEL, "--max_iters=3",
                      "--eval_interval=3", "--log_interval=1", "--init_from=resume", env=ONE_THREAD)
    assert "holds weights only: a fresh optimizer" in proc.stdout, proc.stdout
    losses = [float(row["loss"]) for row in read_log(out) if row["loss"]]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    model, ckpt, _ = load_model(str(out))
    assert ckpt["iter_num"] == 3 and ckpt["optimizer"] is not None and model.config.N == 96
