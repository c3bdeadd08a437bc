# a GPT-2 style baseline on TinyStories, the same non-embedding size as config/tinystories_bdh.py.
# python prepare.py --dataset=tinystories --tokenizer=gpt2 && python train.py config/tinystories_gpt.py
out_dir = "out-tinystories-gpt"
dataset = "tinystories"
model = "gpt"
block_size = 512
block_size_schedule = "128:0.2,256:0.5"  # shorter sequences first (the study's curriculum); off: --block_size_schedule=
batch_size = 32
gradient_accumulation_steps = 1  # 16,384 tokens per iteration, as the BDH config
n_layer = 8
n_head = 8
n_embd = 512
rope = True  # rope + rmsnorm + swiglu: the largest gain of the equal-time study on TinyStories (BENCHMARKS.md);
norm = "rmsnorm"  # GPT-2's blocks as before: --rope=False --norm=layernorm --mlp=gelu
mlp = "swiglu"
dropout = 0.0
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 200
max_iters = 8000
weight_decay = 0.1
eval_interval = 500
eval_iters = 50
log_interval = 50
