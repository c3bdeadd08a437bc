"""
What eval.py reports beyond the loss of whole files: BDH's neurons (--neurons) and the loss at each position of
long documents, past the training length (--by_position). Functions of a model and token arrays; eval.py loads the
runs and calls them.
"""

import os

import numpy as np
import torch
import torch.nn.functional as F

from dataloader import find_documents


def pyplot():
    """matplotlib's pyplot, drawing to files (no display). The scripts check that it is installed before any work."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, what):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    print(f"{what}: {path}")


def show(text):
    """Text on one line of a table."""
    return text.replace("\n", "\\n").replace("\t", "\\t")


# -----------------------------------------------------------------------------
# BDH's neurons (--neurons)

RATE_EDGES = (0.0, 0.01, 0.05, 0.2, 0.5)  # firing-rate bins: never, up to 1%, 1-5%, 5-20%, 20-50%, above 50%
RATE_BINS = ("never", "<=1%", "1-5%", "5-20%", "20-50%", ">50%")
CONTEXTS = 3  # the strongest contexts kept per neuron
CONTEXT_TOKENS = 32  # tokens decoded before the one that drives a neuron, of which CONTEXT_CHARS characters shown
CONTEXT_CHARS = 40


class NeuronCounts:
    """BDH.neuron_hook for the neuron report. Per kind ('x': x_sparse, 'y': y_sparse), tensors (n_layer, nh, N):
    how often each neuron fired (was positive) in each layer, its summed activation, and its CONTEXTS strongest
    activations (top) with their offsets in the token file (top_at). Set positions, the offsets of the batch's
    tokens (B, T), before each forward; tokens counts the positions seen."""

    def __init__(self, config, device):
        shape = (config.n_layer, config.n_head, config.N)
        self.tokens = 0
        self.positions = None
        self.fires = {v: torch.zeros(shape, dtype=torch.long, device=device) for v in "xy"}
        self.total = {v: torch.zeros(shape, device=device) for v in "xy"}
        self.top = {v: torch.full((*shape, CONTEXTS), -1.0, device=device) for v in "xy"}  # below any activation
        self.top_at = {v: torch.zeros((*shape, CONTEXTS), dtype=torch.long, device=device) for v in "xy"}

    def __call__(self, layer, x_sparse, y_sparse):
        for v, a in (("x", x_sparse), ("y", y_sparse)):
            a = a.float().permute(1, 3, 0, 2).flatten(2)  # (nh, N, B*T), positions in the order of positions.flatten()
            self.fires[v][layer] += (a > 0).sum(dim=-1)
            self.total[v][layer] += a.sum(dim=-1)
            top, i = a.topk(min(CONTEXTS, a.size(-1)), dim=-1)  # this batch's strongest, merged with the earlier ones
            values = torch.cat((self.top[v][layer], top), dim=-1)
            at = torch.cat((self.top_at[v][layer], self.positions.flatten()[i]), dim=-1)
            values, j = values.topk(CONTEXTS, dim=-1)
            self.top[v][layer], self.top_at[v][layer] = values, at.gather(-1, j)


@torch.no_grad()
def count_neurons(model, tokens, block_size, batch_size, max_batches, ctx=None):
    """A BDH model run over consecutive windows of block_size tokens from the start of tokens, at most max_batches
    batches: the NeuronCounts its neuron_hook gathered."""
    n_windows = min((len(tokens) - 1) // block_size, batch_size * max_batches)
    dev = next(model.parameters()).device
    counts = NeuronCounts(model.config, dev)
    model.neuron_hook = counts
    try:
        for start in range(0, n_windows, batch_size):
            rows = torch.arange(start, min(start + batch_size, n_windows))
            counts.positions = (rows[:, None] * block_size + torch.arange(block_size)).to(dev)  # (B, T)
            x = torch.from_numpy(tokens[counts.positions.cpu().numpy()].astype(np.int64))
            with ctx or torch.autocast("cpu", enabled=False):
                model(x.to(dev))
            counts.tokens += x.numel()
    finally:
        model.neuron_hook = None
    return counts


def neuron_report(counts, tokens, enc, top_neurons, selective_below):
    """The report's numbers as plain lists (JSON), for 'x' (x_sparse) and 'y' (y_sparse) each:
      active     the fraction of active neurons, [layer][head]: the mean firing rate of the head's N neurons
      fires      how many of the tokens each neuron fired on, [layer][head][neuron] (its firing rate: / tokens)
      rate_bins  per layer, how many neurons have a firing rate in each of RATE_BINS (never ... above 50%)
      selective  the most selective neurons: rare but strong. Those that fire on at most selective_below of the
                 tokens (and on at least CONTEXTS), ranked by their mean activation when they fire, each with the
                 CONTEXTS positions that drive it most: the activation, the token, and the text before it.
    A neuron here is one of a layer's nh x N: the layers share their weights, but each layer fires its own way."""
    report = {"tokens": counts.tokens, "rate_bins": RATE_BINS, "selective_below": selective_below}
    for v in "xy":
        fires = counts.fires[v].cpu()
        rate = fires / counts.tokens  # (n_layer, nh, N)
        bins = torch.bucketize(rate, torch.tensor(RATE_EDGES, dtype=rate.dtype))  # 0: never ... 5: above 50%
        mean_when_firing = counts.total[v].cpu() / fires.clamp(min=1)
        rare = (fires >= CONTEXTS) & (rate <= selective_below)
        score = torch.where(rare, mean_when_firing, -1.0).flatten()
        selective = []
        for flat in score.topk(min(top_neurons, len(score))).indices.tolist():
            if score[flat] < 0:
                break
            layer, head, n = (int(i) for i in np.unravel_index(flat, rate.shape))
            contexts = []
            for a, p in zip(counts.top[v][layer, head, n].tolist(), counts.top_at[v][layer, head, n].tolist()):
                before = enc.decode(tokens[max(0, p - CONTEXT_TOKENS) : p].tolist())[-CONTEXT_CHARS:]
                contexts.append({"position": p, "token": int(tokens[p]), "activation": a, "before": before,
                                 "text": enc.decode([int(tokens[p])])})
            selective.append({"layer": layer, "head": head, "neuron": n, "rate": rate[layer, head, n].item(),
                              "mean_when_firing": mean_when_firing[layer, head, n].item(), "contexts": contexts})
        report[v] = {"active": rate.mean(dim=2).tolist(), "fires": fires.tolist(),
                     "rate_bins": [torch.bincount(b.flatten(), minlength=len(RATE_BINS)).tolist() for b in bins],
                     "selective": selective}
    return report


