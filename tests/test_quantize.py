"""--quantize=int8 (quantize.py): int8 weights for GPT and BDH on a CPU. Each property against float32 on the same
weights: the int8 layers replace every matrix product, the logits stay close, a decoding step's rows are their own
at any batch size (serve.py's batch), and BDH's int8 layer is BDH.layer with only its products changed."""


import pytest
import torch

from model import BDH, create_model
from quantize import Int8Linear, check_quantize, quantize_model

GPT = {"vocab_size": 97, "block_size": 32, "n_layer": 2, "n_head": 4, "n_embd": 64}
FORMS = {
    "gpt": ("gpt", GPT),
    "gpt_recipe": ("gpt", {**GPT, "rope": True, "norm": "rmsnorm", "mlp": "relu2", "qk_norm": True,
                           "tie_embeddings": False, "value_embeds": True, "embedding_rank": 16, "n_kv_head": 2}),
    "bdh": ("bdh", {"vocab_size": 97, "n_layer": 2, "n_head": 2, "n_embd": 32, "mlp_internal_dim_multiplier": 8}),
}


def pair(form):
    """(float32 model, its int8 copy), the same weights."""
    kind, args = FORMS[form]
    torch.manual_seed(0)
    model = create_model(kind, args).eval()
    torch.manual_seed(0)
    return model, quantize_model(create_model(kind, args).eval(), "int8", "cpu")


def logits(model, x):
    with torch.no_grad():
        return model(x)[0][..., : model.config.vocab_size]


@pytest.mark.parametrize("form", FORMS)
def test_int8_logits_stay_close_to_float32(form):
    model, int8 = pair(form)
    x = torch.randint(0, 97, (2, 24), generator=torch.Generator().manual_seed(1))
    a, b = logits(model, x), logits(int8, x)
    spread = a.std().item()
    assert 0 < (a - b).abs().max().item() < 0.2 * spread  # int8: close, and not the float model unchanged
    p, q = a.log_softmax(-1), b.log_softmax(-1)
    assert (p.exp() * (p - q)).sum(-1).mean() < 1e-3  # KL(float || int8) per token
    if form.startswith("gpt"):
        assert not any(isinstance(m, torch.nn.Linear) for m in int8.h.modules())  # no float matrix left (model.Linear too)
    assert isinstance(int8.lm_head.unembed.__self__, Int8Linear)  # the head too


@pytest.mark.parametrize("form", FORMS)
def test_a_decoding_row_is_its_own_at_any_batch_size(form):
    """serve.py decodes several streams in one step: with int8 too, a row's logits are the same bits as alone."""
    _, int8 = pair(form)
    prompts = torch.randint(0, 97, (3, 5), generator=torch.Generator().manual_seed(2))

    def decode(rows):  # generation.Batch's path: each prompt alone, then one-token steps of the rows together
        caches, first = [], []
        with torch.no_grad():
            for row in rows.split(1):
                caches.append(int8.new_cache())
                first.append(int8(row, cache=caches[-1])[0][:, -1:].argmax(-1))
            cache, token, out = type(caches[0]).concat(caches), torch.cat(first), []
            for _ in range(4):
                step, _ = int8(token, cache=cache)
                out.append(step[:, -1])
                token = step[:, -1:].argmax(-1)
        return torch.stack(out, 1)

    batched = decode(prompts)
    for i in range(3):
        assert torch.equal(batched[i], decode(prompts[i : i + 1])[0]), i


def test_bdh_layer_computes_through_its_three_products():
    """BDH.layer's products are the methods quantize.py replaces: products given on the instance that compute what the
    class's compute leave the logits as they are, for a prompt and for decoding steps; a control with one product
    wrong does not."""
    model, _ = pair("bdh")
    x = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(3))
    want = logits(model, x)
    model.encode, model.encode_v = (lambda x: BDH.encode(model, x)), (lambda y: BDH.encode_v(model, y))
    model.decode = lambda xy: BDH.decode(model, xy)
    assert (logits(model, x) - want).abs().max() < 1e-5
    model.decode = lambda xy: BDH.decode(model, xy) * 1.01
    assert (logits(model, x) - want).abs().max() > 1e-3


def test_bad_quantize_values_are_one_line():
    with pytest.raises(ValueError, match="--quantize='int4'; use int8"):
        check_quantize("int4", "cpu")
    with pytest.raises(ValueError, match="runs on the CPU .* not on --device=cuda"):
        check_quantize("int8", "cuda")
    with pytest.raises(ValueError, match="not --dtype=bfloat16"):
        check_quantize("int8", "cpu", "bfloat16")
    assert check_quantize("int8", "auto") == "cpu" and check_quantize("", "auto") == "auto"


def test_a_trained_run_loads_as_int8_and_scores_about_as_float32(tiny_runs, tiny_dataset):
    """load_model(..., quantize='int8'), as sample.py, eval.py and serve.py call it: the val loss moves little."""
    import numpy as np

    from checkpoints import load_model

    val = np.fromfile(f"{tiny_dataset}/val.bin", dtype=np.uint16)[: 4 * 33].astype(np.int64)
    x = torch.from_numpy(val).view(4, 33)
    for run in tiny_runs.values():
        losses = []
        for how in ("", "int8"):
            model, _, _ = load_model(run, quantize=how)
            with torch.no_grad():
                losses.append(model(x[:, :-1].contiguous(), x[:, 1:].contiguous())[1].item())
        assert getattr(model, "quantized", None) == "int8"
        assert 0 < abs(losses[0] - losses[1]) < 0.02, (run, losses)
