"""
Generate text from a trained model, using only what train.py wrote to out_dir (checkpoint and meta.json).

    python sample.py --out_dir=out-demo --start="Once upon a time" --num_samples=3 --max_new_tokens=300
    python sample.py --out_dir=out-demo --start=FILE:prompt.txt
    python sample.py --out_dir=out-demo --interactive=True       # type prompts; the model stays loaded
"""

import torch

import common
from configurator import configure
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
device = "auto"
dtype = "auto"
# -----------------------------------------------------------------------------
config_keys = [k for k, v in globals().items() if not k.startswith("_") and isinstance(v, (int, float, bool, str))]
configure(globals(), config_keys)

device, device_type, dtype, _ = common.resolve_device(device, dtype, compile=False)
model, ckpt, meta = common.load_model(out_dir, checkpoint, device)
enc = get_tokenizer(meta["tokenizer"], out_dir)
print(f"loaded {ckpt['path']} (iteration {ckpt['iter_num']}, {ckpt['model_type']}, "
      f"{model.num_params() / 1e6:.2f}M parameters)")

generator = torch.Generator(device=device).manual_seed(seed)


def sample(text):
    """Print num_samples continuations of text, each cut at its first end-of-text."""
    prompt = enc.encode(text) if text else [enc.eot_token]
    x = torch.tensor([prompt] * num_samples, dtype=torch.long, device=device)
    with torch.no_grad(), common.autocast(device_type, dtype):
        y = model.generate(x, max_new_tokens, temperature=temperature, top_k=top_k or None, top_p=top_p,
                           generator=generator)
    for row in y.tolist():
        new = row[len(prompt):]
        if enc.eot_token in new:  # a story ends at end-of-text
            new = new[: new.index(enc.eot_token)]
        print(text + enc.decode(new))
        print("---------------")


if start.startswith("FILE:"):
    with open(start[5:], encoding="utf-8") as f:
        start = f.read()
if not interactive:
    sample(start)
else:
    print("type a prompt and press Enter; an empty line quits")
    while (text := input("> ")) != "":
        sample(text)
