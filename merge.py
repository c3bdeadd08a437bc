"""
Merge two BDH runs into one model that holds the neurons of both: N_A + N_B neurons per head, the model merging of
Pathway's "The Dragon Hatchling" (arXiv 2509.26507, section 7).

    python merge.py --runs=out-stories,out-shakespeare --out_dir=out-merged
    python eval.py --out_dir=out-merged --eval_sets=val,data/shakespeare_bytes/val.bin
    python sample.py --out_dir=out-merged
    python train.py --init_from=resume --out_dir=out-merged --dataset=...   # fine-tune: a fresh optimizer

The runs must share n_layer, n_embd (D), n_head (nh) and the tokenizer; N may differ (the merged run's
mlp_internal_dim_multiplier is the sum of theirs). Merging a run with itself is allowed: a check of the merge.

Per tensor (per head, A's neurons and B's side by side along N):
- encoder E (nh, D, N): A's columns and B's, times 1/sqrt(2). The same neurons fire as in the sources, given the
  same x (relu(x @ E) only shrinks), and the attention scores, quadratic in E, halve.
- value encoder E_v (nh, D, N): A's columns and B's, unscaled.
- decoder D_x (nh * N, D), that is (nh, N, D): A's rows and B's for each head, times 1/sqrt(2).
- token embedding and head: averaged. Our reading of the paper: it concatenates what has a neuron dimension and
  averages the rest, for two models fine-tuned from one base. Two runs trained apart share no embedding space,
  unless they started from the same weights (the same --seed and shape). This is the merge's weakest point.

One layer of the merged model, given the same x as the sources: attention scores qr_t . qr_s sum over the neurons,
so yKV = (yKV_A + yKV_B) / 2, and yMLP = (yMLP_A + yMLP_B) / 2: both start as the average of the two models'.

(1) The scales. yKV and yMLP reach the model only through ln(yKV) and ln(x + ln(yMLP)): LayerNorm without affine
parameters, blind to a global factor wherever the variance of its input is well above its eps (1e-5). So a global
factor on D_x (or E) changes almost nothing in a trained model. Not nothing: yKV's variance is 0 at position 0 and
near eps at the next few, and a fresh model's yMLP has a variance below eps (2.6e-6 at tests/test_merge.py's size).
There the scale counts: in that test's self-merge, E unscaled (yKV summed, not averaged) moved the logits by up to
0.008; with the averages they moved by 1.3e-7 (float rounding), the rotary frequencies made equal (2). What
the scales can't do: set how A and B mix. Inside each norm they mix 1:1, and the contribution with the larger norm
dominates. In fine-tuning, the encoder's and decoder's weights are 1/sqrt(2) of their trained size, so AdamW's steps
(of the same size) move them sqrt(2) times as far, relative.

(2) Rotary frequencies. model.py turns neuron pair i of N at theta^(-2i/N): the frequency depends on N. Side by
side as they come (--pair_order=concat), A's pair i would land at slot i of N_A + N_B and turn far slower (for
N_A = N_B: the square root of its frequency), B's slower still. Instead (--pair_order=frequency) the pairs are
sorted by frequency: merged slot j takes the source pair with the j-th highest. Reordering neurons is free (a
neuron's index means nothing else: permuting E's and E_v's columns with D_x's rows gives the same model). With
N_A = N_B = N, A's pair i sits at slot 2i, at its own frequency, and B's at slot 2i + 1, at theta^(-1/N) times
its own: 2.1% slower at N = 512. Both exact would need per-pair frequencies, which BDH.forward does not take
(it builds the rotation from N). What the shift costs, measured: nothing visible (a run merged with itself: val
loss 0.3371 against its own 0.3377; as they come, 3.7310). BENCHMARKS.md, "Merging BDH models".

out_dir gets a normal run folder: ckpt.pt (iteration 0, weights only: no optimizer state, so train.py
--init_from=resume starts a fresh optimizer and a new data order), config.json (the first run's, with the merged
mlp_internal_dim_multiplier, and dataset = --data_dir or the first run's: eval.py's 'val'), meta.json (the first
run's, with its tokenizer file if any) and a log.csv with a header only. Nothing is written if a check fails.
"""

import hashlib
import math
import os
import shutil
from dataclasses import asdict

import torch

