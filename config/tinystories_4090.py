# RTX 4090 (24 GB): a GPT on TinyStories in bf16 with torch.compile.
# python prepare.py && python train.py config/tinystories_4090.py
out_dir = "out-tinystories-4090"
dataset = "tinystories"
dtype = "bfloat16"
compile = True
n_layer = 8
n_head = 8
n_embd = 512
rope = True  # rope + rmsnorm + swiglu: the largest gain of the equal-time study on TinyStories (BENCHMARKS.md);
norm = "rmsnorm"  # GPT-2's blocks as before: --rope=False --norm=layernorm --mlp=gelu
mlp = "swiglu"
block_size = 512
block_size_schedule = "128:0.2,256:0.5"  # shorter sequences first (the study's curriculum); off: --block_size_schedule=
batch_size = 64  # out of memory: lower this and raise gradient_accumulation_steps
gradient_accumulation_steps = 2
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 500
max_iters = 20000
eval_interval = 500
eval_iters = 50
checkpoint_minutes = 15
