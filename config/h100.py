# H100 (80 GB): GPT-2 small's shape on TinyStories, in bf16 with torch.compile.
# python train.py config/h100.py
out_dir = "out-h100"
dataset = "tinystories"
dtype = "bfloat16"  # compute capability 9.0 has native bf16
compile = True
n_layer = 12
n_head = 12
n_embd = 768
block_size = 1024
batch_size = 32
gradient_accumulation_steps = 4
learning_rate = 6e-4
min_lr = 6e-5
warmup_iters = 1000
max_iters = 20000
eval_interval = 1000
eval_iters = 50