from checkpoints import checkpoint_files, load_model, save_checkpoint
from configurator import configure, report_errors_in_one_line
from dataloader import find_dataset
from files import write_json
from model import BDH, BDH_ROPE_THETA, BDHConfig, rope_cos_sin
from run_log import RunLog

# -----------------------------------------------------------------------------
runs = ""  # two run folders, comma-separated: --runs=A,B (A,A merges a model with itself)
out_dir = "out-merged"  # a new folder, or one without checkpoints
checkpoint = "latest"  # each run's 'latest' (ckpt.pt) or 'best' (best.pt)
data_dir = ""  # the dataset the merged run names (eval.py's val, the config's dataset); default: the first run's
pair_order = "frequency"  # 'frequency': neuron pairs sorted by rotary frequency; 'concat': A's then B's (to compare)
# -----------------------------------------------------------------------------
SAME_SHAPE = ("n_layer", "n_embd", "n_head", "vocab_size", "embedding_rank")


def rotary_frequencies(N):
    """The angle per position of each of the N / 2 neuron pairs, as model.py's rotation turns them."""
    cos, sin = rope_cos_sin(torch.ones(1), N, BDH_ROPE_THETA)  # (1, N): position 1's angles, a pair's twice
    return torch.atan2(sin, cos)[0, ::2]  # every angle is at most 1 radian: atan2 gives it back


def neuron_order(N_a, N_b, pair_order="frequency"):
    """(N_a + N_b,) indices: merged neuron n is neuron order[n] of A's and B's side by side."""
    if pair_order == "concat":
        return torch.arange(N_a + N_b)
    freqs = torch.cat((rotary_frequencies(N_a), rotary_frequencies(N_b)))
    pairs = torch.sort(freqs, descending=True, stable=True).indices  # slot j: the pair of the j-th highest; A first
    return torch.stack((2 * pairs, 2 * pairs + 1), dim=1).flatten()


@torch.no_grad()
def merge_bdh(a, b, pair_order="frequency"):
    """A BDH with the neurons of BDH models a and b (of one shape but N) per head; see the module's docstring."""
    ca, cb = a.config, b.config
    config = BDHConfig(**{**asdict(ca), "mlp_internal_dim_multiplier": ca.mlp_internal_dim_multiplier +
                          cb.mlp_internal_dim_multiplier})
    nh, D = config.n_head, config.n_embd
    order = neuron_order(ca.N, cb.N, pair_order)
    sa, sb = a.state_dict(), b.state_dict()
    state = {k: (sa[k] + sb[k]) / 2 for k in sa if k.startswith(("embed.", "lm_head."))}
    state["encoder"] = torch.cat((sa["encoder"], sb["encoder"]), dim=2)[:, :, order] / math.sqrt(2)  # (nh, D, N)
    state["encoder_v"] = torch.cat((sa["encoder_v"], sb["encoder_v"]), dim=2)[:, :, order]
    decoder = torch.cat((sa["decoder"].view(nh, ca.N, D), sb["decoder"].view(nh, cb.N, D)), dim=1)  # (nh, N, D)
    state["decoder"] = (decoder[:, order] / math.sqrt(2)).reshape(nh * config.N, D)  # rows grouped by head
    merged = BDH(config)
    merged.load_state_dict(state)
    return merged.eval()


def tokenizer_identity(run, meta):
    """What must agree for two runs to read the same tokens: the spec, the vocabulary, and any tokenizer file."""
    files = {name: hashlib.sha256(open(os.path.join(run, name), "rb").read()).hexdigest()
             for name in meta.get("files", []) if os.path.isfile(os.path.join(run, name))}
    return meta["tokenizer"], meta["vocab_size"], meta.get("chars"), files


