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
dropout = 0.1
block_size = 256
block_size_schedule = "64:0.2,128:0.5"  # shorter sequences first (the study's curriculum); off: --block_size_schedule=
batch_size = 16
gradient_accumulation_steps = 1  # 4,096 tokens per iteration
max_iters = 150  # about 1.3 passes over the training split
learning_rate = 2e-3
min_lr = 2e-4
warmup_iters = 30
weight_decay = 0.1
eval_interval = 50
eval_iters = 10
log_interval = 10
device = "cpu"  # the study ran on a CPU
compile = False
