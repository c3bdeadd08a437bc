# nanoGPT's shakespeare_char at its CPU shape (4 layers, 4 heads, width 128, block 64, batch 12), with this
# project's best settings for it, chosen by the equal-wall-time study in BENCHMARKS.md
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
batch_size = 12
dropout = 0.0
bias = False
optimizer = "muon"  # the study's largest gain at equal time; rope/rmsnorm/swiglu cost more per step on a CPU
learning_rate = 1e-3  # AdamW's: embeddings, head, gains
muon_learning_rate = 0.02
beta2 = 0.99
max_iters = 2000
lr_decay_iters = 2000
warmup_iters = 100
min_lr = 1e-4
eval_interval = 250
eval_iters = 20
log_interval = 50
