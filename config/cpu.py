# a small GPT on TinyStories (GPT-2 tokenizer) on a laptop or cloud CPU.
# python train.py config/cpu.py
out_dir = "out-cpu"
dataset = "tinystories"
device = "cpu"
dtype = "float32"
compile = False
n_layer = 4
n_head = 4
n_embd = 128
block_size = 256
batch_size = 16
gradient_accumulation_steps = 2
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 100
max_iters = 3000
eval_interval = 250
eval_iters = 20
