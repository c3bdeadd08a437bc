# GPT-2 style baseline on TinyStories, the same non-embedding size as config/tinystories_bdh.py, to compare them.
#   python prepare.py --dataset=tinystories --tokenizer=gpt2 && python train.py config/tinystories_gpt.py
# parameters (GPT-2 tokenizer, 50257 padded to 50304), from model.num_params():
#   non-embedding 25,220,096 = 8 layers x (12 * 512^2 + 13 * 512) + final LayerNorm 1,024 (BDH: 25,165,824, +0.2%)
#   embedding     26,017,792 = tied token table 50304 x 512 + position table 512 x 512
#   total         51,237,888
# compute: 318M training FLOPs per token, a quarter of BDH's; the same 131M tokens (8000 x 16,384) take roughly
# 15 minutes on an RTX 4090 at ~50 TFLOP/s achieved (an estimate: raise max_iters to spend the hour)
out_dir = "out-tinystories-gpt"
dataset = "tinystories"
model = "gpt"
block_size = 512
batch_size = 32
gradient_accumulation_steps = 1  # 16,384 tokens per iteration, as the BDH config
n_layer = 8
n_head = 8
n_embd = 512
dropout = 0.0
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 200
max_iters = 8000
weight_decay = 0.1
eval_interval = 500
eval_iters = 50
log_interval = 50
