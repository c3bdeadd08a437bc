"""BDH: its three forms of attention compute the same function, a position never reads itself, fp16 stays finite."""

import pytest
import torch

from model import (BDH, BDHConfig, ChunkedAttention, DirectAttention, apply_rope, bdh_apply_rope, bdh_attention_chunked,
                   bdh_attention_direct, bdh_attention_step, bdh_rope)

torch.set_flush_denormal(True)
torch.set_num_threads(1)  # tiny models: a second thread costs more than it gives

TINY_BDH = dict(vocab_size=64, n_layer=2, n_head=2, n_embd=32, mlp_internal_dim_multiplier=4, dropout=0.0)


def tiny_bdh(**kw):
    torch.manual_seed(0)
    return BDH(BDHConfig(**{**TINY_BDH, **kw})).eval()


def logits_of(model, idx, form, chunk_size=None):
    model.attention_form, model.chunk_size = form, chunk_size or model.CHUNK_SIZE
    return model(idx)[0]


def test_direct_chunked_and_recurrent_forms_agree():
    model = tiny_bdh()
    idx = torch.randint(0, 64, (3, 16), generator=torch.Generator().manual_seed(1))
    direct = logits_of(model, idx, "direct")
    for chunk_size in (1, 4, 5, 16, 64):  # 5 does not divide 16; 64 is one chunk
        torch.testing.assert_close(logits_of(model, idx, "chunked", chunk_size), direct, rtol=1e-5, atol=1e-5)
    for prompt_len in (1, 7):  # token by token, and a (chunked) prefill followed by recurrent steps
        state = model.new_cache()
        steps = [model(idx[:, :prompt_len], cache=state)[0]]
        steps += [model(idx[:, t : t + 1], cache=state)[0] for t in range(prompt_len, 16)]
        torch.testing.assert_close(torch.cat(steps, dim=1), direct, rtol=1e-5, atol=1e-5)
        assert state.pos == 16 and all(S.dtype == torch.float32 for S in state.S)


def test_attention_forms_follow_the_definition_and_skip_the_current_position():
    g = torch.Generator().manual_seed(2)
    qr, v = torch.rand(2, 3, 11, 8, generator=g), torch.randn(2, 1, 11, 5, generator=g)  # (B, nh, T, N), (B, 1, T, D)

    def definition(qr, v):  # one position at a time: yKV_t = sum over s < t of (qr_t . qr_s) v_s
        return torch.stack([((qr[:, :, t, None] * qr[:, :, :t]).sum(-1, keepdim=True) * v[:, :, :t]).sum(2)
                            for t in range(qr.size(2))], dim=2)

    def recurrent(qr, v):
        state, ys = torch.zeros(2, 3, 8, 5), []
        for t in range(qr.size(2)):
            y = bdh_attention_step(qr[:, :, t : t + 1], v[:, :, t : t + 1], state)  # updates state in place
            ys.append(y)
        return torch.cat(ys, dim=2)

    forms = [bdh_attention_direct, lambda q, v: bdh_attention_chunked(q, v, 4)[0], recurrent]
    ref = definition(qr, v)
    assert torch.equal(ref[:, :, 0], torch.zeros(2, 3, 5))  # the first position has nothing to read
    _, state = bdh_attention_chunked(qr, v, 4, final_state=True)
    torch.testing.assert_close(state, qr.mT @ v)  # the state after the last position: all keys x values
    # a position's own value never reaches its output: change it at t, outputs up to t stay, t + 1 moves
    t, v2 = 6, v.clone()
    v2[:, :, t] += 10.0
    for form in forms:
        torch.testing.assert_close(form(qr, v), ref)
        y, y2 = form(qr, v), form(qr, v2)
        torch.testing.assert_close(y2[:, :, : t + 1], y[:, :, : t + 1], rtol=0, atol=1e-6)
        assert not torch.allclose(y2[:, :, t + 1], y[:, :, t + 1])


