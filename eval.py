"""
Measure a trained model: loss, perplexity and bits per byte on whole token files; BDH's neurons; loss by position.

    python eval.py --out_dir=out-demo                                  # the run's val split, every token
    python eval.py --out_dir=out-demo --eval_sets=val,data/other/val.bin --eval_batches=50
    python eval.py --compare=out-gpt,out-bdh --eval_batches=50        # a table, samples side by side, compare.png
    python eval.py --out_dir=out-bdh --neurons=True --png=neurons.png --json=neurons.json
    python eval.py --out_dir=out-bdh --by_position=512 --compare=out-gpt --png=positions.png

Bits per byte = total loss in bits / UTF-8 bytes of the predicted text: it does not depend on the tokenizer, so
models with different tokenizers compare fairly. End-of-text targets count in loss and perplexity, not in bits per
byte (they have no bytes). An eval set is 'val' or 'train' (the run's dataset) or a path to a .bin file with the
same tokenizer.

--neurons (BDH runs): over the first neuron_batches batches of val windows, the fraction of active (positive)
neurons in x_sparse and y_sparse per layer and head, how the neurons' firing rates spread (how many never fire, how
many fire on most tokens), and the most selective neurons with the contexts that drive them (eval_reports.py).
--by_position=N: the mean loss at each position 0..N-1 of the val documents at least N + 1 tokens long, N possibly
past the training length (see position_losses), for out_dir and the runs in --compare, on the same documents.
--png draws either (needs matplotlib), --json writes its numbers.
"""

import importlib.util
import math
import os
import time

import numpy as np
import torch

import eval_reports
from checkpoints import load_model
from configurator import check_values, configure, report_errors_in_one_line
from dataloader import check_token_ids, find_dataset, open_tokens
from files import write_json
from hardware import autocast, resolve_device
from quantize import check_quantize
from tokenizer import get_tokenizer

# -----------------------------------------------------------------------------
out_dir = "out"
checkpoint = "latest"  # 'latest', 'best' or a path
eval_sets = "val"  # comma-separated: 'val', 'train', or paths to .bin token files
eval_batches = 0  # 0: every token of each set; else at most this many batches (from the start of the file)
batch_size = 8
compare = ""  # comma-separated out_dirs: compare their models on their own val splits
compare_png = "compare.png"  # --compare: the runs' loss curves from their log.csv (needs matplotlib)
start = "Once upon a time"  # --compare: the prompt every model continues, with the same seed
max_new_tokens = 100
seed = 1337
quantize = ""  # 'int8': score the runs with int8 weights on a CPU (quantize.py), to see what int8 costs
device = "auto"
dtype = "auto"
neurons = False  # BDH runs: the neuron report
neuron_batches = 16  # --neurons: val windows of the training length, this many batches of batch_size
top_neurons = 5  # --neurons: how many of the most selective neurons to show, for x_sparse and for y_sparse
selective_below = 0.05  # --neurons: a selective neuron fires on at most this share of the tokens
by_position = None  # N: mean loss at positions 0..N-1 over val documents of at least N + 1 tokens
stride = 0  # --by_position past a GPT's block_size: how far each window moves (0: block_size // 2)
png = ""  # --neurons, --by_position: draw the report here (needs matplotlib)
json = ""  # --neurons, --by_position: write the report's numbers here
# -----------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model, tokens, byte_lengths, batch_size, max_batches=0, ctx=None, block_size=None):
    """Every token after the first predicted once, in consecutive windows of block_size (default: the model's
    context; BDH has none, so pass the length it trained on). Returns a dict of loss (nats/token), perplexity,
    bits_per_byte, tokens, bytes."""
    T = block_size or model.config.block_size
    n_windows = (len(tokens) - 1) // T
    if n_windows == 0:
        raise ValueError(f"an eval set of {len(tokens)} tokens is shorter than block_size + 1 = {T + 1}")
    byte_lengths = torch.tensor(byte_lengths, dtype=torch.float64)
    total_nats = 0.0  # every target's loss
    total_tokens = 0
    bpb_nats = 0.0  # the loss of targets that have bytes (end-of-text has none)
    total_bytes = 0.0
    for b, start in enumerate(range(0, n_windows, batch_size)):
        if max_batches and b >= max_batches:
            break
        rows = range(start, min(start + batch_size, n_windows))
        window = torch.from_numpy(np.stack([tokens[r * T : r * T + T + 1] for r in rows]).astype(np.int64))
        check_token_ids(int(window.max()), len(byte_lengths), getattr(tokens, "filename", "the eval set"))
        x, y = window[:, :-1], window[:, 1:]  # the same shift as the batch loader: y[t] follows x[t]
        with ctx or torch.autocast("cpu", enabled=False):
            logits, _ = model(x.to(next(model.parameters()).device))
        nats = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1).cpu(), y.flatten(), reduction="none")
        nbytes = byte_lengths[y.flatten()]
        total_nats += nats.sum().item()
        total_tokens += y.numel()
        bpb_nats += nats.double()[nbytes > 0].sum().item()
        total_bytes += nbytes.sum().item()
    loss = total_nats / total_tokens
    return {"loss": loss, "perplexity": math.exp(loss), "bits_per_byte": bpb_nats / math.log(2) / total_bytes,
            "tokens": total_tokens, "bytes": int(total_bytes)}


