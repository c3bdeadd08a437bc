"""The small-model recipe's pieces (model.py's GPT options, optim.py's Muon and schedule, bfloat16 on a CPU), each
held to the property a user relies on, each beside a control that shows the check can fail."""

import math

import pytest
import torch
import torch.nn.functional as F

import hardware
import model as model_module
import optim
from model import create_model
from optim import Muon, learning_rate_at, muon_momentum_at, orthogonalize, schedule

torch.set_num_threads(1)
TINY = dict(block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0, vocab_size=64, bias=False, rope=True,
            norm="rmsnorm")


def gpt(**options):
    torch.manual_seed(0)
    return create_model("gpt", {**TINY, **options})


def tokens(B=3, T=16, seed=1):
    return torch.randint(0, 64, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("qk_norm", [True, False])
def test_qk_norm_gives_queries_and_keys_unit_rms(monkeypatch, qk_norm):
    seen = []
    sdpa = F.scaled_dot_product_attention

    def recording(q, k, v, **kw):
        seen.append((q, k, kw.get("scale")))
        return sdpa(q, k, v, **kw)

    monkeypatch.setattr(model_module.F, "scaled_dot_product_attention", recording)
    m = gpt(qk_norm=qk_norm)
    with torch.no_grad():
        for block in m.h:  # queries and keys far from unit RMS before the norm
            block.attn.c_attn.weight.mul_(7.0)
        m(tokens())
    assert len(seen) == 2
    for q, k, scale in seen:
        rms_q, rms_k = q.pow(2).mean(-1).sqrt(), k.pow(2).mean(-1).sqrt()  # per (batch, head, position)
        unit = torch.allclose(rms_q, torch.ones_like(rms_q), atol=1e-4) and torch.allclose(rms_k, torch.ones_like(rms_k),
                                                                                          atol=1e-4)
        assert unit == qk_norm  # the control (no qk_norm) is not at unit RMS
        assert scale == (model_module.QK_NORM_SCALE if qk_norm else 1.0) / math.sqrt(16)  # 1.44x at unit RMS


@pytest.mark.parametrize("cap", [15.0, 0.0])
def test_soft_capped_logits_stay_inside_the_cap(cap):
    m = gpt(logit_softcap=cap, tie_embeddings=False)
    with torch.no_grad():
        m.lm_head.weight.mul_(2000.0)  # raw logits in the hundreds
        logits, loss = m(tokens(), tokens(seed=2))
    real = logits[..., :64]
    assert torch.isfinite(loss)
    assert (real.abs().max() <= 15.0) == bool(cap)  # uncapped, the control goes far past 15


@pytest.mark.parametrize("zero_init", [True, False])
def test_zero_initialised_projections_make_each_block_the_identity(zero_init):
    m = gpt(zero_init=zero_init, mlp="relu2")
    x = torch.randn(2, 16, 32)
    rope = model_module.rope_cos_sin(torch.arange(16), 16, model_module.GPT_ROPE_THETA)
    with torch.no_grad():
        for block in m.h:
            assert torch.equal(block(x, rope), x) == zero_init  # the GPT-2 init's control changes x
    # and the model still learns: the zeros are only where it starts
    logits, loss = m(tokens(), tokens(seed=2))
    loss.backward()
    assert all(b.attn.c_proj.weight.grad.abs().sum() > 0 for b in m.h)


def test_zero_init_with_an_untied_head_starts_every_token_equally_likely():
    m = gpt(zero_init=True, tie_embeddings=False)
    _, loss = m(tokens(), tokens(seed=2))
    assert abs(loss.item() - math.log(64)) < 0.01
    assert m.lm_head is not m.wte and m.lm_head.weight.std() < 0.002


CONFIG = dict(learning_rate=1.0, min_lr=0.1, warmup_iters=10, lr_decay_iters=110, max_iters=110, decay_lr=True,
              lr_schedule_over="iters", max_minutes=0.0, warmdown_fraction=0.5, muon_momentum=0.95,
              muon_momentum_warmup=0)


def test_the_trapezoid_s_learning_rate_at_its_corners():
    c = {**CONFIG, "lr_schedule": "trapezoid"}
    lr = [learning_rate_at(it, 0.0, c) for it in range(121)]
    assert lr[0] == pytest.approx(1 / 11) and lr[9] == pytest.approx(10 / 11)  # the warmup
    assert lr[10] == lr[30] == lr[55] == 1.0  # flat until the last half (55 of 110)
    assert lr[82] == pytest.approx(0.1 + 0.9 * 28 / 55)  # linear down...
    assert lr[110] == lr[120] == pytest.approx(0.1)  # ...to min_lr at the end, and there after
    assert all(a >= b for a, b in zip(lr[10:], lr[11:]))
    # the control: cosine is already below the peak in the middle of the trapezoid's flat part
    assert learning_rate_at(30, 0.0, {**c, "lr_schedule": "cosine"}) < 0.99


def test_the_trapezoid_over_a_time_budget_decays_by_the_clock():
    c = {**CONFIG, "lr_schedule": "trapezoid", "lr_schedule_over": "time", "max_minutes": 1.0,
         "warmdown_fraction": 0.4}
    assert learning_rate_at(50, 35.0, c) == 1.0  # 35 of 60 s: before the last 40%
    assert learning_rate_at(50, 48.0, c) == pytest.approx(0.1 + 0.9 * 0.5)  # half way down
    assert learning_rate_at(50, 60.0, c) == pytest.approx(0.1)


def test_muon_s_momentum_warms_up_and_schedule_sets_it():
    c = {**CONFIG, "muon_momentum_warmup": 100}
    assert muon_momentum_at(0, c) == optim.MUON_MOMENTUM_START == 0.85
    assert muon_momentum_at(50, c) == pytest.approx(0.90)
    assert muon_momentum_at(100, c) == muon_momentum_at(500, c) == 0.95
    assert muon_momentum_at(0, CONFIG) == 0.95  # the control: no warmup, the full momentum from the start
    opts = gpt().configure_optimizers(0.0, 1.0, (0.8, 0.95), "cpu", "muon", muon_learning_rate=0.02)
    schedule(opts, 50, 0.0, {**c, "lr_schedule": "trapezoid"})
    assert opts[1].param_groups[0]["momentum"] == pytest.approx(0.90)
    assert opts[1].param_groups[0]["lr"] == pytest.approx(0.02)  # its own rate, at the schedule's peak
    assert "momentum" not in opts[0].param_groups[0]  # AdamW's groups are left alone


def newton_schulz_float64(G, steps):
    """The iteration written plainly, one matrix, float64."""
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.double()
    tall = X.size(0) > X.size(1)
    X = X.T if tall else X
    X = X / X.norm()
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return (X.T if tall else X).float()


def test_batched_orthogonalisation_equals_each_matrix_alone():
    torch.manual_seed(0)
    G = torch.randn(5, 24, 40)
    batched = orthogonalize(G, 5)
    for i in range(5):
        torch.testing.assert_close(batched[i], newton_schulz_float64(G[i], 5), rtol=1e-4, atol=1e-5)
    # tall matrices iterate on their transpose; the result is the transpose's
    torch.testing.assert_close(orthogonalize(G.mT, 5), batched.mT, rtol=1e-4, atol=1e-5)
    s = torch.linalg.svdvals(batched[0])
    assert 0.6 < s.min() and s.max() < 1.3  # near-orthogonal, as the iteration promises
    assert not torch.allclose(batched[0], newton_schulz_float64(G[1], 5), atol=1e-2)  # the control


def test_polar_express_ends_nearer_orthogonal_in_the_same_steps():
    """Polar Express's per-step coefficients leave the singular values nearer 1 than Jordan's quintic in 5 steps
    (the reason to use them), and still orthogonalise: the same U V^T direction."""
    torch.manual_seed(0)
    G = torch.randn(4, 64, 256) * torch.logspace(-3, 0, 256)  # singular values spread over three decades
    jordan, polar = orthogonalize(G, 5), orthogonalize(G, 5, polar_express=True)
    off = {name: (torch.linalg.svdvals(X) - 1).abs().mean() for name, X in (("jordan", jordan), ("polar", polar))}
    assert off["polar"] < 0.6 * off["jordan"], off
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    cosine = (polar * (U @ Vh)).sum(dim=(-2, -1)) / (polar.norm(dim=(-2, -1)) * (U @ Vh).norm(dim=(-2, -1)))
    assert (cosine > 0.95).all(), cosine
    assert off["jordan"] > 0.1  # the control: Jordan's quintic leaves them spread


def test_our_muon_steps_as_torch_optim_muon(monkeypatch):
    # matrices of one shape stepped together, and a (3, 8, 16) stack as three matrices, move exactly as
    # torch.optim.Muon moves each matrix alone (both in bfloat16, torch's precision)
    monkeypatch.setattr(optim, "cpu_has_bfloat16", lambda: True)
    torch.manual_seed(0)
    stack = torch.nn.Parameter(torch.randn(3, 8, 16))
    pair = [torch.nn.Parameter(torch.randn(8, 16)) for _ in range(2)]
    alone = [torch.nn.Parameter(stack.detach()[h].clone()) for h in range(3)] + [
        torch.nn.Parameter(p.detach().clone()) for p in pair]
    ours = Muon([stack, *pair], lr=0.02, momentum=0.95)
    reference = torch.optim.Muon(alone, lr=0.02, momentum=0.95, weight_decay=0.0)
    for _ in range(3):
        grads = torch.randn(5, 8, 16)
        stack.grad, pair[0].grad, pair[1].grad = grads[:3].clone(), grads[3].clone(), grads[4].clone()
        for i, p in enumerate(alone):
            p.grad = grads[i].clone()
        ours.step()
        reference.step()
    moved = [*stack.detach(), *(p.detach() for p in pair)]
    for mine, theirs in zip(moved, alone):
        torch.testing.assert_close(mine, theirs.detach(), rtol=0, atol=2e-4)
    assert (moved[0] - alone[1].detach()).abs().max() > 0.1  # the control: another matrix is far off


@pytest.mark.parametrize("shape", [(16, 40), (40, 16), (2, 16, 40)])
def test_normuon_moves_every_row_alike_at_the_update_s_size(shape):
    # one step of Muon with NorMuon: each row of a tall matrix (column of a wide one) moves by the same amount, and
    # the matrix as a whole by what plain Muon moves it; plain Muon (the control) moves them by different amounts
    torch.manual_seed(0)
    grad = torch.randn(shape)
    moved = {}
    for normuon in (True, False):
        p = torch.nn.Parameter(torch.zeros(shape))
        p.grad = grad.clone()
        Muon([p], lr=1.0, momentum=0.0, nesterov=False, normuon=normuon).step()
        moved[normuon] = -p.detach().reshape(-1, *shape[-2:])
    dim = -1 if shape[-2] >= shape[-1] else -2  # along a row of a tall matrix, a column of a wide one
    for normuon, m in moved.items():
        norms = m.norm(dim=dim)  # (matrices, rows or columns): each matrix of a stack on its own
        spread = (norms.max(dim=-1).values / norms.min(dim=-1).values).max().item()
        assert (spread < 1.001) if normuon else (spread > 1.02), (normuon, spread)
    torch.testing.assert_close(moved[True].norm(dim=(-2, -1)), moved[False].norm(dim=(-2, -1)), rtol=1e-5, atol=0)


def test_muon_resumes_the_state_of_the_per_head_muon_it_replaces():
    # a checkpoint's optimizer state from before (torch.optim.Muon over one 2-D view per head) loads into the
    # stacked parameter: the same momentum, so a resumed BDH run continues where it was
    torch.manual_seed(0)
    stack, flat = torch.nn.Parameter(torch.randn(3, 8, 16)), torch.nn.Parameter(torch.randn(8, 16))
    buffers = torch.randn(4, 8, 16)
    old = {"state": {i: {"momentum_buffer": buffers[i]} for i in range(4)},
           "param_groups": [{"params": [0, 1, 2, 3], "lr": 0.02, "momentum": 0.95, "nesterov": True, "ns_steps": 5,
                             "weight_decay": 0.0, "base_lr": 0.02}]}
    muon = Muon([stack, flat])
    muon.load_state_dict(old)
    torch.testing.assert_close(muon.state[stack]["momentum_buffer"], buffers[:3])
    torch.testing.assert_close(muon.state[flat]["momentum_buffer"], buffers[3])
    muon.load_state_dict(muon.state_dict())  # its own state round-trips
    torch.testing.assert_close(muon.state[flat]["momentum_buffer"], buffers[3])


def test_auto_dtype_on_a_cpu_follows_its_bfloat16_instructions(monkeypatch):
    for native, expected in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(hardware, "cpu_has_bfloat16", lambda native=native: native)
        assert hardware.resolve_device("cpu", "auto", False)[2] == expected


def test_bfloat16_on_a_cpu_gives_float32_s_loss_at_step_0():
    # the recipe's model in bfloat16 autocast: the loss within 0.02 of float32's (the rounding of 8-bit mantissas
    # through two layers); the control, another init, is far outside that tolerance
    m = gpt(mlp="relu2", qk_norm=True, tie_embeddings=False, logit_softcap=15.0, x0_skip=True, value_embeds=True)
    x, y = tokens(B=8), tokens(B=8, seed=2)
    with torch.no_grad():
        for block in m.h:  # a trained-looking model: projections away from 0, so the blocks do something
            block.attn.c_proj.weight.normal_(std=0.1)
        m.lm_head.weight.normal_(std=0.3)
        full = m(x, y)[1].item()
        with hardware.autocast("cpu", "bfloat16"):
            half = m(x, y)[1].item()
        assert abs(half - full) < 0.02, (half, full)
        other = gpt(mlp="relu2", qk_norm=True, tie_embeddings=False, logit_softcap=15.0)
        other.lm_head.weight.normal_(std=0.3, generator=torch.Generator().manual_seed(5))
        assert abs(other(x, y)[1].item() - full) > 0.02
