"""
Our GPT as GGUF, llama.cpp's file format: one file with the weights, the hyperparameters and the tokenizer, so that
llama.cpp (llama-cli, llama-server, llama-cpp-python) needs nothing else. export.py --format=gguf writes it; the
`gguf` package (llama.cpp's own reference writer, on PyPI) is imported only here.

The architectures llama.cpp knows that our GPT can be, chosen from the config (gguf_arch):
- gpt2: learned positions, LayerNorm, GELU. Tensors as ours (nn.Linear's (out, in) is GGUF's row order); biases
  everywhere (bias=False writes zeros); grouped-query attention native (head_count_kv). llama.cpp's GELU is the
  tanh approximation: an mlp='gelu' run (exact GELU) differs by that approximation (tests/test_gguf.py bounds it).
- llama: rotary positions, RMSNorm, SwiGLU, any n_kv_head, biases optional. llama.cpp's llama rotates consecutive
  pairs (2i, 2i+1) of a head, as our GPT does: the query and key rows go in unpermuted (transformers' Llama, with
  its halves, is what needs hf.py's permutation).
- qwen3: llama's blocks plus qk_norm. Qwen3 normalizes queries and keys with a gain, so ours (no gain, scores
  scaled by QK_NORM_SCALE) is a gain of QK_NORM_SCALE on the queries and 1 on the keys. Its rotary turns halves,
  so the query and key rows are permuted as hf.py permutes them for transformers.
A factorized embedding (embedding_rank) is multiplied out; an untied head is written as `output`; the padding rows
of the vocabulary are dropped. BDH, logit_softcap, x0_skip, value_embeds and mlp='relu2' have no form in these
architectures: a ValueError naming the option.

Tensor types follow llama.cpp's convert_hf_to_gguf.py: 1-D tensors (norms, biases) and the position table stay
float32; the matrices are f16, or q8_0 (blocks of 32 int8 weights with one f16 scale; a matrix whose rows are not
a multiple of 32 falls back to f16).

The tokenizer goes in as llama.cpp's BPE ("gpt2" tokenizer model): token strings in GPT-2's byte-to-character
spelling, merges in order, end-of-text as a control token, no BOS added (sample.py adds none either). Three kinds
of ours have that form (gguf_tokenizer): tiktoken's encodings (merges recovered from tiktoken's ranks), byte-level
BPEs in a tokenizer.json of GPT-2's shape (bpe:N), and `bytes`: 256 byte tokens and no merges that can ever apply.
Each is checked against llama.cpp's own tokenization in tests/test_gguf.py.
"""

import functools
import os
import tempfile

import numpy as np
import torch

from hf import rotary_halves
from model import QK_NORM_SCALE, swiglu_hidden

GGUF_TYPES = ("f16", "q8_0")
# tiktoken's split patterns by encoding, and llama.cpp's pre-tokenizer with the same split
TIKTOKEN_PRE = {"gpt2": "gpt-2", "r50k_base": "gpt-2", "p50k_base": "gpt-2", "cl100k_base": "llama-bpe",
                "o200k_base": "gpt-4o"}
CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"
EXPORTABLE_TOKENIZERS = "bytes, gpt2 and tiktoken's other encodings, bpe:N (and a GPT-2-style byte-level tokenizer.json)"


def check_gguf_type(gguf_type):
    if gguf_type not in GGUF_TYPES:
        raise ValueError(f"--gguf_type={gguf_type!r}; use one of {', '.join(GGUF_TYPES)}")


def _gguf():
    try:
        import gguf
    except ImportError:
        raise ImportError("--format=gguf needs llama.cpp's gguf package: pip install gguf") from None
    return gguf


