"""export.py --format=gguf checked by a real llama.cpp (llama-cpp-python): it tokenizes as we do, its logits at every
position are ours (within f16's and q8_0's rounding), a trained run's greedy continuation is sample.py's at
--temperature=0, and q8_0's loss on val text stands next to f16's. For a GPT-2-architecture run and a
rope + rmsnorm + swiglu run, byte-level (trained on the tiny dataset) and with GPT-2's tokenizer (offline tiktoken
files), and for every option with a form in llama.cpp. Without llama-cpp-python (pip builds llama.cpp from source;
.ci/run does it in the background) those checks skip and say why; the writer's own checks run anyway."""

import os

import numpy as np
import pytest
import torch

from checkpoints import load_model
from model import create_model
from tests.helpers import ONE_THREAD, SHARED_DATA, TINY_MODEL, ForkServer
from tokenizer import get_tokenizer

gguf = pytest.importorskip("gguf", reason="--format=gguf needs the gguf package (pip install -r requirements-test.txt)")
import llamacpp  # noqa: E402 (after the skip)

try:
    import llama_cpp
except ImportError:  # llama-cpp-python compiles llama.cpp when pip installs it; where that failed, say so
    llama_cpp = None
needs_llama_cpp = pytest.mark.skipif(llama_cpp is None, reason="llama-cpp-python is not installed (pip install "
                                     "llama-cpp-python builds llama.cpp from source; .ci/run does it in the background)")
TIKTOKEN_CACHE = os.path.join(SHARED_DATA, "tiktoken_cache")
needs_gpt2_files = pytest.mark.skipif(not os.path.isdir(TIKTOKEN_CACHE), reason="needs ../shared/data's GPT-2 "
                                      "tokenizer files (tiktoken can't download them offline)")
TEXTS = ["Once upon a time, Tom's cat sat on the mat.\n\nThe end.", "  two  spaces\tand a tab, 123 4567 3.14159",
         "ünïcödé, 日本語 and 🙂 in bytes", "<|endoftext|> is plain text here", "I'll say we've DON'T 'quoted'\r\n",
         "hello\nworld\n\n\n   trailing   "]
LLAMA = ["--rope=True", "--norm=rmsnorm", "--mlp=swiglu", "--bias=False"]
# llama.cpp's f16 and q8_0 against our float32 logits: the largest relative error at any position,
# |ours - theirs| / |ours| (measured here: about 1e-3 and 3e-2 on these tiny models, widths of 32)
TOLERANCE = {"f16": 5e-3, "q8_0": 8e-2}


def load(path, n_ctx):
    """llama.cpp's model at path, keeping the logits of every position, on one thread (a busy 2-core CPU)."""
    return llama_cpp.Llama(str(path), n_ctx=n_ctx, n_batch=n_ctx, logits_all=True, n_threads=1, verbose=False)


def their_logits(llm, ids):
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)])


def our_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids]))[0][0, :, : model.config.vocab_size].float().numpy()


def relative_error(theirs, ours):
    """The largest |theirs - ours| / |ours| over positions (each a vector of vocab_size logits)."""
    return float((np.linalg.norm(theirs - ours, axis=1) / np.linalg.norm(ours, axis=1)).max())


@pytest.fixture(scope="module")
def forks(tmp_path_factory):
    server = ForkServer(str(tmp_path_factory.mktemp("gguf_forks")), env=ONE_THREAD)
    yield server
    server.close()


@pytest.fixture(scope="module")
def runs(tiny_dataset, forks, tmp_path_factory):
    """Two byte-level runs of the tiny dataset, each exported by export.py as f16 and q8_0: a GPT-2-style GPT and a
    rope + rmsnorm + swiglu GPT with grouped-query attention. 200 iterations teach both the dataset's sentences
    (val loss about 0.14), so their greedy continuations are sentences, not one token repeated."""
    folder = tmp_path_factory.mktemp("gguf_runs")
    out = {}
    for arch, options in (("gpt2", []), ("llama", [*LLAMA, "--n_kv_head=1"])):
        run = str(folder / arch)
        proc = forks.run("train.py", f"--dataset={tiny_dataset}", f"--out_dir={run}", *TINY_MODEL, *options,
                         "--max_iters=200", "--eval_interval=200", "--learning_rate=1e-2")
        assert proc.returncode == 0, proc.stderr[-2000:]
        for gguf_type in ("f16", "q8_0"):
            path = folder / f"{arch}-{gguf_type}.gguf"
            proc = forks.run("export.py", f"--out_dir={run}", "--format=gguf", f"--gguf_type={gguf_type}",
                             f"--to={path}")
            assert proc.returncode == 0, proc.stderr[-2000:]
            assert f"llama.cpp {arch}, tokenizer 'bytes'" in proc.stdout
            out[arch, gguf_type] = path
        out[arch] = run
    return out


