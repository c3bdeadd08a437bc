"""
A GPT-2-124M-shaped run as GGUF: the file's size as f16 and q8_0, and llama.cpp's decoding speed on this CPU next to
sample.py's (PyTorch float32, and --quantize=int8), timed in turn in one process.

    TIKTOKEN_CACHE_DIR=../shared/data/tiktoken_cache python studies/gguf_speed.py --tokens=64 --rounds=3

The run is written here with random weights (file size and speed don't depend on training) and GPT-2's tokenizer, then
exported by export.py's own writer (llamacpp.write_gguf). Decoding speed: a one-token prompt, then `tokens` tokens
one at a time, each read with the cache (llama.cpp's eval of one token; our model's forward on the cache, as
sample.py's Completion runs it), without the sampling, which both do in microseconds; the median of `rounds`.
Needs gguf and llama-cpp-python (pip install gguf llama-cpp-python).
"""

import os
import sys
import tempfile
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import llamacpp  # noqa: E402
from configurator import configure  # noqa: E402
from model import create_model  # noqa: E402
from quantize import quantize_model  # noqa: E402

# -----------------------------------------------------------------------------
tokens = 64  # tokens decoded per round
rounds = 3  # rounds per form, in turn
threads = 0  # torch's and llama.cpp's threads (0: torch's default)
arch = "gpt2"  # 'gpt2': GPT-2's blocks; 'llama': rope + rmsnorm + swiglu at the same width and depth
# -----------------------------------------------------------------------------
configure(globals())
if threads:
    torch.set_num_threads(threads)
n_threads = threads or torch.get_num_threads()

ARGS = {"vocab_size": 50257, "block_size": 1024, "n_layer": 12, "n_head": 12, "n_embd": 768}
if arch == "llama":
    ARGS |= {"rope": True, "norm": "rmsnorm", "mlp": "swiglu", "bias": False}
META = {"tokenizer": "gpt2", "vocab_size": 50257, "eot_token": 50256, "dtype": "uint16"}


def ours(model):
    """One round of sample.py's decoding: the prompt, then one token at a time on the cache."""
    cache = model.new_cache()
    x = torch.tensor([[50256]])
    t0 = time.perf_counter()
    with torch.no_grad():
        for _ in range(tokens):
            logits, _ = model(x, cache=cache)
            x = logits[:, -1:, :50257].argmax(-1)
    return tokens / (time.perf_counter() - t0)


def theirs(llm):
    """One round of llama.cpp's decoding: eval of one token at a time (its KV cache), greedy on its logits."""
    llm.reset()
    token = 50256
    t0 = time.perf_counter()
    for _ in range(tokens):
        llm.eval([token])
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    return tokens / (time.perf_counter() - t0)


if __name__ == "__main__":
    import llama_cpp

    torch.manual_seed(0)
    model = create_model("gpt", ARGS).eval()
    folder = tempfile.mkdtemp(prefix="gguf_speed_")
    forms = {}
    print(f"GPT-2 124M shape ({arch}), {model.num_params() / 1e6:.1f}M parameters, {n_threads} threads, "
          f"{tokens} tokens x {rounds} rounds")
    for gguf_type in ("f16", "q8_0"):
        path = os.path.join(folder, f"model-{gguf_type}.gguf")
        llamacpp.write_gguf(model, META, folder, path, gguf_type)
        print(f"  {gguf_type}: {os.path.getsize(path) / 2**20:.0f} MiB")
        forms[f"llama.cpp {gguf_type}"] = (theirs, llama_cpp.Llama(path, n_ctx=tokens + 8, n_threads=n_threads,
                                                                    logits_all=False, verbose=False))
    forms["sample.py float32"] = (ours, model)
    torch.manual_seed(0)
    forms["sample.py --quantize=int8"] = (ours, quantize_model(create_model("gpt", ARGS).eval(), "int8", "cpu"))
    speeds = {name: [] for name in forms}
    for name, (fn, m) in forms.items():
        fn(m)  # warm
    for _ in range(rounds):
        for name, (fn, m) in forms.items():
            speeds[name].append(fn(m))
    base = np.median(speeds["sample.py float32"])
    for name, v in speeds.items():
        print(f"  {name:<28} {np.median(v):7.1f} tokens/s  {np.median(v) / base:5.2f}x sample.py float32")
    for fn, m in forms.values():
        if hasattr(m, "close"):
            m.close()  # llama.cpp's model and context, freed now rather than at interpreter exit
    for f in os.listdir(folder):
        os.remove(os.path.join(folder, f))
    os.rmdir(folder)
