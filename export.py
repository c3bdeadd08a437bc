"""
Export a trained GPT run for another runtime: a Hugging Face transformers folder, or one GGUF file for llama.cpp.

    python export.py --out_dir=out-demo --hf_dir=hf-demo                                   # transformers
    python export.py --out_dir=out-tinystories --checkpoint=best --hf_dir=hf-tinystories
    python export.py --out_dir=out-demo --format=gguf --gguf_type=q8_0 --to=demo.gguf       # llama.cpp

transformers (--format=hf, the default): GPT-2-style runs (learned positions, layernorm, gelu) become
GPT2LMHeadModel; rope + rmsnorm + swiglu runs without biases become LlamaForCausalLM (hf.py says how the weights
map). The tokenizer goes along where it has a Hugging Face form: GPT-2's (from tiktoken's files), a trained bpe:N or
a given tokenizer.json. bytes, cl100k_base and o200k_base have none: the export says so, and the model loads without
one. Needs transformers and safetensors (pip install transformers safetensors).

GGUF (--format=gguf): llama.cpp's gpt2, llama or qwen3 architecture with the tokenizer inside, so that
`llama-cli -m demo.gguf` needs nothing else; f16 or q8_0 matrices (llamacpp.py says how). Needs gguf (pip install
gguf). BDH, options llama.cpp has no form for and tokenizers it can't read are a one-line error, as in both formats.
"""

import os
import shutil
import tempfile
import time

from checkpoints import load_model
from configurator import configure, report_errors_in_one_line

# -----------------------------------------------------------------------------
out_dir = "out"  # the run to export
checkpoint = "latest"  # 'latest' (ckpt.pt), 'best' (best.pt) or a path
format = "hf"  # 'hf': a transformers folder (--hf_dir); 'gguf': a llama.cpp file (--to)
hf_dir = ""  # --format=hf: the folder to write; it must not exist yet, or be empty
to = ""  # --format=gguf: the .gguf file to write; it must not exist yet
gguf_type = "f16"  # --format=gguf: the matrices' type, 'f16' or 'q8_0' (8-bit, about half f16's size)
# -----------------------------------------------------------------------------
GPT2_FILES = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"  # what tiktoken's gpt2 reads


def save_tokenizer(meta, run_dir, folder):
    """Write the run's tokenizer in Hugging Face form into folder; returns what was written, or why nothing was."""
    from transformers import GPT2TokenizerFast, PreTrainedTokenizerFast

    spec = meta["tokenizer"]
    if spec == "gpt2":
        from tiktoken.load import read_file_cached  # tiktoken's own cache: offline once gpt2 has been used

        for name, url_name in (("vocab.json", "encoder.json"), ("merges.txt", "vocab.bpe")):
            with open(os.path.join(folder, name), "wb") as f:
                f.write(read_file_cached(GPT2_FILES + url_name))
        tok = GPT2TokenizerFast(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"))
    elif spec.startswith(("bpe:", "hf:")) or spec.endswith(".json"):
        from tokenizer import get_tokenizer

        ours = get_tokenizer(spec, run_dir)
        eot = ours.tok.id_to_token(ours.eot_token)
        tok = PreTrainedTokenizerFast(tokenizer_object=ours.tok, eos_token=eot, bos_token=eot)
    else:
        return f"no tokenizer files: {spec!r} has no Hugging Face form (encode with this project's tokenizer.py)"
    tok.save_pretrained(folder)
    return f"tokenizer {spec!r}"


def export_hf():
    """--format=hf: a transformers folder at hf_dir."""
    if os.path.exists(hf_dir) and (not os.path.isdir(hf_dir) or os.listdir(hf_dir)):
        raise ValueError(f"--hf_dir={hf_dir} exists and is not an empty folder; choose a new one (nothing was written)")
    import hf  # transformers: only here

    t0 = time.time()
    model, ckpt, meta = load_model(out_dir, checkpoint, "cpu")
    hf_model = hf.to_hf(model, meta.get("eot_token"))
    # written beside hf_dir, then renamed: a failed export leaves no half-written folder
    staging = tempfile.mkdtemp(prefix=".export-", dir=os.path.dirname(os.path.abspath(hf_dir)))
    try:
        hf_model.save_pretrained(staging, safe_serialization=True)
        tokenizer_note = save_tokenizer(meta, out_dir, staging)
        umask = os.umask(0)
        os.umask(umask)
        for path in [staging] + [os.path.join(staging, f) for f in os.listdir(staging)]:  # mkdtemp's are private
            os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~umask)
        if os.path.isdir(hf_dir):
            os.rmdir(hf_dir)  # empty, checked above
        os.replace(staging, hf_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    size = sum(os.path.getsize(os.path.join(hf_dir, f)) for f in os.listdir(hf_dir))
    print(f"{ckpt['path']} (iteration {ckpt['iter_num']}) -> {hf_dir}: {type(hf_model).__name__}, "
          f"{model.num_params() / 1e6:.2f}M parameters, {size / 2**20:.1f} MiB, {tokenizer_note}, "
          f"{time.time() - t0:.1f} s")
    print(f"load it: transformers.AutoModelForCausalLM.from_pretrained({hf_dir!r})")


def export_gguf():
    """--format=gguf: one llama.cpp file at `to`."""
    if os.path.exists(to):
        raise ValueError(f"--to={to} exists; choose a new file name (nothing was written)")
    if not os.path.isdir(os.path.dirname(os.path.abspath(to))):
        raise ValueError(f"--to={to}: its folder does not exist")
    import llamacpp  # gguf: only here

    llamacpp.check_gguf_type(gguf_type)
    t0 = time.time()
    model, ckpt, meta = load_model(out_dir, checkpoint, "cpu")
    arch, types = llamacpp.write_gguf(model, meta, out_dir, to, gguf_type, os.path.basename(os.path.abspath(out_dir)))
    counts = ", ".join(f"{n} {t.lower()}" for t, n in types.items())
    print(f"{ckpt['path']} (iteration {ckpt['iter_num']}) -> {to}: llama.cpp {arch}, tokenizer "
          f"{meta['tokenizer']!r}, {model.num_params() / 1e6:.2f}M parameters, {os.path.getsize(to) / 2**20:.2f} MiB "
          f"(tensors: {counts}), {time.time() - t0:.1f} s")
    print(f"run it: llama-cli -m {to} -p 'Once upon a time' -n 100 --temp 0")


if __name__ == "__main__":
    report_errors_in_one_line()
    configure(globals())
    if format == "hf":
        if to:
            raise ValueError("--to is --format=gguf's file; a transformers export goes to --hf_dir=PATH")
        if not hf_dir:
            raise ValueError("say where to write the export: --hf_dir=PATH (or --format=gguf --to=FILE.gguf)")
        export_hf()
    elif format == "gguf":
        if hf_dir:
            raise ValueError("--hf_dir is --format=hf's folder; a GGUF export goes to --to=FILE.gguf")
        if not to:
            raise ValueError("say where to write the export: --to=FILE.gguf")
        export_gguf()
    else:
        raise ValueError(f"--format={format!r}; use hf (a transformers folder) or gguf (a llama.cpp file)")
