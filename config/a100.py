# A100 (40/80 GB, compute capability 8.0): bf16 and torch.compile. GPT-2 small (124M) shape on TinyStories.
# Memory and tokens/s: not measured yet (no A100 was available to us); bench.py measures them.
# python train.py config/a100.py
out_dir = "out-a100"
dataset = "tinystories"
dtype = "bfloat16"
compile = True
n_layer = 12
n_head = 12
n_embd = 768
block_size = 1024
batch_size = 16
gradient_accumulation_steps = 8
learning_rate = 6e-4
min_lr = 6e-5
warmup_iters = 1000
max_iters = 20000
eval_interval = 1000
eval_iters = 50
