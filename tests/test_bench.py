"""bench.py: its table and JSON carry what users pick a model and GPU by; the speed claims it used to check are
here, timed by bench's own functions, each beside a control that shows the check can fail."""

import json
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import bench
from model import BDH, create_model
from tests.helpers import assert_one_line_error, run_script

# one thread: a second costs these small shapes more than it gives, and the test machine runs other jobs
torch.set_num_threads(1)

TINY = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=4", "--vocab_size=257",
        "--warmup_steps=1", "--timed_steps=3", "--generate_tokens=8", "--device=cpu", "--threads=1"]
TINY_BDH = ["--mlp_internal_dim_multiplier=4"]  # N = 4 * 32 / 2 = 64 neurons per head
SPEED_KEYS = ("train_tokens_per_sec", "ms_per_step", "flops_per_token", "flops_per_sec", "peak_mem_mb", "saved_mb",
              "generate_tokens_per_sec", "generate_nocache_tokens_per_sec")


# -----------------------------------------------------------------------------
# the table


def test_bench_reports_training_and_generation_speed_of_every_model(tmp_path):
    path = tmp_path / "bench.json"
    run_script("bench.py", *TINY, *TINY_BDH, "--model=all", f"--json={path}")
    report = json.loads(path.read_text())
    gpt, bdh = report["results"]
    assert (gpt["model"], bdh["model"]) == ("gpt", "bdh")
    for row in (gpt, bdh):
        for key in SPEED_KEYS:
            assert row[key] > 0, (row["model"], key)
        assert row["mfu"] is None  # no peak FLOP/s is known for a CPU: FLOP/s instead
        assert row["seq_len"] == 32 and row["batch_size"] == 4 and row["compile"] is False
        flops_per_sec = row["flops_per_token"] * row["train_tokens_per_sec"]
        assert abs(row["flops_per_sec"] - flops_per_sec) < 1e-6 * flops_per_sec
    # each model got the shape keys, and only the fields its config class has
    assert bdh["model_args"]["n_embd"] == gpt["model_args"]["n_embd"] == 32
    assert "block_size" not in bdh["model_args"] and "mlp_internal_dim_multiplier" not in gpt["model_args"]
    assert bdh["model_args"]["dropout"] == 0.1 and gpt["model_args"]["dropout"] == 0.0  # each model's own default
    assert bdh["attention_form"] == "direct" and gpt["attention_form"] is None  # auto: direct at T = 32
    assert report["device"] == "cpu" and report["threads"] == 1


def test_bench_bdh_alone_takes_bdh_config_defaults_and_the_attention_form_asked_for(tmp_path):
    path = tmp_path / "bench.json"
    tiny = [a for a in TINY if not a.startswith(("--n_embd", "--n_head"))]
    run_script("bench.py", *tiny, "--model=bdh", "--mlp_internal_dim_multiplier=2", "--attention_form=chunked",
               f"--json={path}")
    (bdh,) = json.loads(path.read_text())["results"]
    assert bdh["model"] == "bdh" and bdh["model_args"]["n_embd"] == 256 and bdh["model_args"]["n_head"] == 4
    assert bdh["attention_form"] == "chunked"
    assert all(bdh[key] > 0 for key in SPEED_KEYS)


def test_bench_on_a_prepared_dataset_takes_its_tokens_and_vocabulary(tmp_path, tiny_dataset):
    path = tmp_path / "bench.json"
    args = [a for a in TINY if not a.startswith("--vocab_size")]
    run_script("bench.py", *args, f"--dataset={tiny_dataset}", "--vocab_size=50257", f"--json={path}")
    report = json.loads(path.read_text())
    assert report["config"]["vocab_size"] == 257  # the data's, not the flag's: its ids must fit the model
    assert report["results"][0]["model_args"]["vocab_size"] == 257


def test_bench_rejects_an_unknown_model_in_one_line():
    proc = run_script("bench.py", *TINY, "--model=gtp", check=False)
    assert_one_line_error(proc, "--model='gtp'", "gpt, bdh or all")


# -----------------------------------------------------------------------------
# our GPT against a plain GPT-2


class ReferenceGPT(nn.Module):
    """A plain GPT-2, written separately from model.py, as the yardstick for our training step."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        C = c.n_embd
        self.wte = nn.Embedding(c.padded_vocab_size, C)
        self.wpe = nn.Embedding(c.block_size, C)
        self.blocks = nn.ModuleList()
        for _ in range(c.n_layer):
            block = {"ln1": nn.LayerNorm(C), "qkv": nn.Linear(C, 3 * C), "proj": nn.Linear(C, C),
                     "ln2": nn.LayerNorm(C), "fc": nn.Linear(C, 4 * C), "out": nn.Linear(4 * C, C)}
            self.blocks.append(nn.ModuleDict(block))
        self.ln_f = nn.LayerNorm(C)
        self.head = nn.Linear(C, c.padded_vocab_size, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, idx, targets):
        B, T = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for b in self.blocks:
            q, k, v = b["qkv"](b["ln1"](x)).view(B, T, 3, self.c.n_head, -1).permute(2, 0, 3, 1, 4)  # (B, nh, T, hs)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + b["proj"](y.transpose(1, 2).reshape(B, T, -1))
            x = x + b["out"](F.gelu(b["fc"](b["ln2"](x))))
        logits = self.head(self.ln_f(x))
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.view(-1))

    def flops_per_token(self, T):
        """6 FLOPs per matmul weight per token (forward 2, backward 4), the head included and the lookup tables not,
        plus causal attention's scores and values: 6 * n_layer * n_embd * T, half of 12 (the masked half skipped)."""
        matmul_weights = sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear))
        return 6 * matmul_weights + 6 * self.c.n_layer * self.c.n_embd * T


