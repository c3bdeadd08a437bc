# the BDH side of the GPT-against-BDH study in BENCHMARKS.md, on the TinyStories sample.
# python train.py config/tinystories_sample_bdh.py (the study's other commands are in BENCHMARKS.md)
out_dir = "out-sample-bdh"
dataset = "tinystories_sample"
model = "bdh"
n_layer = 6
n_head = 4
n_embd = 128
mlp_internal_dim_multiplier = 16  # 512 neurons per head, so its non-embedding size matches the GPT's
dropout = 0.1
block_size = 256
batch_size = 16
gradient_accumulation_steps = 1  # 4,096 tokens per iteration
max_iters = 150  # about 1.3 passes over the training split
learning_rate = 2e-3
min_lr = 2e-4
warmup_iters = 30
weight_decay = 0.1
optimizer = "muon"  # Muon for E, E_v, D_x: BDH's gain at equal time in BENCHMARKS.md; --optimizer=adamw
eval_interval = 50
eval_iters = 10
log_interval = 10
device = "cpu"  # the study ran on a CPU
compile = False
