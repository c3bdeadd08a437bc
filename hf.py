"""
Our GPT to and from Hugging Face transformers, weight for weight: export.py writes a run as a transformers model,
train.py --init_from=gpt2|PATH starts from one. transformers (and safetensors) are imported only here.

Two forms exist in transformers for what our GPT can be:
- GPT2LMHeadModel: learned positions, LayerNorm, GELU (exact 'gelu' or GPT-2's tanh 'gelu_new'). Its Conv1D layers
  store weights as (in, out), ours as nn.Linear's (out, in). GPT-2 has biases everywhere: bias=False exports zeros.
  Grouped-query attention exports its key/value heads repeated (GPT-2 has no GQA), which computes the same.
- LlamaForCausalLM: rotary positions, RMSNorm, SwiGLU, no biases, any n_kv_head. Our rotary embedding turns the
  interleaved pairs (2i, 2i+1) of a head, Llama's the halves (i, i + hs/2): the rows of the query and key
  projections are permuted on the way out (and back on the way in), which gives the same attention scores.
- Qwen3ForCausalLM: Llama's blocks plus RMSNorm on each head's queries and keys (qk_norm). Qwen3's norms have gains
  and scale scores by 1/sqrt(hs); ours have none and scale by QK_NORM_SCALE/sqrt(hs): exported as gains of
  sqrt(QK_NORM_SCALE) on queries and keys alike (a uniform gain commutes with the rotation and the permutation).
A factorized embedding exports multiplied out; the padding rows of the vocabulary are dropped. An untied head
(tie_embeddings=False) exports as the model's own lm_head.
"""

import torch

from model import QK_NORM_SCALE, GPTConfig, pad_vocab, swiglu_hidden

GPT2_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ImportError("this needs transformers and safetensors: pip install transformers safetensors") from None
    return transformers


def hf_form(config):
    """'gpt2', 'llama' or 'qwen3': the transformers class a GPT config maps to; a ValueError saying why where none
    does (the option transformers has no form for)."""
    c = config
    for option, on in (("logit_softcap", c.logit_softcap), ("x0_skip", c.x0_skip), ("value_embeds", c.value_embeds)):
        if on:
            raise ValueError(f"{option}={on!r}: transformers' GPT-2, Llama and Qwen3 have no form for it; export a run "
                             "trained without it")
    if not c.rope and c.norm == "layernorm" and c.mlp in ("gelu", "gelu_tanh"):
        if c.qk_norm:
            raise ValueError("qk_norm=True exports as Qwen3 (rope=True, norm='rmsnorm', mlp='swiglu', bias=False); "
                             "GPT-2 has no query/key norm")
        return "gpt2"
    if c.rope and c.norm == "rmsnorm" and c.mlp == "swiglu":
        if c.bias:
            raise ValueError("a rope + rmsnorm + swiglu run exports as LlamaForCausalLM (Qwen3 with qk_norm), which "
                             "has no biases here: train with --bias=False")
        return "qwen3" if c.qk_norm else "llama"
    raise ValueError(f"transformers has no class for rope={c.rope}, norm={c.norm}, mlp={c.mlp}: GPT2LMHeadModel "
                     "takes learned positions + layernorm + gelu, LlamaForCausalLM rope + rmsnorm + swiglu")


def rotary_halves(hs):
    """Our interleaved rotary order -> Llama's halves: row j of Llama's head is our row perm[j]."""
    return torch.cat((torch.arange(0, hs, 2), torch.arange(1, hs, 2)))


