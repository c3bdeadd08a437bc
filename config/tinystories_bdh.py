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
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 200
max_iters = 8000
weight_decay = 0.1
optimizer = "muon"  # Muon for E, E_v, D_x: BDH's gain at equal time in BENCHMARKS.md; --optimizer=adamw
eval_interval = 500
eval_iters = 50
log_interval = 50