class FourTimes(nn.Module):
    """The control: a model whose training step does four times our GPT's work (forward and backward)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, idx, targets):
        losses = [self.net(idx, targets)[1] for _ in range(4)]
        return None, sum(losses) / 4


def step_of(net):
    """(model, optimizer, scaler) for bench.median_step_times: plain AdamW for every model alike."""
    optimizer = torch.optim.AdamW(net.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1)
    return net, optimizer, torch.amp.GradScaler("cpu", enabled=False)


def test_our_gpt_trains_as_fast_as_a_plain_gpt2():
    args = dict(n_layer=2, n_head=4, n_embd=128, block_size=128, vocab_size=257, dropout=0.0)
    torch.manual_seed(0)
    ours = create_model("gpt", args)
    reference = ReferenceGPT(ours.config)
    slow = FourTimes(create_model("gpt", args))
    # the same shape: the same parameters and the same work per token, counted separately
    assert sum(p.numel() for p in reference.parameters()) == ours.num_params()
    assert reference.flops_per_token(128) == ours.flops_per_token(128)
    x, y = torch.randint(0, 257, (2, 8, 128), generator=torch.Generator().manual_seed(0))
    steps = {"ours": step_of(ours), "reference": step_of(reference), "four times": step_of(slow)}
    t = bench.median_step_times(steps, x, y, warmup_steps=1, timed_steps=5)
    # a loose threshold: the suite shares two cores among parallel tests, and a slowdown of 2x is what this must
    # catch; BENCHMARKS.md holds the measured ratio (about 1.0). The control, four times the work, comes out near
    # 0.25 and must fail the same threshold, so a check that cannot tell the two apart fails this test
    assert t["reference"] / t["ours"] >= 0.5, t
    assert t["reference"] / t["four times"] < 0.5, t


# -----------------------------------------------------------------------------
# our BDH against a plain transcription of the paper's equations


class ReferenceBDH(nn.Module):
    """BDH written plainly from the paper's equations, in the layout of Pathway's reference code (batch first, the
    weights broadcast over the batch, rotary by slices and a stack, heads concatenated for the decoder), written
    separately from model.py as the yardstick for our BDH's training step. The same parameters as model.BDH."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        nh, D, N, V = c.n_head, c.n_embd, c.N, c.padded_vocab_size
        self.embed = nn.Embedding(V, D)
        self.encoder = nn.Parameter(torch.randn(nh, D, N) * 0.02)
        self.encoder_v = nn.Parameter(torch.randn(nh, D, N) * 0.02)
        self.decoder = nn.Parameter(torch.randn(nh * N, D) * 0.02)
        self.lm_head = nn.Parameter(torch.randn(D, V) * 0.02)
        self.drop = nn.Dropout(c.dropout)
        pair = torch.arange(N).div(2, rounding_mode="floor") * 2  # neurons 2i and 2i+1 share a frequency
        self.register_buffer("freqs", 1.0 / 2.0 ** (16 * pair / N) / (2 * math.pi))  # turns per position

    @staticmethod
    def ln(x):
        return F.layer_norm(x, x.shape[-1:])

    def rope(self, v):
        phases = (torch.arange(v.size(2)).view(-1, 1) * self.freqs) % 1 * (2 * math.pi)  # (T, N)
        v_rot = torch.stack((-v[..., 1::2], v[..., ::2]), dim=-1).view(*v.size())
        return v * phases.cos() + v_rot * phases.sin()

    def forward(self, idx, targets):
        B, T = idx.shape
        nh, N, D = self.c.n_head, self.c.N, self.c.n_embd
        x = self.ln(self.embed(idx).unsqueeze(1))  # (B, 1, T, D)
        for _ in range(self.c.n_layer):
            x_sparse = F.relu(x @ self.encoder)  # (B, nh, T, N)
            qr = self.rope(x_sparse)  # queries and keys are the same
            yKV = (qr @ qr.mT).tril(diagonal=-1) @ x  # (B, nh, T, D)
            y_sparse = F.relu(self.ln(yKV) @ self.encoder_v)
            xy_sparse = self.drop(x_sparse * y_sparse)
            yMLP = xy_sparse.transpose(1, 2).reshape(B, 1, T, N * nh) @ self.decoder  # (B, 1, T, D)
            x = self.ln(x + self.ln(yMLP))
        logits = x.view(B, T, D) @ self.lm_head
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def test_our_bdh_trains_faster_than_a_plain_transcription_and_saves_less_for_backward():
    args = dict(n_layer=2, n_head=2, n_embd=64, mlp_internal_dim_multiplier=16, vocab_size=257, dropout=0.0)
    torch.manual_seed(0)
    ours = create_model("bdh", args)
    reference = ReferenceBDH(ours.config)
    assert sum(p.numel() for p in reference.parameters()) == ours.num_params()
    x, y = torch.randint(0, 257, (2, 8, 128), generator=torch.Generator().manual_seed(0))
    # what autograd keeps is exact, not timed: 0.64x of the reference here, 0.54x at the demo's widths
    # (BENCHMARKS.md), where model.py's earlier layout kept 1.13x
    saved = bench.saved_for_backward_mb(ours, x, y) / bench.saved_for_backward_mb(reference, x, y)
    assert saved < 0.7, saved
    steps = {"ours": step_of(ours), "reference": step_of(reference), "four times": step_of(FourTimes(ours))}
    t = bench.median_step_times(steps, x, y, warmup_steps=1, timed_steps=5)
    # loose, as for the GPT above: a slowdown to half speed is what this must catch; the measured ratio at the
    # demo's widths is in BENCHMARKS.md. The control, four times our work, must fail the same threshold
    assert t["reference"] / t["ours"] >= 0.6, t
    assert t["reference"] / t["four times"] < 0.6, t