def print_neuron_report(report):
    n_layer, nh = len(report["x"]["active"]), len(report["x"]["active"][0])
    n_neurons = sum(report["x"]["rate_bins"][0])
    print(f"{report['run']}: BDH's neurons over {report['tokens']:,} val tokens, {n_layer} layers x {nh} heads x "
          f"{n_neurons // nh} neurons")
    print(f"\n{'active fraction':<18}" + "".join(f"{f'head {h}':>8}" for h in range(nh)) + f"{'mean':>8}")
    for v in "xy":
        for layer, row in enumerate(report[v]["active"]):
            print(f"{f'{v}_sparse layer {layer}':<18}" + "".join(f"{a:>8.3f}" for a in row) + f"{np.mean(row):>8.3f}")
    print(f"\n{'firing rate':<18}" + "".join(f"{b:>8}" for b in report["rate_bins"]) + "   (neurons per layer)")
    for v in "xy":
        for layer, row in enumerate(report[v]["rate_bins"]):
            print(f"{f'{v}_sparse layer {layer}':<18}" + "".join(f"{c:>8}" for c in row))
    for v in "xy":
        print(f"\nmost selective in {v}_sparse (fire on at most {report['selective_below']:.0%} of the tokens, "
              "strongest when they fire), with their strongest contexts [token]:")
        if not report[v]["selective"]:
            print("  none: no neuron fires that rarely")
        for s in report[v]["selective"]:
            print(f"  layer {s['layer']} head {s['head']} neuron {s['neuron']}: fires on {s['rate']:.2%} of the "
                  f"tokens, {s['mean_when_firing']:.3f} on average when it does")
            for c in s["contexts"]:
                print(f"    {c['activation']:>7.3f}  {show(c['before']):>{CONTEXT_CHARS}}[{show(c['text'])}]")


