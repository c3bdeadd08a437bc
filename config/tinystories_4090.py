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
# the recipe's pieces that transformers and llama.cpp have a form for (Qwen3's blocks: Llama's with QK-norm), so
# a run exports; its ReLU^2, soft-capped logits, x0 skip and value embeddings have none (their cost: BENCHMARKS.md)
bias = False  # Llama and Qwen3 have no biases
qk_norm = True
tie_embeddings = False
zero_init = False  # zero-initialised projections lost on both datasets at this size (BENCHMARKS.md)
optimizer = "muon"  # Muon for the hidden matrices, AdamW with a rate per group for the rest (chosen at width 128)
muon_normuon = True  # NorMuon's per-row step sizes (nanochat's Muon)
muon_polar_express = True  # Polar Express's Newton-Schulz coefficients (nanochat's Muon)
muon_learning_rate = 0.02
muon_momentum_warmup = 300
embedding_lr = 0.05
head_lr = 0.008  # nanochat's: Shakespeare's 0.004 lost at a quarter of nanoGPT's time on TinyStories (BENCHMARKS.md)
scalar_lr = 0.01
beta1 = 0.8
beta2 = 0.95
lr_schedule = "trapezoid"  # constant, then a linear decay to 0 over the last 65%
warmdown_fraction = 0.65
block_size = 512
block_size_schedule = "128:0.2,256:0.5"  # shorter sequences first (the study's curriculum); off: --block_size_schedule=
batch_size = 64  # out of memory: lower this and raise gradient_accumulation_steps
sampling = "epoch"  # each window once a pass, not random windows that repeat some and skip others (BENCHMARKS.md)
gradient_accumulation_steps = 2
learning_rate = 3e-3  # AdamW's default for the groups above
min_lr = 0.0
weight_decay = 0.0
warmup_iters = 500
max_iters = 20000
eval_interval = 500
eval_iters = 50
checkpoint_minutes = 15