def main():
    names = [r.strip() for r in runs.split(",") if r.strip()]
    if len(names) != 2:
        raise ValueError(f"--runs={runs!r}: give two BDH run folders, --runs=A,B (A,A merges a run with itself)")
    if pair_order not in ("frequency", "concat"):
        raise ValueError(f"--pair_order={pair_order!r}; use frequency or concat")
    if checkpoint not in ("latest", "best"):
        raise ValueError(f"--checkpoint={checkpoint!r}; use latest or best")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"--out_dir={out_dir} is a file, not a folder; choose another --out_dir")
    if saved := sorted(checkpoint_files(out_dir)):
        raise ValueError(f"{out_dir} holds {', '.join(saved)}; merge into a new --out_dir (nothing was overwritten)")

    (a, ckpt_a, meta_a), (b, ckpt_b, meta_b) = [load_model(run, checkpoint) for run in names]
    for run, ckpt in zip(names, (ckpt_a, ckpt_b)):
        if ckpt["model_type"] != "bdh":
            raise ValueError(f"{run} holds a {ckpt['model_type']} model; merge.py merges BDH runs (--model=bdh)")
    if tokenizer_identity(names[0], meta_a) != tokenizer_identity(names[1], meta_b):
        raise ValueError(f"{names[0]} and {names[1]} have different tokenizers ({meta_a['tokenizer']!r}, "
                         f"{meta_b['tokenizer']!r}): merged neurons must read the same tokens; train both on data "
                         "prepared with the same --tokenizer")
    for k in SAME_SHAPE:
        va, vb = ckpt_a["model_args"][k], ckpt_b["model_args"][k]
        if va != vb:
            raise ValueError(f"{names[0]} has {k}={va}, {names[1]} has {k}={vb}: merge.py merges runs of one shape "
                             "(only mlp_internal_dim_multiplier may differ)")
    if ckpt_a["model_args"]["embedding_rank"]:
        raise ValueError("factorized embeddings (embedding_rank > 0) can't be averaged factor by factor; merge.py "
                         "merges runs with embedding_rank=0")
    dataset = data_dir or ckpt_a["config"]["dataset"]
    try:
        _, data_meta = find_dataset(dataset)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}; or name the merged run's dataset with --data_dir") from None
    if (data_meta["tokenizer"], data_meta["vocab_size"]) != (meta_a["tokenizer"], meta_a["vocab_size"]):
        raise ValueError(f"--data_dir={dataset} has tokenizer {data_meta['tokenizer']!r}, the runs "
                         f"{meta_a['tokenizer']!r}; give a dataset prepared with the runs' tokenizer")

    merged = merge_bdh(a, b, pair_order)
    m = merged.config.mlp_internal_dim_multiplier
    config = {**ckpt_a["config"], "out_dir": out_dir, "dataset": dataset, "mlp_internal_dim_multiplier": m}
    os.makedirs(out_dir, exist_ok=True)
    save_checkpoint({
        "model_type": "bdh",
        "model_args": {**ckpt_a["model_args"], "mlp_internal_dim_multiplier": m},
        "model": merged.state_dict(),
        "optimizer": None,  # weights only: train.py --init_from=resume starts a fresh optimizer and data order
        "scaler": None,
        "iter_num": 0,
        "best_val_loss": float("inf"),
        "train_seconds": 0.0,
        "config": config,
        "meta": meta_a,
        "train_loader": [],
        "rng": [],
        "merged_from": [{"run": run, "checkpoint": ckpt["path"], "iter_num": ckpt["iter_num"],
                         "mlp_internal_dim_multiplier": ckpt["model_args"]["mlp_internal_dim_multiplier"]}
                        for run, ckpt in zip(names, (ckpt_a, ckpt_b))],
        "pair_order": pair_order,
    }, os.path.join(out_dir, "ckpt.pt"))
    write_json(config, os.path.join(out_dir, "config.json"))
    write_json(meta_a, os.path.join(out_dir, "meta.json"))
    for name in meta_a.get("files", []):  # a trained tokenizer file, as train.py copies it
        shutil.copy(os.path.join(names[0], name), os.path.join(out_dir, name))
    RunLog(out_dir, append=False)  # the header: train.py --init_from=resume appends to it

    order = neuron_order(a.config.N, b.config.N, pair_order)
    source = torch.cat((rotary_frequencies(a.config.N), rotary_frequencies(b.config.N)))[order[::2] // 2]
    ratio = rotary_frequencies(merged.config.N) / source
    shift = torch.maximum(ratio, 1 / ratio).max().item()
    print(f"merged {names[0]} (N={a.config.N}, iteration {ckpt_a['iter_num']}) and {names[1]} (N={b.config.N}, "
          f"iteration {ckpt_b['iter_num']}): N={merged.config.N} per head, {merged.num_params() / 1e6:.2f}M "
          f"parameters, pairs in {pair_order} order (each pair's rotary frequency within x{shift:.3f} of its own)")
    print(f"wrote {out_dir}: ckpt.pt (weights only), config.json (dataset {dataset}), meta.json, log.csv")


if __name__ == "__main__":
    report_errors_in_one_line()
    configure(globals())
    main()