def gguf_arch(model):
    """'gpt2', 'llama' or 'qwen3': llama.cpp's architecture for our model; a ValueError naming the option where
    none computes what it computes."""
    if type(model).__name__ != "GPT":
        raise ValueError(f"only GPT runs export to GGUF; llama.cpp has no architecture for {type(model).__name__}")
    c = model.config
    for option, on in (("logit_softcap", c.logit_softcap), ("x0_skip", c.x0_skip), ("value_embeds", c.value_embeds)):
        if on:
            raise ValueError(f"{option}={on!r}: llama.cpp's gpt2 and llama architectures have no form for it; "
                             "export a run trained without it")
    if c.mlp == "relu2":
        raise ValueError("mlp='relu2': llama.cpp's gpt2 and llama architectures have no ReLU^2 MLP; export a run "
                         "with mlp='gelu', 'gelu_tanh' or 'swiglu'")
    if not c.rope and c.norm == "layernorm" and c.mlp in ("gelu", "gelu_tanh"):
        if c.qk_norm:
            raise ValueError("qk_norm=True with learned positions: llama.cpp's gpt2 architecture has no query/key "
                             "norm (qk_norm exports with rope=True, norm='rmsnorm', mlp='swiglu', bias=False)")
        return "gpt2"
    if c.rope and c.norm == "rmsnorm" and c.mlp == "swiglu":
        if not c.qk_norm:
            return "llama"
        if c.bias:
            raise ValueError("qk_norm=True exports as llama.cpp's qwen3 architecture, which has no biases in its "
                             "projections: train with --bias=False")
        return "qwen3"
    raise ValueError(f"llama.cpp has no architecture for rope={c.rope}, norm={c.norm}, mlp={c.mlp}: its gpt2 takes "
                     "learned positions + layernorm + gelu, its llama rope + rmsnorm + swiglu")


def gguf_tensors(model, arch):
    """{GGUF tensor name: float32 tensor} of our GPT in llama.cpp's names for arch."""
    c = model.config
    sd = {k: v.detach().float() for k, v in model.state_dict().items()}
    hs, nkv = c.n_embd // c.n_head, c.n_kv_head or c.n_head
    out = {"token_embd.weight": model.wte.full(c.vocab_size), "output_norm.weight": sd["ln_f.weight"]}
    if model.lm_head is not model.wte:  # untied: a head of its own (tied, llama.cpp reads token_embd)
        out["output.weight"] = model.lm_head.full(c.vocab_size)
    zeros = torch.zeros  # gpt2 requires every bias; bias=False is a bias of zeros
    if arch == "gpt2":
        out["position_embd.weight"] = sd["wpe.weight"]
        out["output_norm.bias"] = sd.get("ln_f.bias", zeros(c.n_embd))
    for i in range(c.n_layer):
        p, q = f"h.{i}.", f"blk.{i}."
        names = {"ln_1": "attn_norm", "ln_2": "ffn_norm", "attn.c_proj": "attn_output", "mlp.c_proj": "ffn_down"}
        for ours, theirs in names.items():
            out[q + theirs + ".weight"] = sd[p + ours + ".weight"]
            if p + ours + ".bias" in sd:
                out[q + theirs + ".bias"] = sd[p + ours + ".bias"]
        w = sd[p + "attn.c_attn.weight"]  # (C + 2 kv_dim, C): q, k, v rows
        b = sd.get(p + "attn.c_attn.bias")
        if arch == "gpt2":
            out[q + "attn_qkv.weight"] = w
            out[q + "attn_qkv.bias"] = zeros(w.size(0)) if b is None else b
            out[q + "ffn_up.weight"] = sd[p + "mlp.c_fc.weight"]
            out[q + "ffn_up.bias"] = sd.get(p + "mlp.c_fc.bias", zeros(4 * c.n_embd))
            for name in ("attn_norm", "ffn_norm", "attn_output", "ffn_down"):
                out.setdefault(q + name + ".bias", zeros(c.n_embd))
            continue
        parts = dict(zip("qkv", w.split([c.n_embd, nkv * hs, nkv * hs])))
        biases = dict(zip("qkv", b.split([c.n_embd, nkv * hs, nkv * hs]))) if b is not None else {}
        if arch == "qwen3":  # NEOX rotary: halves, as transformers' Llama
            perm = rotary_halves(hs)
            for k, heads in (("q", c.n_head), ("k", nkv)):
                parts[k] = parts[k].view(heads, hs, -1)[:, perm].flatten(0, 1)
            out[q + "attn_q_norm.weight"] = torch.full((hs,), QK_NORM_SCALE)  # our score scale, as a query gain
            out[q + "attn_k_norm.weight"] = torch.ones(hs)
        for k in "qkv":
            out[q + f"attn_{k}.weight"] = parts[k]
            if k in biases:
                out[q + f"attn_{k}.bias"] = biases[k]
        h = swiglu_hidden(c.n_embd)
        gate, up = sd[p + "mlp.c_fc.weight"].chunk(2)  # SwiGLU's c_fc holds the gate's rows, then up's
        out[q + "ffn_gate.weight"], out[q + "ffn_up.weight"] = gate, up
        if p + "mlp.c_fc.bias" in sd:
            out[q + "ffn_gate.bias"], out[q + "ffn_up.bias"] = sd[p + "mlp.c_fc.bias"].split([h, h])
    return out