# -----------------------------------------------------------------------------
# BDH: its attention forms, and its recurrent generation against recomputation

# large enough that the claims hold by a margin (N = 1024: recomputation is compute-bound; chunks of 64 at T = 1024),
# small enough for a few seconds on one CPU thread
BDH_SHAPE = dict(n_layer=1, n_head=2, n_embd=64, mlp_internal_dim_multiplier=32, vocab_size=2048, dropout=0.0)


def bdh(attention_form="auto", chunk_size=64):
    torch.manual_seed(0)
    net = create_model("bdh", BDH_SHAPE)
    net.attention_form = attention_form
    net.chunk_size = chunk_size
    return net


def tokens(T):
    """x, y: one random sequence of length T."""
    return torch.randint(0, 2048, (2, 1, T), generator=torch.Generator().manual_seed(0))


def test_bdh_chunked_form_saves_less_for_backward_at_a_long_sequence():
    # the T x T scores (nh x T^2 floats, 16 MB at T = 1024) are what the chunked form does not keep; its speed
    # (1.7-2.4x the direct form's step at T = 1024 on one thread) is a figure for BENCHMARKS.md, not an assertion
    # that a loaded test machine can break. The control: at T = 128 the scores are 64x smaller, under the margin
    x, y = tokens(1024)
    assert bench.saved_for_backward_mb(bdh("chunked"), x, y) <= bench.saved_for_backward_mb(bdh("direct"), x, y) - 7
    x, y = tokens(128)
    assert bench.saved_for_backward_mb(bdh("chunked", 16), x, y) > bench.saved_for_backward_mb(bdh("direct", 16), x, y) - 7


def test_bdh_auto_is_the_direct_form_up_to_chunked_above():
    x, y = tokens(BDH.CHUNKED_ABOVE)
    auto = bdh("auto")
    assert not auto.uses_chunked(BDH.CHUNKED_ABOVE) and auto.uses_chunked(BDH.CHUNKED_ABOVE + 1)
    saved = {form: bench.saved_for_backward_mb(bdh(form), x, y) for form in ("auto", "direct", "chunked")}
    assert saved["auto"] == saved["direct"], saved
    # the control: the measure tells the forms apart, so equal memory means the same computation
    assert saved["chunked"] != saved["direct"], saved
    assert torch.equal(auto(x, y)[1], bdh("direct")(x, y)[1])


def test_bdh_recurrent_generation_reads_each_token_once():
    net = bdh()
    # the same tokens from the same seed: the recurrent state computes what recomputation computes
    prompt = torch.zeros((1, 1), dtype=torch.long)
    out = {c: net.generate(prompt, 64, generator=torch.Generator().manual_seed(0), use_cache=c) for c in (True, False)}
    assert torch.equal(out[True], out[False])
    # the work: positions through the model. With the state each new token is one position (64 in all); the
    # control, recomputing, reads the whole context every token (1 + 2 + ... + 64). The speed that follows
    # (10-17x for 256 new tokens on one thread) is BENCHMARKS.md's, not an assertion a loaded machine can break
    positions = []
    hook = net.register_forward_pre_hook(lambda module, args: positions.append(args[0].size(1)))
    for use_cache, expected in ((True, 64), (False, 64 * 65 // 2)):
        positions.clear()
        net.generate(prompt, 64, generator=torch.Generator().manual_seed(0), use_cache=use_cache)
        assert sum(positions) == expected, (use_cache, sum(positions))
    hook.remove()
