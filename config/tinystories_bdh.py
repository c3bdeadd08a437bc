# BDH in the paper's reference shape on TinyStories, to compare with config/tinystories_gpt.py.
# python prepare.py --dataset=tinystories --tokenizer=gpt2 && python train.py config/tinystories_bdh.py
out_dir = "out-tinystories-bdh"
dataset = "tinystories"
model = "bdh"
block_size = 512
batch_size = 16  # on a 16 GB GPU, lower this and raise gradient_accumulation_steps, or set gradient_checkpointing
gradient_accumulation_steps = 2  # 16,384 tokens per iteration, as the GPT configs
n_layer = 6
n_embd = 256
n_head = 4
mlp_internal_dim_multiplier = 128  # N = 8192 neurons per head
dropout = 0.1
warmup_iters = 200
max_iters = 8000
optimizer = "muon"  # Muon for E, E_v, D_x, its momentum warmed up; AdamW groups for the rest; a trapezoid:
muon_learning_rate = 0.02  # together 0.053 below Muon with nanoGPT's AdamW and cosine at equal time (BENCHMARKS.md)
muon_momentum_warmup = 300
learning_rate = 3e-3
embedding_lr = 0.05
head_lr = 0.004
scalar_lr = 0.01
beta1 = 0.8
beta2 = 0.95
weight_decay = 0.0
lr_schedule = "trapezoid"  # constant, then a linear decay to 0 over the last 65%
warmdown_fraction = 0.65
min_lr = 0.0
eval_interval = 500
eval_iters = 50
log_interval = 50
