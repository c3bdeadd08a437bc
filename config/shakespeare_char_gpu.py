# nanoGPT's shakespeare_char at its GPU shape (6 layers, 6 heads, width 384, block 256, batch 64, dropout 0.2),
# with the optimizer that won the CPU study in BENCHMARKS.md (Muon) and the GPT options that came second there
# (rope, rmsnorm, swiglu), which cost relatively less per step on a GPU. Not yet measured on a GPU.
# python prepare.py --input=input.txt --tokenizer=char --val_fraction=0.1 --out_dir=data/shakespeare_char
# python train.py config/shakespeare_char_gpu.py
out_dir = "out-shakespeare-char-gpu"
dataset = "shakespeare_char"
n_layer = 6
n_head = 6
n_embd = 384
block_size = 256
batch_size = 64
dropout = 0.2
bias = False
rope = True
norm = "rmsnorm"
mlp = "swiglu"
optimizer = "muon"
muon_learning_rate = 0.02
learning_rate = 1e-3
min_lr = 1e-4
beta2 = 0.99  # tokens per iteration are few
warmup_iters = 100
max_iters = 5000
lr_decay_iters = 5000
eval_interval = 250
eval_iters = 200
log_interval = 10
always_save_checkpoint = False  # it overfits: keep best.pt