def tiny_gpt(vocab_size=257, **extra):
    """A random tiny GPT whose biases and gains are off their 0 and 1 inits, so a mapping mistake shows."""
    torch.manual_seed(0)
    args = {"vocab_size": vocab_size, "block_size": 64, "n_layer": 2, "n_head": 2, "n_embd": 32, **extra}
    model = create_model("gpt", args).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def val_windows(tiny_dataset, block_size, n=8):
    """The first n non-overlapping windows of block_size + 1 tokens of the tiny dataset's val split."""
    tokens = np.fromfile(os.path.join(tiny_dataset, "val.bin"), dtype=np.uint16).astype(np.int64)
    return [tokens[i * block_size : (i + 1) * block_size + 1].tolist() for i in range(n)]


# -----------------------------------------------------------------------------
# trained byte-level runs, exported by export.py


@needs_llama_cpp
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_llama_cpp_computes_a_trained_run_s_logits_and_loss(arch, runs, tiny_dataset):
    model, ckpt, _ = load_model(runs[arch])
    T = ckpt["config"]["block_size"]
    windows = val_windows(tiny_dataset, T)
    losses, errors = {}, {}
    for gguf_type in ("f16", "q8_0"):
        llm = load(runs[arch, gguf_type], T)
        nats, ours_nats, errors[gguf_type] = [], [], 0
        for w in windows:  # every position of each window: logits, then the loss of its next token
            x, y = w[:-1], np.array(w[1:])
            theirs, ours = their_logits(llm, x), our_logits(model, x)
            errors[gguf_type] = max(errors[gguf_type], relative_error(theirs, ours))
            assert errors[gguf_type] < TOLERANCE[gguf_type], gguf_type
            if gguf_type == "f16":
                assert (theirs.argmax(axis=1) == ours.argmax(axis=1)).all()  # the same top-1 token everywhere
            nats.append(torch.nn.functional.cross_entropy(torch.tensor(theirs), torch.tensor(y)).item())
            ours_nats.append(torch.nn.functional.cross_entropy(torch.tensor(ours), torch.tensor(y)).item())
        losses[gguf_type], losses["ours"] = np.mean(nats), np.mean(ours_nats)
    print(f"{arch}: val loss ours {losses['ours']:.4f}, llama.cpp f16 {losses['f16']:.4f}, q8_0 {losses['q8_0']:.4f}; "
          f"logits' relative error f16 {errors['f16']:.1e}, q8_0 {errors['q8_0']:.1e}")
    assert losses["ours"] < 0.5  # trained (ln 257 = 5.55 untrained): the losses below compare a real model
    assert abs(losses["f16"] - losses["ours"]) < 2e-3
    assert abs(losses["q8_0"] - losses["f16"]) < 2e-2  # q8_0 costs little next to f16
    assert os.path.getsize(runs[arch, "q8_0"]) < 0.8 * os.path.getsize(runs[arch, "f16"])


@needs_llama_cpp
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_llama_cpp_greedy_continuation_is_sample_py_s(arch, runs, forks):
    prompt, n = "Lily went", 23  # within block_size: past it sample.py slides its window, llama.cpp stops
    proc = forks.run("sample.py", f"--out_dir={runs[arch]}", "--device=cpu", "--dtype=float32", "--num_samples=1",
                     f"--start={prompt}", "--temperature=0", f"--max_new_tokens={n}")
    assert proc.returncode == 0, proc.stderr
    ours = proc.stdout.split("parameters)\n", 1)[1].rsplit("\n---------------\n", 1)[0]
    enc = get_tokenizer("bytes")
    llm = load(runs[arch, "f16"], 32)
    tokens = []
    for token in llm.generate(enc.encode(prompt), temp=0.0, repeat_penalty=1.0):  # llama.cpp's greedy sampler
        if token == enc.eot_token or len(tokens) == n:  # sample.py stops at end-of-text too
            break
        tokens.append(token)
    assert prompt + enc.decode(tokens) == ours
    assert len(set(tokens)) >= 8, ours
    # llama-cli is a chat program: the GGUF's chat template hands it the prompt unchanged, so a chat turn continues it
    chat = llm.create_chat_completion([{"role": "user", "content": prompt}], temperature=0.0, max_tokens=n,
                                      repeat_penalty=1.0)
    assert prompt + chat["choices"][0]["message"]["content"] == ours  # a sentence of the data ("to the park with mom."), not one token repeated


