# nanoGPT's shakespeare_char at its CPU shape (4 layers, 4 heads, width 128, block 64) with the small-model recipe
# the equal-time study in BENCHMARKS.md chose: nanochat's and modded-nanogpt's blocks, Muon set up as they set it,
# a trapezoid schedule and 32 sequences a step. 550 iterations take about nanoGPT's 2,000 iterations' time on a CPU.
# python prepare.py --input=../shared/data/tinyshakespeare/input.txt --tokenizer=char --val_fraction=0.1 \
#     --out_dir=data/shakespeare_char
# python train.py config/shakespeare_char.py
out_dir = "out-shakespeare-char"
dataset = "shakespeare_char"
device = "cpu"
compile = False
n_layer = 4
n_head = 4
n_embd = 128
block_size = 64
batch_size = 32  # 2,048 tokens a step: fewer, better steps than nanoGPT's 768 in the same time (the study's batch rows)
sampling = "epoch"  # each window once a pass: 550 steps are 1.1 passes, in which random windows leave a third unseen
dropout = 0.0
bias = False
# the blocks: rope + rmsnorm, QK-norm, ReLU^2 MLP, an untied head, soft-capped logits, the embedding x0 mixed into
# every layer, value embeddings (each one's share: the study's leave-one-out rows)
rope = True
norm = "rmsnorm"
mlp = "relu2"
qk_norm = True
tie_embeddings = False
zero_init = False  # zero-initialised projections lost 0.013 over two seeds at this size (BENCHMARKS.md)
logit_softcap = 15.0
x0_skip = True
value_embeds = True
# the optimizers: Muon for the hidden matrices, its momentum warmed up from 0.85, with NorMuon's per-row step sizes;
# AdamW for the rest, a rate per group
optimizer = "muon"
muon_normuon = True
muon_polar_express = True  # Polar Express's Newton-Schulz coefficients (nanochat's Muon)
muon_learning_rate = 0.02
muon_momentum_warmup = 300
learning_rate = 3e-3  # AdamW's for hidden matrices it holds (none under Muon) and the default of the three below
embedding_lr = 0.05
head_lr = 0.004
scalar_lr = 0.01
beta1 = 0.8
beta2 = 0.95
weight_decay = 0.0
grad_clip = 1.0
# the schedule: 20 iterations of warmup, constant, then a linear decay to 0 over the last 65%
lr_schedule = "trapezoid"
warmdown_fraction = 0.65
warmup_iters = 20
min_lr = 0.0
max_iters = 550
lr_decay_iters = 550
eval_interval = 125
eval_iters = 20
log_interval = 25