# -----------------------------------------------------------------------------
# tokenizers


def byte_chars():
    """GPT-2's spelling of the 256 bytes as printable characters: byte-level BPE token strings are written in it."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, n = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:  # control characters, space, etc. move past 255
            chars[b] = chr(256 + n)
            n += 1
    return chars


def merges_from_ranks(ranks):
    """tiktoken keeps a BPE as the ranks of byte strings; llama.cpp wants its merges, in order. A token of rank r
    is the merge of the two parts that BPE leaves of its bytes when only ranks below r may merge (as transformers'
    tiktoken converter does). In rank order, llama.cpp's lowest merge first is tiktoken's lowest rank first."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        # BPE's two parts are tokens of lower rank: where only one split gives two such, it is the merge (10x faster)
        splits = [(token[:i], token[i:]) for i in range(1, len(token))
                  if ranks.get(token[:i], rank) < rank and ranks.get(token[i:], rank) < rank]
        if len(splits) <= 1:
            merges.extend(splits)
            continue
        parts = [token[i:i + 1] for i in range(len(token))]
        while len(parts) > 2:
            best = min(((ranks.get(a + b, rank), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))))
            if best[0] >= rank:
                break
            i = best[1]
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        if len(parts) == 2:
            merges.append(parts)
    return merges


@functools.lru_cache(maxsize=2)
def _tiktoken_bpe(spec):
    """({id: token string}, merges) of a tiktoken encoding, kept: recovering the merges takes seconds, and an f16
    and a q8_0 export in one process need them twice."""
    import tiktoken

    ranks = tiktoken.get_encoding(spec)._mergeable_ranks  # tiktoken's own table: bytes -> rank (= token id)
    chars = byte_chars()
    spell = lambda b: "".join(chars[x] for x in b)  # noqa: E731
    merges = [f"{spell(a)} {spell(b)}" for a, b in merges_from_ranks(ranks)]
    return {rank: spell(b) for b, rank in ranks.items()}, merges


def gguf_tokenizer(spec, run_dir, vocab_size):
    """Our tokenizer in llama.cpp's BPE form: {pre, tokens, types, merges, eot}; a ValueError saying which tokenizers
    export where it has none. vocab_size: the model's, which the token list must fill."""
    from tokenizer import get_tokenizer

    ours = get_tokenizer(spec, run_dir)
    if spec == "bytes":
        pre, tokens = "gpt-2", byte_chars()  # token b is byte b
        special = {"<|endoftext|>": ours.eot_token}
        # no merge can apply: BPE's symbols start as single characters and only merges join them. The gguf writer
        # refuses an empty list, and llama.cpp a missing one, so the list holds one merge of two longer strings.
        merges = ["<|endoftext|> <|endoftext|>"]
    elif type(ours).__name__ == "TiktokenTokenizer":
        if spec not in TIKTOKEN_PRE:
            raise ValueError(f"tiktoken's {spec!r} has no llama.cpp pre-tokenizer here ({', '.join(TIKTOKEN_PRE)} "
                             "do)")
        pre, (tokens, merges) = TIKTOKEN_PRE[spec], _tiktoken_bpe(spec)
        tokens, special = dict(tokens), dict(ours.enc._special_tokens)
    elif type(ours).__name__ == "HFTokenizer":
        import json

        tok = json.loads(ours.tok.to_str())
        pre_tok, model = tok.get("pre_tokenizer") or {}, tok["model"]
        if not (model["type"] == "BPE" and pre_tok.get("type") == "ByteLevel" and pre_tok.get("use_regex", True)
                and not pre_tok.get("add_prefix_space") and not tok.get("normalizer")):
            raise ValueError(f"tokenizer {spec!r} is not a GPT-2-style byte-level BPE, the tokenizer.json form "
                             f"llama.cpp reads here; these export to GGUF: {EXPORTABLE_TOKENIZERS}")
        pre, tokens = "gpt-2", {i: t for t, i in model["vocab"].items()}
        merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
        special = {t["content"]: t["id"] for t in tok.get("added_tokens", []) if t.get("special")}
    else:
        raise ValueError(f"tokenizer {spec!r} has no form in llama.cpp; these export to GGUF: {EXPORTABLE_TOKENIZERS}")
    tokens.update({i: t for t, i in special.items()})
    if max(tokens) >= vocab_size:
        raise ValueError(f"tokenizer {spec!r} has token id {max(tokens)}, but the model's vocab_size is {vocab_size}")
    # ids with no token (tiktoken's gaps before its special tokens) get unique placeholders llama.cpp never emits
    gguf = _gguf()
    names = [tokens.get(i, f"[PAD{i}]") for i in range(vocab_size)]
    types = [gguf.TokenType.CONTROL if i in special.values() else gguf.TokenType.NORMAL if i in tokens
             else gguf.TokenType.UNUSED for i in range(vocab_size)]
    return {"pre": pre, "tokens": names, "types": [int(t) for t in types], "merges": merges, "eot": ours.eot_token}