@needs_llama_cpp
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_llama_cpp_tokenizes_bytes_as_we_do(arch, runs):
    llm = load(runs[arch, "q8_0"], 64)
    enc = get_tokenizer("bytes")
    for text in TEXTS:
        ids = llm.tokenize(text.encode(), add_bos=False, special=False)
        assert ids == enc.encode(text), text
        assert llm.detokenize(ids).decode() == text


# -----------------------------------------------------------------------------
# every option with a form in llama.cpp, on random tiny models


FORMS = {  # name: (the architecture llama.cpp gets, the model's options)
    "gpt2_exact_gelu": ("gpt2", {}),
    "gpt2_tanh_gqa_no_bias_factorized_untied": ("gpt2", {"mlp": "gelu_tanh", "bias": False, "n_kv_head": 1,
                                                         "embedding_rank": 8, "tie_embeddings": False}),
    "llama_gqa": ("llama", {"rope": True, "norm": "rmsnorm", "mlp": "swiglu", "bias": False, "n_head": 4,
                            "n_kv_head": 2}),
    "llama_bias_factorized": ("llama", {"rope": True, "norm": "rmsnorm", "mlp": "swiglu", "embedding_rank": 8}),
    "qwen3_qk_norm_untied": ("qwen3", {"rope": True, "norm": "rmsnorm", "mlp": "swiglu", "bias": False,
                                       "qk_norm": True, "n_head": 4, "n_kv_head": 2, "tie_embeddings": False}),
}


@needs_llama_cpp
@pytest.mark.parametrize("form", FORMS)
def test_llama_cpp_computes_every_form_s_logits(form, tmp_path):
    arch, options = FORMS[form]
    model = tiny_gpt(**options)
    ids = get_tokenizer("bytes").encode("Once upon a time, a little dog named Max found a red ball.")  # < 64
    for gguf_type in ("f16", "q8_0"):
        path = tmp_path / f"{gguf_type}.gguf"
        assert llamacpp.write_gguf(model, {"tokenizer": "bytes"}, None, path, gguf_type)[0] == arch
        assert relative_error(their_logits(load(path, 64), ids), our_logits(model, ids)) < TOLERANCE[gguf_type]


@needs_llama_cpp
def test_the_rotary_layout_matters(tmp_path, monkeypatch):
    """Control: llama's query and key rows in transformers' halves order (what qwen3 takes, and not llama) make
    llama.cpp's logits far from ours, so the tolerance above can tell a wrong layout."""
    model = tiny_gpt(**FORMS["llama_gqa"][1])
    ids = get_tokenizer("bytes").encode("Once upon a time, a little dog named Max found a red ball.")
    real, halves = llamacpp.gguf_tensors, llamacpp.rotary_halves(16)

    def permuted(model, arch):
        tensors = real(model, arch)
        for name, t in tensors.items():
            if name.endswith(("attn_q.weight", "attn_k.weight")):
                tensors[name] = t.view(-1, 16, t.size(1))[:, halves].flatten(0, 1)
        return tensors

    monkeypatch.setattr(llamacpp, "gguf_tensors", permuted)
    assert llamacpp.write_gguf(model, {"tokenizer": "bytes"}, None, tmp_path / "wrong.gguf")[0] == "llama"
    assert relative_error(their_logits(load(tmp_path / "wrong.gguf", 64), ids), our_logits(model, ids)) > 0.1


# -----------------------------------------------------------------------------
# GPT-2's tokenizer (tiktoken's files) and a trained bpe:N


@pytest.fixture(scope="module")
def gpt2_ggufs(tmp_path_factory):
    """A GPT-2-architecture f16 and a llama-architecture q8_0 GGUF of random GPTs with GPT-2's 50,257 tokens."""
    os.environ["TIKTOKEN_CACHE_DIR"] = TIKTOKEN_CACHE
    folder = tmp_path_factory.mktemp("gguf_gpt2")
    out = {}
    for arch, gguf_type, options in (("gpt2", "f16", {}), ("llama", "q8_0", FORMS["llama_gqa"][1])):
        model = tiny_gpt(50257, **options)
        llamacpp.write_gguf(model, {"tokenizer": "gpt2"}, None, folder / f"{arch}.gguf", gguf_type)
        out[arch] = (model, folder / f"{arch}.gguf", gguf_type)
    return out


