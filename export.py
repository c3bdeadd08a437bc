"""
Export a trained GPT run as a Hugging Face transformers model: a folder that
transformers.AutoModelForCausalLM.from_pretrained(PATH) loads, computing the same logits as this project's model.

    python export.py --out_dir=out-demo --hf_dir=hf-demo
    python export.py --out_dir=out-tinystories --checkpoint=best --hf_dir=hf-tinystories

GPT-2-style runs (learned positions, layernorm, gelu) become GPT2LMHeadModel; rope + rmsnorm + swiglu runs without
biases become LlamaForCausalLM (hf.py says how the weights map). BDH, and mixes transformers has no class for, are a
one-line error. The tokenizer goes along where it has a Hugging Face form: GPT-2's (from tiktoken's files), a
trained bpe:N or a given tokenizer.json. bytes, cl100k_base and o200k_base have none: the export says so, and the
model loads without one. Needs transformers and safetensors (pip install transformers safetensors).
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
hf_dir = ""  # the folder to write; it must not exist yet, or be empty
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


if __name__ == "__main__":
    report_errors_in_one_line()
    configure(globals())
    if not hf_dir:
        raise ValueError("say where to write the export: --hf_dir=PATH")
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
