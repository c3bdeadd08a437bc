# RTX 4090 (24 GB, compute capability 8.9): bf16 and torch.compile. A ~30M-parameter GPT on TinyStories.
# Memory and tokens/s: not measured yet (no 4090 was available to us); run bench.py with these settings to see
# yours, and lower batch_size (raising gradient_accumulation_steps) if you run out of memory.
# python prepare.py && python train.py config/tinystories_4090.py
out_dir = "out-tinystories-4090"
dataset = "tinystories"
dtype = "bfloat16"
compile = True
n_layer = 8
n_head = 8
n_embd = 512
block_size = 512
batch_size = 64
gradient_accumulation_steps = 2
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 500
max_iters = 20000
eval_interval = 500
eval_iters = 50
checkpoint_minutes = 15