def plot_neurons(report, path):
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), width_ratios=[1, 1, 1.3], layout="constrained")
    top = max(np.max(report[v]["active"]) for v in "xy") or 1  # one color scale: x and y side by side
    for ax, v in zip(axes, "xy"):
        active = np.array(report[v]["active"])  # (n_layer, nh)
        image = ax.imshow(active, cmap="viridis", vmin=0, vmax=top, aspect="auto")
        for (layer, head), a in np.ndenumerate(active):
            ax.text(head, layer, f"{a:.3f}", ha="center", va="center", fontsize=8,
                    color="white" if a < 0.6 * top else "black")
        ax.set(title=f"{v}_sparse: fraction active", xlabel="head", ylabel="layer",
               xticks=range(active.shape[1]), yticks=range(active.shape[0]))
    fig.colorbar(image, ax=axes[:2])
    ax = axes[2]
    for v in "xy":
        rates = np.array(report[v]["fires"]).flatten() / report["tokens"]
        ax.hist(rates, bins=np.linspace(0, 1, 51), histtype="step", log=True, linewidth=1.5,
                label=f"{v}_sparse: {np.sum(rates == 0)} never fire, {np.sum(rates > 0.5)} on > 50% of tokens")
    ax.set(title="firing rates (every layer's neurons)", xlabel="share of the tokens a neuron fires on",
           ylabel="neurons")
    ax.legend(fontsize=8)
    fig.suptitle(f"{report['run']}: BDH's neurons over {report['tokens']:,} val tokens", fontsize=10)
    save_figure(fig, path, "neuron report")


# -----------------------------------------------------------------------------
# loss by position, past the training length (--by_position)


def long_documents(tokens, eot_token, length, where):
    """(n, length) int64: the first length tokens of each document in tokens at least that long (its end-of-text
    included)."""
    starts = find_documents(tokens, eot_token)
    lengths = np.diff(np.append(starts, len(tokens)))
    if lengths.max() < length:
        raise ValueError(f"--by_position={length - 1} needs val documents of at least {length} tokens; the longest in "
                         f"{where} has {lengths.max()}: use --by_position={max(1, lengths.max() - 1)} or less, or "
                         "data with longer documents")
    return np.stack([tokens[s : s + length] for s in starts[lengths >= length]]).astype(np.int64)