# -----------------------------------------------------------------------------
# the file


def write_gguf(model, meta, run_dir, path, gguf_type="f16", name="small-lm"):
    """Write our GPT `model` with the tokenizer of meta (files in run_dir) to path as GGUF; gguf_type 'f16' or
    'q8_0'. Written beside path, then renamed: a failed export leaves no partial file. Returns (arch, the types
    written: {ggml type name: tensor count})."""
    check_gguf_type(gguf_type)
    gguf = _gguf()
    arch = gguf_arch(model)
    c = model.config
    vocab = gguf_tokenizer(meta["tokenizer"], run_dir, c.vocab_size)
    tensors = gguf_tensors(model, arch)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".export-", suffix=".gguf", dir=folder)
    os.close(fd)
    try:
        w = gguf.GGUFWriter(tmp, arch)
        w.add_name(name)
        w.add_context_length(c.block_size)
        w.add_embedding_length(c.n_embd)
        w.add_block_count(c.n_layer)
        w.add_head_count(c.n_head)
        w.add_head_count_kv(c.n_kv_head or c.n_head)
        w.add_vocab_size(c.vocab_size)
        w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if gguf_type == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        if arch == "gpt2":
            w.add_feed_forward_length(4 * c.n_embd)
            w.add_layer_norm_eps(1e-5)
        else:
            w.add_feed_forward_length(swiglu_hidden(c.n_embd))
            w.add_layer_norm_rms_eps(1e-5)
            w.add_rope_dimension_count(c.n_embd // c.n_head)
            w.add_rope_freq_base(10000.0)
            w.add_key_length(c.n_embd // c.n_head)
            w.add_value_length(c.n_embd // c.n_head)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(vocab["pre"])
        w.add_token_list(vocab["tokens"])
        w.add_token_types(vocab["types"])
        w.add_token_merges(vocab["merges"])
        w.add_bos_token_id(vocab["eot"])
        w.add_eos_token_id(vocab["eot"])
        w.add_add_bos_token(False)
        w.add_add_eos_token(False)
        # llama-cli is a chat program: it wraps a prompt in the model's chat template. Ours has no chat turns, so the
        # template passes the text through unchanged, and llama-cli -p continues the prompt as sample.py does
        w.add_chat_template(CHAT_TEMPLATE)
        written = {}
        for tensor_name, t in tensors.items():
            data = t.contiguous().numpy().astype(np.float32)
            qtype = gguf.GGMLQuantizationType.F32
            if data.ndim > 1 and tensor_name != "position_embd.weight":
                qtype = gguf.GGMLQuantizationType.F16 if gguf_type == "f16" else gguf.GGMLQuantizationType.Q8_0
            try:
                data = gguf.quants.quantize(data, qtype)
            except gguf.QuantError:  # rows not a whole number of q8_0 blocks
                qtype = gguf.GGMLQuantizationType.F16
                data = gguf.quants.quantize(data, qtype)
            w.add_tensor(tensor_name, data, raw_dtype=qtype)
            written[qtype.name] = written.get(qtype.name, 0) + 1
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's file is private
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return arch, written


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
