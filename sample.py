"""
Generate text from a trained model, using only what train.py wrote to out_dir (checkpoint and meta.json).

    python sample.py --out_dir=out-demo --start="Once upon a time" --num_samples=3 --max_new_tokens=300
    python sample.py --out_dir=out-demo --start=FILE:prompt.txt
    python sample.py --out_dir=out-demo --interactive=True       # type prompts; the model stays loaded
    python sample.py --out_dir=out-json --start='{"name":' --num_samples=100 --validate=json  # share that parse

Tokens are printed as they are generated, one sample after another; a sample ends at end-of-text or after
max_new_tokens. GPT decodes with a KV cache, BDH with its recurrent state (use_cache=False recomputes the whole
context for every token: the same tokens, slower). The speed of each sample goes to stderr. --validate checks each
sample (the prompt and its continuation) with json, python or your module:function, then reports the share that
passes and a few that fail.
"""

import sys
import time

import torch

from checkpoints import load_model
from configurator import check_values, configure, report_errors_in_one_line
from generation import Completion, validator
from hardware import autocast, resolve_device
from quantize import check_quantize
from tokenizer import get_tokenizer

# -----------------------------------------------------------------------------
out_dir = "out"
checkpoint = "latest"  # 'latest' (ckpt.pt), 'best' (best.pt) or a path to a checkpoint file
start = ""  # the prompt, or FILE:path to read it from a file; empty starts a new document (after end-of-text)
interactive = False  # read prompts from the keyboard until an empty line
num_samples = 3
max_new_tokens = 500
temperature = 0.8  # 1.0 samples the model's distribution, lower is more conservative, 0 is greedy
top_k = 200  # keep only the k most likely tokens (0: all)
top_p = 1.0  # nucleus sampling: keep the smallest set of tokens whose probability reaches top_p
seed = 1337
use_cache = True  # GPT: KV cache, BDH: recurrent state; False recomputes the context for every token
validate = ""  # json, python or module:function: report the share of samples that pass this check
quantize = ""  # 'int8': int8 weights on a CPU (quantize.py): 1.6x tokens/s at GPT-2 124M's width, slower on tiny models
device = "auto"
dtype = "auto"
# -----------------------------------------------------------------------------
report_errors_in_one_line()
config = configure(globals())
check_values(config, positive=("num_samples",), non_negative=("max_new_tokens", "temperature", "top_k"))
if not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
    raise ValueError(f"--top_p={top_p!r} must be above 0 and at most 1")
check = validator(validate) if validate else None
device = check_quantize(quantize, device, dtype)

device, device_type, dtype, _ = resolve_device(device, dtype, compile=False)
model, ckpt, meta = load_model(out_dir, checkpoint, device, quantize)
enc = get_tokenizer(meta["tokenizer"], out_dir)
print(f"loaded {ckpt['path']} (iteration {ckpt['iter_num']}, {ckpt['model_type']}, "
      f"{model.num_params() / 1e6:.2f}M parameters{', int8 weights' if quantize else ''})")

generator = torch.Generator(device=device).manual_seed(seed)
checked = []  # --validate: (sample, the reason it fails or None)


def sample(text):
    """Stream num_samples continuations of text to stdout, each ending at its first end-of-text."""
    for _ in range(num_samples):
        print(text, end="", flush=True)
        t0 = time.perf_counter()
        completion = Completion(model, enc, text, max_new_tokens, temperature, top_k or None, top_p, generator,
                                       use_cache)
        with torch.no_grad(), autocast(device_type, dtype):
            for piece in completion:
                print(piece, end="", flush=True)
        print("\n---------------")
        n = len(completion.tokens)
        print(f"({n} tokens, {n / (time.perf_counter() - t0):.1f} tokens/s)", file=sys.stderr)
        if check:
            checked.append((text + completion.text, check(text + completion.text)))


if start.startswith("FILE:"):
    try:
        with open(start[5:], encoding="utf-8") as f:
            start = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--start=FILE:{start[5:]}: can't read the prompt ({e})") from None
if not interactive:
    sample(start)
else:
    print("type a prompt and press Enter; an empty line quits")
    while (text := input("> ")) != "":
        sample(text)
if check:  # the share that passes, and a few that fail, to see what goes wrong
    failed = [(i, text, reason) for i, (text, reason) in enumerate(checked) if reason is not None]
    passed = len(checked) - len(failed)
    print(f"validate {validate}: {passed}/{len(checked)} samples pass ({100 * passed / len(checked):.0f}%)")
    for i, text, reason in failed[:3]:
        print(f"  sample {i + 1}: {reason}: {text[:100]!r}{'...' if len(text) > 100 else ''}")
