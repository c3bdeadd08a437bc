# the GPT side of the GPT-against-BDH study in BENCHMARKS.md, on the TinyStories sample.
# python train.py config/tinystories_sample_gpt.py (the study's other commands are in BENCHMARKS.md)
out_dir = "out-sample-gpt"
dataset = "tinystories_sample"
model = "gpt"
n_layer = 4
n_head = 4
n_embd = 128
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
muon_momentum_warmup = 90  # of 150 iterations: the study warmed up over 300 of about 500
embedding_lr = 0.05
head_lr = 0.008  # nanochat's: Shakespeare's 0.004 lost at a quarter of nanoGPT's time on TinyStories (BENCHMARKS.md)
scalar_lr = 0.01
beta1 = 0.8
beta2 = 0.95
lr_schedule = "trapezoid"  # constant, then a linear decay to 0 over the last 65%
warmdown_fraction = 0.65
dropout = 0.1
block_size = 256
block_size_schedule = "64:0.2,128:0.5"  # shorter sequences first (the study's curriculum); off: --block_size_schedule=
batch_size = 16
sampling = "epoch"  # each window once a pass, not random windows that repeat some and skip others (BENCHMARKS.md)
gradient_accumulation_steps = 1  # 4,096 tokens per iteration
max_iters = 150  # about 1.3 passes over the training split
learning_rate = 3e-3  # AdamW's default for the groups above
min_lr = 0.0
warmup_iters = 5  # the study: 5 iterations of warmup beat 20 at a quarter of nanoGPT's time
weight_decay = 0.0
eval_interval = 50
eval_iters = 10
log_interval = 10
device = "cpu"  # the study ran on a CPU
compile = False
