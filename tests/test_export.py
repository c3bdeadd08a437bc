"""export.py and --init_from=PATH: our GPT out to Hugging Face transformers and back in, weight for weight. Offline:
the transformers models are tiny ones built and saved here, never downloaded."""

import json
import os
import runpy
import sys

import pytest
import torch

SKIP = "export and --init_from need transformers and safetensors (pip install -r requirements-test.txt)"
transformers = pytest.importorskip("transformers", reason=SKIP)
pytest.importorskip("safetensors", reason=SKIP)

import hf  # noqa: E402
from checkpoints import load_model, save_checkpoint  # noqa: E402 (after the skips)
from model import create_model  # noqa: E402
from tests.helpers import REPO, SHARED_DATA, TINY_MODEL  # noqa: E402

FORMS = {  # each exports to the class in its name
    "gpt2": {},
    "gpt2_tanh_gelu_no_bias_gqa": {"mlp": "gelu_tanh", "bias": False, "n_kv_head": 1},
    "gpt2_factorized": {"embedding_rank": 8},
    "gpt2_untied": {"tie_embeddings": False},
    "llama_gqa": {"rope": True, "norm": "rmsnorm", "mlp": "swiglu", "bias": False, "n_head": 4, "n_kv_head": 2},
    # the TinyStories configs' recipe: qk_norm makes it Qwen3, with an untied head and zero_init
    "qwen3_untied_gqa": {"rope": True, "norm": "rmsnorm", "mlp": "swiglu", "bias": False, "n_head": 4, "n_kv_head": 2,
                         "qk_norm": True, "tie_embeddings": False, "zero_init": True},
}
CLASSES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM"}


def tiny_gpt(vocab_size=257, **extra):
    torch.manual_seed(0)
    args = {"vocab_size": vocab_size, "block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32, **extra}
    model = create_model("gpt", args).eval()
    with torch.no_grad():  # biases and gains off their 0 and 1 inits, so a mapping mistake shows
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def logits(model, x):
    with torch.no_grad():
        out = model(x)
    return out.logits if hasattr(out, "logits") else out[0][..., : model.config.vocab_size]


@pytest.mark.parametrize("form", FORMS)
def test_transformers_loads_the_export_and_computes_the_same(form, tmp_path):
    model = tiny_gpt(**FORMS[form])
    hf.to_hf(model, eot_token=256).save_pretrained(tmp_path, safe_serialization=True)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded).__name__ == CLASSES[form.split("_")[0]]
    x = torch.randint(0, 257, (2, 24), generator=torch.Generator().manual_seed(1))
    assert (logits(loaded, x) - logits(model, x)).abs().max() < 1e-4
    ours = model.generate(x[:1, :4], 20, temperature=0)[0]
    theirs = loaded.generate(x[:1, :4], max_new_tokens=20, do_sample=False, pad_token_id=256)[0]
    assert ours.tolist() == theirs.tolist()  # greedy decoding, token for token
    args, state = hf.from_hf(loaded)  # and back: the same function
    back = create_model("gpt", args).eval()
    back.load_state_dict(state)
    assert (logits(back, x) - logits(model, x)).abs().max() < 1e-4


def test_a_model_transformers_has_no_class_for_is_one_line():
    bdh = create_model("bdh", {"vocab_size": 257, "n_layer": 1, "n_head": 2, "n_embd": 32,
                               "mlp_internal_dim_multiplier": 4})
    with pytest.raises(ValueError, match="only GPT runs export"):
        hf.to_hf(bdh)
    with pytest.raises(ValueError, match="transformers has no class for rope=False, norm=rmsnorm"):
        hf.to_hf(tiny_gpt(norm="rmsnorm"))
    with pytest.raises(ValueError, match="logit_softcap=15.0: transformers' GPT-2, Llama and Qwen3 have no form"):
        hf.to_hf(tiny_gpt(logit_softcap=15.0))


def train(monkeypatch, *args):
    """train.py in this process, as %run runs it (no second torch import)."""
    monkeypatch.setattr(sys, "argv", ["train.py", *args])
    runpy.run_path(os.path.join(REPO, "train.py"), run_name="__main__")


def export_in_process(monkeypatch, capsys, *args):
    """export.py in this process (transformers is imported once, here), returning what it printed."""
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["export.py", *args])
    runpy.run_path(os.path.join(REPO, "export.py"), run_name="__main__")
    return capsys.readouterr().out