def token_file(name, ckpt, meta):
    """'val'/'train' in the run's dataset folder, or a path to a .bin file, checked (open_tokens)."""
    if name in ("val", "train"):
        folder, _ = find_dataset(ckpt["config"]["dataset"])
        name = os.path.join(folder, f"{name}.bin")
    elif not os.path.isfile(name):
        raise FileNotFoundError(f"no eval set {name!r}; use val, train or a path to a .bin token file")
    return open_tokens(name, meta, ckpt["config"]["block_size"])


def plot_loss_curves(out_dirs, path):
    try:
        plt = eval_reports.pyplot()
    except ImportError:
        print(f"(no {path}: the loss-curve plot needs matplotlib: pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    for run in out_dirs:
        rows = [line.split(",") for line in open(os.path.join(run, "log.csv")).read().splitlines()]
        col = {name: i for i, name in enumerate(rows[0])}
        for key, style in (("loss", "-"), ("val_loss", "o--")):
            points = [(int(r[col["iter"]]), float(r[col[key]])) for r in rows[1:] if r[col[key]]]
            if points:
                ax.plot(*zip(*points), style, label=f"{os.path.basename(os.path.normpath(run))} {key}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (nats/token)")
    ax.legend()
    eval_reports.save_figure(fig, path, "loss curves")


def compare_runs(out_dirs):
    rows = []
    samples = []
    for run in out_dirs:
        model, ckpt, meta = load_model(run, checkpoint, device, quantize)
        enc = get_tokenizer(meta["tokenizer"], run)
        cfg = ckpt["config"]
        r = evaluate(model, token_file("val", ckpt, meta), enc.byte_lengths(), batch_size, eval_batches, ctx,
                     cfg["block_size"])
        x = torch.tensor([enc.encode(start)], dtype=torch.long, device=device)
        g = torch.Generator(device=device).manual_seed(seed)
        t0 = time.perf_counter()
        with torch.no_grad(), ctx:
            y = model.generate(x, max_new_tokens, temperature=0.8, top_k=200, generator=g)[0, x.size(1):].tolist()
        gen_speed = max_new_tokens / (time.perf_counter() - t0)
        samples.append((run, start + enc.decode(y[: y.index(enc.eot_token)] if enc.eot_token in y else y)))
        step = ckpt.get("tokens_per_iter") or cfg["gradient_accumulation_steps"] * cfg["batch_size"] * cfg["block_size"]
        tokens = ckpt["iter_num"] * step  # checkpoints before total_batch_size have no tokens_per_iter
        rows.append({"run": run, "model": ckpt["model_type"], "params": model.num_params(),
                     "non_embedding": model.num_params(non_embedding=True), "trained_tokens": tokens, **r,
                     "gen_tokens_per_sec": gen_speed})
    print(f"{'run':<24} {'model':<6} {'params':>9} {'non-emb':>9} {'tokens':>13} {'val loss':>9} {'ppl':>8} "
          f"{'bits/byte':>9} {'gen tok/s':>9}")
    for r in rows:
        print(f"{r['run']:<24} {r['model']:<6} {r['params'] / 1e6:>8.2f}M {r['non_embedding'] / 1e6:>8.2f}M "
              f"{r['trained_tokens']:>13,} {r['loss']:>9.4f} {r['perplexity']:>8.3f} {r['bits_per_byte']:>9.4f} "
              f"{r['gen_tokens_per_sec']:>9.1f}")
    for run, text in samples:
        print(f"\n--- {run} (seed {seed}) ---\n{text}")
    plot_loss_curves(out_dirs, compare_png)


# -----------------------------------------------------------------------------
# BDH's neurons (--neurons) and the loss by position (--by_position): eval_reports.py does the work


def neuron_study(run):
    model, ckpt, meta = load_model(run, checkpoint, device, quantize)
    if ckpt["model_type"] != "bdh":
        raise ValueError(f"--neurons is for BDH runs; {run} holds a {ckpt['model_type']} model")
    enc = get_tokenizer(meta["tokenizer"], run)
    tokens = token_file("val", ckpt, meta)
    counts = eval_reports.count_neurons(model, tokens, ckpt["config"]["block_size"], batch_size, neuron_batches, ctx)
    report = {"run": run, "iter_num": ckpt["iter_num"],
              **eval_reports.neuron_report(counts, tokens, enc, top_neurons, selective_below)}
    eval_reports.print_neuron_report(report)
    save_report(report, eval_reports.plot_neurons)


def position_study(runs, n):
    """--by_position=n for runs: the first run's val documents of at least n + 1 tokens, scored by every run."""
    result = {"positions": n, "stride": stride, "runs": []}
    first = None
    for run in runs:
        model, ckpt, meta = load_model(run, checkpoint, device, quantize)
        if first is None:
            first = (run, meta["tokenizer"], meta["vocab_size"])
            if meta.get("eot_token") is None:
                raise ValueError(f"{run}/meta.json has no eot_token: no documents to find; prepare the data again")
            docs = eval_reports.long_documents(token_file("val", ckpt, meta), meta["eot_token"], n + 1, run)
        elif (meta["tokenizer"], meta["vocab_size"]) != first[1:]:
            raise ValueError(f"--by_position scores every run on {first[0]}'s documents, but {run} has tokenizer "
                             f"{meta['tokenizer']!r} (vocab {meta['vocab_size']}), not {first[1]!r} ({first[2]})")
        loss, result["documents"] = eval_reports.loss_by_position(model, docs, batch_size, eval_batches, stride, ctx)
        result["runs"].append({"run": run, "model": ckpt["model_type"], "training_length": ckpt["config"]["block_size"],
                               "loss": loss})
        print(eval_reports.window_note(run, model, n, stride))
    eval_reports.print_positions(result)
    save_report(result, eval_reports.plot_positions)


def save_report(report, plot):
    """--png and --json of a study: plot(report, png) draws the figure."""
    if png:
        plot(report, png)
    if json:
        write_json(report, json)
        print(f"numbers: {json}")


def report_eval_sets():
    model, ckpt, meta = load_model(out_dir, checkpoint, device, quantize)
    byte_lengths = get_tokenizer(meta["tokenizer"], out_dir).byte_lengths()
    print(f"{ckpt['path']}: {ckpt['model_type']}, iteration {ckpt['iter_num']}")
    print(f"{'eval set':<40} {'loss':>8} {'perplexity':>11} {'bits/byte':>10} {'tokens':>12}")
    for name in eval_sets.split(","):
        r = evaluate(model, token_file(name, ckpt, meta), byte_lengths, batch_size, eval_batches, ctx,
                     ckpt["config"]["block_size"])
        print(f"{name:<40} {r['loss']:>8.4f} {r['perplexity']:>11.3f} {r['bits_per_byte']:>10.4f} {r['tokens']:>12,}")


if __name__ == "__main__":
    report_errors_in_one_line()
    check_values(configure(globals()), positive=("batch_size", "neuron_batches", "top_neurons"),
                 non_negative=("eval_batches", "max_new_tokens", "stride"), fractions=("selective_below",))
    if by_position is not None and (type(by_position) is not int or by_position < 1):
        raise ValueError(f"--by_position={by_position!r} must be a whole number > 0: how many positions to score")
    if neurons and (by_position or compare):
        raise ValueError("--neurons reports on one run (--out_dir): leave out --by_position and --compare")
    if (png or json) and not (neurons or by_position):
        raise ValueError("--png and --json go with --neurons or --by_position (--compare draws --compare_png)")
    if png and importlib.util.find_spec("matplotlib") is None:
        raise ImportError(f"--png={png} needs matplotlib: pip install matplotlib")
    device = check_quantize(quantize, device, dtype)
    device, device_type, dtype, _ = resolve_device(device, dtype, compile=False)
    ctx = autocast(device_type, dtype)
    if by_position:
        position_study([out_dir, *filter(None, compare.split(","))], by_position)
    elif neurons:
        neuron_study(out_dir)
    elif compare:
        compare_runs(compare.split(","))
    else:
        report_eval_sets()