@torch.no_grad()
def position_losses(model, x, y, stride=0):
    """(B, T) nats of each target y[:, t] after x[:, :t + 1]. BDH reads the whole sequence at once (it has no
    context limit). A model with one, C (GPT's block_size), reads past it in windows of C tokens whose ends move by
    stride (0: C // 2; at most C), each scoring only the positions no earlier window scored: position p < C is
    scored in the first window, after all of x[:, :p + 1] (the plain forward); p >= C after the last C - stride + 1
    to C tokens."""
    T = x.size(1)
    C = getattr(model.config, "block_size", None) or T
    stride = min(stride or max(1, C // 2), C)
    losses = torch.empty(x.shape)
    done = 0  # positions scored so far
    for end in [*range(min(C, T), T, stride), T]:
        start = max(0, end - C)
        logits, _ = model(x[:, start:end])
        new = logits[:, done - start :].float().flatten(0, 1).cpu()
        losses[:, done:end] = F.cross_entropy(new, y[:, done:end].flatten().cpu(), reduction="none").view(len(x), -1)
        done = end
    return losses


def loss_by_position(model, docs, batch_size, max_batches=0, stride=0, ctx=None):
    """The mean loss at each position 0..L-2 of docs (n, L), at most max_batches batches of them (0: all):
    (a list of L - 1 floats, the documents used). BDH runs its chunked attention: equal to the direct form, with
    memory linear in the length."""
    dev = next(model.parameters()).device
    total = torch.zeros(docs.shape[1] - 1, dtype=torch.float64)
    n = 0
    form = getattr(model, "attention_form", None)
    if form:
        model.attention_form = "chunked"
    try:
        for b, start in enumerate(range(0, len(docs), batch_size)):
            if max_batches and b >= max_batches:
                break
            batch = torch.from_numpy(docs[start : start + batch_size]).to(dev)
            with ctx or torch.autocast("cpu", enabled=False):
                total += position_losses(model, batch[:, :-1], batch[:, 1:], stride).sum(dim=0)
            n += len(batch)
    finally:
        if form:
            model.attention_form = form
    return (total / n).tolist(), n


def position_buckets(n, lengths):
    """[start, end) ranges over positions 0..n-1, split at the powers of two and at the training lengths."""
    edges = sorted({0, n, *(2**k for k in range(n.bit_length()) if 2**k < n), *(t for t in lengths if t < n)})
    return list(zip(edges[:-1], edges[1:]))


def window_note(run, model, n, stride):
    """The context a model with a context limit (GPT) gives positions past it, or where it has none (BDH)."""
    limit = getattr(model.config, "block_size", None)
    if not limit:
        return f"{run}: no context limit, every position after all the tokens before it (chunked attention)"
    if limit >= n:
        return f"{run}: every position after all the tokens before it (within its block_size {limit})"
    s = min(stride or max(1, limit // 2), limit)
    return (f"{run}: past its block_size {limit}, windows of {limit} tokens moving by {s}: a position past {limit} "
            f"sees the last {limit - s + 1} to {limit} tokens")


def print_positions(result):
    """The mean loss in buckets of positions (position_buckets), per run; each bucket's mean is added to the run's
    dict (buckets)."""
    n, runs = result["positions"], result["runs"]
    names = [f"{r['run']} ({r['model']})" for r in runs]
    widths = [max(14, len(name) + 2) for name in names]
    print(f"mean loss by position (nats/token) over {result['documents']} val documents of at least {n + 1} tokens; "
          "* past the run's training length")
    print(f"{'positions':<12}" + "".join(f"{name:>{w}}" for name, w in zip(names, widths)))
    for a, b in position_buckets(n, [r["training_length"] for r in runs]):
        cells = []
        for r, w in zip(runs, widths):
            r.setdefault("buckets", []).append({"start": a, "end": b, "loss": float(np.mean(r["loss"][a:b]))})
            cells.append(f"{r['buckets'][-1]['loss']:.4f}{'*' if a >= r['training_length'] else ' '}".rjust(w))
        print(f"{str(a) if b == a + 1 else f'{a}-{b - 1}':<12}" + "".join(cells))


def plot_positions(result, path):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for run in result["runs"]:
        ax.plot(run["loss"], linewidth=1, label=f"{os.path.basename(os.path.normpath(run['run']))} ({run['model']})")
    for t in sorted({run["training_length"] for run in result["runs"]}):
        if t < result["positions"]:
            ax.axvline(t, color="gray", linestyle="--", linewidth=1)
            ax.text(t, 0.98, f" trained on {t} tokens", transform=ax.get_xaxis_transform(), va="top", fontsize=8)
    ax.set(xlabel="position in the document (tokens)", ylabel="mean loss (nats/token)",
           title=f"loss by position over {result['documents']} val documents")
    ax.legend()
    save_figure(fig, path, "loss by position")