@pytest.mark.parametrize("form", ["gpt2", "llama_gqa"])
def test_init_from_a_transformers_folder_starts_from_its_weights_and_exports_back(form, tiny_dataset, tmp_path,
                                                                                   monkeypatch, capsys):
    if form == "gpt2":  # GPT-2's own config: tanh gelu, 64 positions (cropped to block_size 32 below)
        cfg = transformers.GPT2Config(vocab_size=257, n_positions=64, n_embd=32, n_layer=2, n_head=2)
        pretrained = transformers.GPT2LMHeadModel(cfg)
    else:
        pretrained = hf.to_hf(tiny_gpt(**FORMS[form]))
    pretrained.eval().save_pretrained(tmp_path / "pretrained")
    # one step at learning rate 0: a checkpoint that holds exactly the weights it started from
    train(monkeypatch, f"--dataset={tiny_dataset}", f"--out_dir={tmp_path / 'run'}", *TINY_MODEL,
          f"--init_from={tmp_path / 'pretrained'}", "--max_iters=1", "--eval_interval=1", "--learning_rate=0",
          "--decay_lr=False", "--dropout=0.0")
    model, ckpt, _ = load_model(str(tmp_path / "run"))
    x = torch.randint(0, 257, (2, 32), generator=torch.Generator().manual_seed(2))
    assert (logits(model, x) - logits(pretrained, x)).abs().max() < 1e-5
    assert ckpt["model_args"]["block_size"] == 32

    out = export_in_process(monkeypatch, capsys, f"--out_dir={tmp_path / 'run'}", f"--hf_dir={tmp_path / 'exported'}")
    assert "no tokenizer files: 'bytes'" in out  # said plainly
    exported = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "exported").eval()
    assert (logits(exported, x) - logits(pretrained, x)).abs().max() < 1e-5


def test_init_from_checks_the_vocabulary_and_the_length(tiny_dataset, tmp_path, monkeypatch):
    cfg = transformers.GPT2Config(vocab_size=300, n_positions=16, n_embd=32, n_layer=1, n_head=2)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "other")
    args = [f"--dataset={tiny_dataset}", f"--out_dir={tmp_path / 'run'}", *TINY_MODEL, "--max_iters=1",
            f"--init_from={tmp_path / 'other'}"]
    with pytest.raises(ValueError, match="has vocab_size 300, dataset .* has 257: prepare the data with the model"):
        train(monkeypatch, *args)
    cfg.vocab_size = 257
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "short")
    with pytest.raises(ValueError, match="--block_size=32 is longer than .* 16 positions"):
        train(monkeypatch, *args, f"--init_from={tmp_path / 'short'}")
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_DATA, "tiktoken_cache")), reason="needs ../shared/data's "
                    "GPT-2 tokenizer files (tiktoken can't download them offline)")
def test_a_gpt2_tokenizer_run_exports_its_tokenizer(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    run.mkdir()
    model = tiny_gpt(vocab_size=50257)
    save_checkpoint({"model_type": "gpt", "model_args": vars(model.config), "model": model.state_dict(),
                            "iter_num": 0, "config": {"block_size": 32}}, str(run / "ckpt.pt"))
    meta = {"tokenizer": "gpt2", "vocab_size": 50257, "dtype": "uint16", "eot_token": 50256}
    (run / "meta.json").write_text(json.dumps(meta))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", os.path.join(SHARED_DATA, "tiktoken_cache"))
    assert "tokenizer 'gpt2'" in export_in_process(monkeypatch, capsys, f"--out_dir={run}", f"--hf_dir={tmp_path / 'hf'}")
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert tok.encode("Hello world") == [15496, 995] and tok.eos_token_id == 50256


def test_a_trained_bpe_tokenizer_goes_along_and_encodes_the_same(tmp_path):
    pytest.importorskip("tokenizers", reason="bpe:N needs the tokenizers package")
    import export
    from tokenizer import get_tokenizer, train_bpe

    texts = ["Once upon a time there was a little cat.", "The dog ran to the park and played."] * 50
    train_bpe(texts, 300, str(tmp_path / "tokenizer.json"))
    meta = {"tokenizer": "bpe:300", "vocab_size": 300, "dtype": "uint16"}
    (tmp_path / "hf").mkdir()
    assert export.save_tokenizer(meta, str(tmp_path), str(tmp_path / "hf")) == "tokenizer 'bpe:300'"
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    ours = get_tokenizer("bpe:300", str(tmp_path))
    text = "Once upon a time the cat played in the park."
    assert theirs.encode(text, add_special_tokens=False) == ours.encode(text)
    assert theirs.eos_token_id == ours.eot_token