def to_hf(model, eot_token=None):
    """A transformers model computing what our GPT `model` computes, with its weights."""
    transformers = _transformers()
    if type(model).__name__ != "GPT":
        raise ValueError(f"only GPT runs export to transformers; {type(model).__name__} has no transformers class")
    c = model.config
    form = hf_form(c)
    sd = {k: v.detach().float().clone() for k, v in model.state_dict().items()}
    wte = model.wte.full(c.vocab_size)  # the padding rows are never targets or samples
    tied = model.lm_head is model.wte
    hs, nkv = c.n_embd // c.n_head, c.n_kv_head or c.n_head
    out = {}
    if form == "gpt2":
        cfg = transformers.GPT2Config(
            vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head,
            activation_function="gelu_new" if c.mlp == "gelu_tanh" else "gelu", layer_norm_epsilon=1e-5,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=tied,
            bos_token_id=eot_token, eos_token_id=eot_token)
        out["transformer.wte.weight"] = wte
        out["transformer.wpe.weight"] = sd["wpe.weight"]
        out["transformer.ln_f.weight"] = sd["ln_f.weight"]
        out["transformer.ln_f.bias"] = sd.get("ln_f.bias", torch.zeros(c.n_embd))
        for i in range(c.n_layer):
            p, q = f"h.{i}.", f"transformer.h.{i}."
            for ln in ("ln_1", "ln_2"):
                out[q + ln + ".weight"] = sd[p + ln + ".weight"]
                out[q + ln + ".bias"] = sd.get(p + ln + ".bias", torch.zeros(c.n_embd))
            w = sd[p + "attn.c_attn.weight"]  # (C + 2 kv_dim, C): q, k, v rows
            b = sd.get(p + "attn.c_attn.bias", torch.zeros(w.size(0)))
            if nkv != c.n_head:  # GQA: each key/value head repeated for the query heads that read it
                def expand(t):
                    return t.view(nkv, hs, *t.shape[1:]).repeat_interleave(c.n_head // nkv, dim=0).flatten(0, 1)
                wq, wk, wv = w.split([c.n_embd, nkv * hs, nkv * hs])
                bq, bk, bv = b.split([c.n_embd, nkv * hs, nkv * hs])
                w, b = torch.cat((wq, expand(wk), expand(wv))), torch.cat((bq, expand(bk), expand(bv)))
            out[q + "attn.c_attn.weight"], out[q + "attn.c_attn.bias"] = w.t(), b
            for lin in ("attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
                w = sd[p + lin + ".weight"]
                out[q + lin + ".weight"] = w.t()  # Conv1D: (in, out)
                out[q + lin + ".bias"] = sd.get(p + lin + ".bias", torch.zeros(w.size(0)))
        hf = transformers.GPT2LMHeadModel(cfg)
    else:
        h = swiglu_hidden(c.n_embd)
        Config = transformers.Qwen3Config if form == "qwen3" else transformers.LlamaConfig
        cfg = Config(
            vocab_size=c.vocab_size, hidden_size=c.n_embd, intermediate_size=h, num_hidden_layers=c.n_layer,
            num_attention_heads=c.n_head, num_key_value_heads=nkv, head_dim=hs, max_position_embeddings=c.block_size,
            rms_norm_eps=1e-5, rope_theta=10000.0, attention_bias=False, hidden_act="silu",
            tie_word_embeddings=tied, bos_token_id=eot_token, eos_token_id=eot_token,
            **({"use_sliding_window": False} if form == "qwen3" else {"mlp_bias": False}))
        perm = rotary_halves(hs)
        out["model.embed_tokens.weight"] = wte
        out["model.norm.weight"] = sd["ln_f.weight"]
        for i in range(c.n_layer):
            p, q = f"h.{i}.", f"model.layers.{i}."
            wq, wk, wv = sd[p + "attn.c_attn.weight"].split([c.n_embd, nkv * hs, nkv * hs])
            out[q + "self_attn.q_proj.weight"] = wq.view(c.n_head, hs, -1)[:, perm].flatten(0, 1)
            out[q + "self_attn.k_proj.weight"] = wk.view(nkv, hs, -1)[:, perm].flatten(0, 1)
            out[q + "self_attn.v_proj.weight"] = wv
            out[q + "self_attn.o_proj.weight"] = sd[p + "attn.c_proj.weight"]
            gate, up = sd[p + "mlp.c_fc.weight"].chunk(2)
            out[q + "mlp.gate_proj.weight"], out[q + "mlp.up_proj.weight"] = gate, up
            out[q + "mlp.down_proj.weight"] = sd[p + "mlp.c_proj.weight"]
            out[q + "input_layernorm.weight"] = sd[p + "ln_1.weight"]
            out[q + "post_attention_layernorm.weight"] = sd[p + "ln_2.weight"]
            if form == "qwen3":  # our score scale as a gain on each side (uniform: the permutation doesn't matter)
                out[q + "self_attn.q_norm.weight"] = torch.full((hs,), QK_NORM_SCALE**0.5)
                out[q + "self_attn.k_norm.weight"] = torch.full((hs,), QK_NORM_SCALE**0.5)
        hf = (transformers.Qwen3ForCausalLM if form == "qwen3" else transformers.LlamaForCausalLM)(cfg)
    if not tied:
        out["lm_head.weight"] = model.lm_head.full(c.vocab_size)
    hf.load_state_dict({k: v.contiguous() for k, v in out.items()}, strict=False)
    missing = set(hf.state_dict()) - set(out) - ({"lm_head.weight"} if tied else set())  # tied: the embedding
    assert not missing, f"weights left at their init: {sorted(missing)[:5]}"
    return hf.eval()


def load_hf(name_or_path):
    """A transformers causal LM by hub name (downloaded, as nanoGPT's from_pretrained) or local folder."""
    transformers = _transformers()
    try:
        return transformers.AutoModelForCausalLM.from_pretrained(name_or_path, torch_dtype=torch.float32).eval()
    except OSError as e:
        raise OSError(f"--init_from={name_or_path}: can't load a transformers model ({str(e).splitlines()[0]})")


def from_hf(hf):
    """(model_args, state_dict) of our GPT holding a transformers GPT2LMHeadModel or LlamaForCausalLM's weights."""
    cfg = hf.config
    sd = {k: v.detach().float() for k, v in hf.state_dict().items()}
    V = cfg.vocab_size
    pad = pad_vocab(V) - V
    if cfg.model_type == "gpt2":
        if cfg.activation_function not in ("gelu", "gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"GPT-2 with activation {cfg.activation_function!r}: only gelu and gelu_new map here")
        args = dict(vocab_size=V, block_size=cfg.n_positions, n_layer=cfg.n_layer, n_head=cfg.n_head,
                    n_embd=cfg.n_embd, bias=True, rope=False, norm="layernorm",
                    mlp="gelu" if cfg.activation_function == "gelu" else "gelu_tanh")
        out = {"wte.weight": torch.cat((sd["transformer.wte.weight"], torch.zeros(pad, cfg.n_embd))),
               "wpe.weight": sd["transformer.wpe.weight"],
               "ln_f.weight": sd["transformer.ln_f.weight"], "ln_f.bias": sd["transformer.ln_f.bias"]}
        for i in range(cfg.n_layer):
            p, q = f"h.{i}.", f"transformer.h.{i}."
            for name in ("ln_1", "ln_2"):
                out[p + name + ".weight"], out[p + name + ".bias"] = sd[q + name + ".weight"], sd[q + name + ".bias"]
            for lin in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
                out[p + lin + ".weight"], out[p + lin + ".bias"] = sd[q + lin + ".weight"].t(), sd[q + lin + ".bias"]
    elif cfg.model_type in ("llama", "qwen3"):
        hs = cfg.hidden_size // cfg.num_attention_heads
        nkv = cfg.num_key_value_heads
        # transformers 5 keeps rope settings in rope_parameters, 4 in rope_theta and rope_scaling
        rope = getattr(cfg, "rope_parameters", None) or {"rope_theta": cfg.rope_theta, **(cfg.rope_scaling or {})}
        if getattr(cfg, "head_dim", hs) != hs or rope.get("rope_theta") != 10000.0 or \
                rope.get("rope_type", rope.get("type", "default")) != "default":
            raise ValueError(f"a Llama with head_dim {getattr(cfg, 'head_dim', hs)} and rope {rope}: this GPT's "
                             f"rope has head size n_embd / n_head = {hs} and theta 10000, unscaled")
        if cfg.intermediate_size != swiglu_hidden(cfg.hidden_size):
            raise ValueError(f"Llama's intermediate_size {cfg.intermediate_size} is not this GPT's swiglu width "
                             f"{swiglu_hidden(cfg.hidden_size)} for n_embd {cfg.hidden_size}")
        args = dict(vocab_size=V, block_size=cfg.max_position_embeddings, n_layer=cfg.num_hidden_layers,
                    n_head=cfg.num_attention_heads, n_embd=cfg.hidden_size,
                    n_kv_head=0 if nkv == cfg.num_attention_heads else nkv, bias=False, rope=True, norm="rmsnorm",
                    mlp="swiglu")
        if cfg.model_type == "qwen3":  # ours: no gains, scores scaled by QK_NORM_SCALE; only that maps
            gains = [sd[f"model.layers.{i}.self_attn.{n}_norm.weight"] for i in range(cfg.num_hidden_layers)
                     for n in "qk"]
            if not all(torch.allclose(g, torch.full_like(g, QK_NORM_SCALE**0.5)) for g in gains):
                raise ValueError(f"a Qwen3 whose query/key norm gains are not all {QK_NORM_SCALE**0.5}: this GPT's "
                                 "qk_norm has no gains (scores scaled by QK_NORM_SCALE); only its own export maps back")
            args["qk_norm"] = True
        back = torch.argsort(rotary_halves(hs))  # Llama's halves -> our interleaved pairs
        out = {"wte.weight": torch.cat((sd["model.embed_tokens.weight"], torch.zeros(pad, cfg.hidden_size))),
               "ln_f.weight": sd["model.norm.weight"]}
        for i in range(cfg.num_hidden_layers):
            p, q = f"h.{i}.", f"model.layers.{i}."
            wq = sd[q + "self_attn.q_proj.weight"].view(cfg.num_attention_heads, hs, -1)[:, back].flatten(0, 1)
            wk = sd[q + "self_attn.k_proj.weight"].view(nkv, hs, -1)[:, back].flatten(0, 1)
            out[p + "attn.c_attn.weight"] = torch.cat((wq, wk, sd[q + "self_attn.v_proj.weight"]))
            out[p + "attn.c_proj.weight"] = sd[q + "self_attn.o_proj.weight"]
            out[p + "mlp.c_fc.weight"] = torch.cat((sd[q + "mlp.gate_proj.weight"], sd[q + "mlp.up_proj.weight"]))
            out[p + "mlp.c_proj.weight"] = sd[q + "mlp.down_proj.weight"]
            out[p + "ln_1.weight"] = sd[q + "input_layernorm.weight"]
            out[p + "ln_2.weight"] = sd[q + "post_attention_layernorm.weight"]
    else:
        raise ValueError(f"a transformers {cfg.model_type!r} model has no GPT form here; gpt2, llama and qwen3 do")
    head = sd.get("lm_head.weight")
    if head is None or getattr(cfg, "tie_word_embeddings", True) and torch.equal(head, out["wte.weight"][:V]):
        out["lm_head.weight"] = out["wte.weight"]  # tied: one tensor under both names, as in GPT's own state dict
    else:  # a head of its own
        args["tie_embeddings"] = False
        out["lm_head.weight"] = torch.cat((head, torch.zeros(pad, head.size(1))))
    GPTConfig(**args)  # a shape that can't be built is a ValueError here
    return args, out
