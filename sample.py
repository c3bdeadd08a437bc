"""
Generate text from a trained model, using only what train.py wrote to out_dir (checkpoint and meta.json).

    python sample.py --out_dir=out-demo --start="Once upon a time" --num_samples=3 --max_new_tokens=300
"""

import os

import torch

import common
from configurator import configure
from model import create_model
from tokenizer import get_tokenizer

# -----------------------------------------------------------------------------
out_dir = "out"
checkpoint = "latest"  # 'latest' (ckpt.pt), 'best' (best.pt) or a path to a checkpoint file
start = ""  # the prompt; empty starts a new document (after an end-of-text token)
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
ckpt_path = {"latest": os.path.join(out_dir, "ckpt.pt"), "best": os.path.join(out_dir, "best.pt")}.get(checkpoint, checkpoint)
ckpt = common.load_checkpoint(ckpt_path, device)
meta = common.read_json(os.path.join(out_dir, "meta.json"))
enc = get_tokenizer(meta["tokenizer"], out_dir)
if ckpt["model_args"]["vocab_size"] != enc.vocab_size:
    raise SystemExit(
        f"error: {ckpt_path} was trained with vocab_size {ckpt['model_args']['vocab_size']} but {out_dir}/meta.json's "
        f"tokenizer {meta['tokenizer']!r} has {enc.vocab_size}; the checkpoint and meta.json come from different runs"
    )
model = create_model(ckpt["model_type"], ckpt["model_args"])
try:
    model.load_state_dict(ckpt["model"])
except RuntimeError as e:
    first = str(e).strip().splitlines()[1] if len(str(e).splitlines()) > 1 else str(e)
    raise SystemExit(f"error: {ckpt_path} does not match its model_args ({first.strip()})")
model.eval().to(device)
print(f"loaded {ckpt_path} (iteration {ckpt['iter_num']}, {ckpt['model_type']}, {model.num_params() / 1e6:.2f}M parameters)")

prompt = enc.encode(start) if start else [enc.eot_token]
x = torch.tensor([prompt] * num_samples, dtype=torch.long, device=device)
generator = torch.Generator(device=device).manual_seed(seed)
with torch.no_grad(), common.autocast(device_type, dtype):
    y = model.generate(x, max_new_tokens, temperature=temperature, top_k=top_k or None, top_p=top_p, generator=generator)
for row in y.tolist():
    new = row[len(prompt):]
    if enc.eot_token in new:  # a story ends at end-of-text
        new = new[: new.index(enc.eot_token)]
    print(start + enc.decode(new))
    print("---------------")