@needs_llama_cpp
@needs_gpt2_files
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_llama_cpp_tokenizes_gpt2_and_computes_our_logits(arch, gpt2_ggufs):
    model, path, gguf_type = gpt2_ggufs[arch]
    llm = load(path, 64)
    enc = get_tokenizer("gpt2")
    for text in TEXTS:
        ids = llm.tokenize(text.encode(), add_bos=False, special=False)
        assert ids == enc.encode(text), text
        assert llm.detokenize(ids).decode() == text
    assert len(enc.encode(TEXTS[0])) < len(TEXTS[0]) / 2.5  # merges applied: several characters per token
    ids = enc.encode("Once upon a time, there was a little girl named Lily. She liked to play with her red ball in "
                     "the park near her house, and one day she met a friendly dog.")
    assert relative_error(their_logits(llm, ids), our_logits(model, ids)) < TOLERANCE[gguf_type]


@needs_llama_cpp
def test_llama_cpp_tokenizes_a_trained_bpe_as_we_do_and_merge_order_matters(tmp_path, monkeypatch):
    pytest.importorskip("tokenizers", reason="bpe:N needs the tokenizers package")
    from tokenizer import train_bpe

    train_bpe(["Once upon a time there was a little cat.", "The dog ran to the park and played."] * 50 + TEXTS, 300,
              str(tmp_path / "tokenizer.json"))
    enc = get_tokenizer("bpe:300", str(tmp_path))
    model = tiny_gpt(300)
    llamacpp.write_gguf(model, {"tokenizer": "bpe:300"}, str(tmp_path), tmp_path / "bpe.gguf")
    llm = load(tmp_path / "bpe.gguf", 64)
    for text in TEXTS:
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == enc.encode(text), text
    # control: the same merges in reverse order tokenize some text differently, so the check above can fail
    real = llamacpp.gguf_tokenizer
    monkeypatch.setattr(llamacpp, "gguf_tokenizer", lambda *a: {**(v := real(*a)), "merges": v["merges"][::-1]})
    llamacpp.write_gguf(model, {"tokenizer": "bpe:300"}, str(tmp_path), tmp_path / "reversed.gguf")
    llm = load(tmp_path / "reversed.gguf", 64)
    assert any(llm.tokenize(t.encode(), add_bos=False, special=False) != enc.encode(t) for t in TEXTS)


# -----------------------------------------------------------------------------
# what has no form in llama.cpp: one line naming the option, and no file


@pytest.mark.parametrize("options, message", [
    ({"logit_softcap": 15.0}, "logit_softcap=15.0: llama.cpp's gpt2 and llama architectures have no form for it"),
    ({"x0_skip": True}, "x0_skip=True: llama.cpp's"),
    ({"value_embeds": True}, "value_embeds=True: llama.cpp's"),
    ({"mlp": "relu2"}, "mlp='relu2': llama.cpp's gpt2 and llama architectures have no ReLU^2 MLP"),
    ({"qk_norm": True}, "qk_norm=True with learned positions"),
    ({"rope": True, "norm": "rmsnorm", "mlp": "swiglu", "qk_norm": True}, "qwen3 architecture, which has no biases"),
    ({"norm": "rmsnorm"}, "llama.cpp has no architecture for rope=False, norm=rmsnorm, mlp=gelu"),
    ({"rope": True, "mlp": "swiglu"}, "no architecture for rope=True, norm=layernorm, mlp=swiglu"),
])
def test_what_llama_cpp_has_no_form_for_is_a_value_error_naming_it(options, message, tmp_path):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("^", r"\^")):
        llamacpp.write_gguf(tiny_gpt(**options), {"tokenizer": "bytes"}, None, tmp_path / "x.gguf")
    assert os.listdir(tmp_path) == []


def test_bdh_and_tokenizers_without_a_form_are_value_errors(tmp_path):
    bdh = create_model("bdh", {"vocab_size": 257, "n_layer": 1, "n_head": 2, "n_embd": 32,
                               "mlp_internal_dim_multiplier": 4})
    with pytest.raises(ValueError, match="only GPT runs export to GGUF; llama.cpp has no architecture for BDH"):
        llamacpp.write_gguf(bdh, {"tokenizer": "bytes"}, None, tmp_path / "x.gguf")
    (tmp_path / "meta.json").write_text('{"chars": ["a", "b"]}')
    with pytest.raises(ValueError, match="tokenizer 'char' has no form in llama.cpp; these export to GGUF: bytes"):
        llamacpp.write_gguf(tiny_gpt(3), {"tokenizer": "char"}, str(tmp_path), tmp_path / "x.gguf")
    assert sorted(os.listdir(tmp_path)) == ["meta.json"]