def test_training_backwards_equal_the_gradient_of_the_definition():
    """DirectAttention and ChunkedAttention rotate inside and write their backward out; autograd through the real
    rotation formula and bdh_attention_direct is the definition."""
    g = torch.Generator().manual_seed(7)
    x_sparse = torch.rand(3, 2, 11, 8, generator=g, dtype=torch.float64, requires_grad=True)  # (nh, B, T, N)
    v = torch.randn(1, 2, 11, 5, generator=g, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(3, 2, 11, 5, generator=g, dtype=torch.float64)
    cos, sin = (t.double() for t in bdh_rope(torch.arange(11), 8))
    qr = apply_rope(x_sparse, cos.repeat_interleave(2, dim=-1), sin.repeat_interleave(2, dim=-1))
    ref = torch.autograd.grad((bdh_attention_direct(qr, v) * dy).sum(), (x_sparse, v))
    forms = [lambda: DirectAttention.apply(x_sparse, v, cos, sin)]
    forms += [lambda c=c: ChunkedAttention.apply(x_sparse, v, cos, sin, c) for c in (1, 4, 11, 20)]
    for form in forms:
        grads = torch.autograd.grad((form() * dy).sum(), (x_sparse, v))
        for a, b in zip(grads, ref):
            torch.testing.assert_close(a, b)
    # the complex rotation (fp32, fp64) is the real one, forward and backward
    for dtype in (torch.float32, torch.float64):
        x = x_sparse.detach().to(dtype).requires_grad_()
        c, s = cos.to(dtype), sin.to(dtype)
        ours, real = bdh_apply_rope(x, c, s), apply_rope(x, c.repeat_interleave(2, -1), s.repeat_interleave(2, -1))
        torch.testing.assert_close(ours, real)
        w = torch.randn(ours.shape, generator=g, dtype=torch.float64).to(dtype)
        torch.testing.assert_close(torch.autograd.grad((ours * w).sum(), x)[0],
                                   torch.autograd.grad((real * w).sum(), x)[0])
    # and through the whole model: every parameter's gradient
    model = tiny_bdh()
    idx = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(8))
    grads = {}
    for form in ("direct", "chunked"):
        model.zero_grad()
        model.attention_form, model.chunk_size = form, 5
        model(idx, idx)[1].backward()
        grads[form] = [p.grad.clone() for p in model.parameters()]
    for a, b in zip(grads["chunked"], grads["direct"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("form", ["direct", "chunked"])
def test_logits_never_depend_on_later_tokens(form):
    model = tiny_bdh()
    idx = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(3))
    later = idx.clone()
    later[:, 9:] = (later[:, 9:] + 1) % 64
    a, b = logits_of(model, idx, form, 4), logits_of(model, later, form, 4)
    assert torch.equal(a[:, :9], b[:, :9]) and not torch.allclose(a[:, 9], b[:, 9])


def test_auto_form_switches_to_chunked_above_the_measured_crossover():
    model = tiny_bdh()
    assert not model.uses_chunked(model.CHUNKED_ABOVE) and model.uses_chunked(model.CHUNKED_ABOVE + 1)
    model.attention_form = "direct"
    assert not model.uses_chunked(10**6)


def test_recurrent_generation_equals_recomputation():
    model = tiny_bdh()
    idx = torch.randint(0, 64, (2, 5), generator=torch.Generator().manual_seed(4))
    outs = [model.generate(idx, 20, generator=torch.Generator().manual_seed(0), use_cache=c) for c in (True, False)]
    assert outs[0].shape == (2, 25) and torch.equal(*outs)


def test_activity_is_reported_as_detached_fractions():
    model = tiny_bdh()
    model.train()
    idx = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(5))
    _, loss = model(idx, idx)
    act = model.metrics()
    assert set(act) == set(model.metric_names()) == {"x_active", "y_active", "x_active_l0", "y_active_l0",
                                                     "x_active_l1", "y_active_l1"}
    for frac in act.values():
        assert frac.dim() == 0 and not frac.requires_grad and 0.0 < frac.item() <= 1.0
    # x_sparse = ReLU(x E) of a fresh model: about half of the neurons are positive
    assert 0.3 < act["x_active"].item() < 0.7


def test_activity_per_layer_and_head_agrees_with_a_direct_count():
    model = tiny_bdh()
    model.eval()
    idx = torch.randint(0, 64, (3, 16), generator=torch.Generator().manual_seed(5))
    seen = {}
    model.neuron_hook = lambda i, xs, ys: seen.update({i: (xs.detach().clone(), ys.detach().clone())})
    model(idx)
    assert model.activity.shape == (2, 2, 2)  # (n_layer, x and y, nh)
    for i, (xs, ys) in seen.items():
        for j, t in enumerate((xs, ys)):  # (B, nh, T, N)
            direct = torch.tensor([[(t[b, h] > 0).sum().item() for b in range(3)] for h in range(2)]).sum(1)
            assert torch.allclose(model.activity[i, j], direct / (3 * 16 * model.config.N))
    # layer 0's x_sparse, by hand from the weights: the hook saw the model's real neurons
    x = torch.nn.functional.layer_norm(model.embed(idx), (32,)).unsqueeze(1)
    assert torch.allclose(seen[0][0], torch.relu(x @ model.encoder), atol=1e-6)
    m = model.metrics()
    assert torch.allclose(m["y_active_l1"], model.activity[1, 1].mean())
    assert torch.allclose(m["x_active"], model.activity[:, 0].mean())
    assert model.activity[0, 0, 0] != model.activity[0, 0, 1]  # heads differ, so a per-head mix-up would show


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_autocast_stays_finite_where_fp16_scores_overflow(dtype):
    model = tiny_bdh()
    with torch.no_grad():
        model.encoder.mul_(200.0)  # large neuron activations: unnormalised sums far beyond fp16's 65504
    idx = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(6))
    ref = logits_of(model, idx, "direct")
    # the control: the same scores computed in fp16 do overflow
    x = torch.nn.functional.layer_norm(model.embed(idx), (32,)).unsqueeze(1)
    qr = torch.relu(x @ model.encoder).half()
    assert not torch.isfinite(bdh_attention_direct(qr, x.half())).all()
    for form in ("direct", "chunked"):
        with torch.autocast("cpu", dtype=dtype):
            logits = logits_of(model, idx, form, 4)
        assert torch.isfinite(logits).all()
        torch.testing.assert_close(logits.float(), ref, rtol=0.1, atol=0.1)
    with torch.autocast("cpu", dtype=dtype):
        out = model.generate(idx[:, :4], 8, temperature=0)
    assert out.shape == (2, 12)
