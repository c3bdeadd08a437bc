# config/tinystories_gpt.py with a factorized token table: 50304 x 128 times 128 x 512, tied to the output head.
#   python train.py config/tinystories_gpt_factorized.py
# parameters (GPT-2 tokenizer, 50257 padded to 50304), from model.num_params():
#   non-embedding 25,220,096 (unchanged)
#   embedding      6,766,592 = 50304 x 128 + 128 x 512 + position table 512 x 512 (unfactorized: 26,017,792)
#   total         31,986,688 (unfactorized: 51,237,888; saving 50304 * 512 - (50304 * 128 + 128 * 512))
# compute: 203M training FLOPs per token (the head shrinks to rank 128 too)
out_dir = "out-tinystories-gpt-factorized"
dataset = "tinystories"
model = "gpt"
block_size = 512
batch_size = 32
gradient_accumulation_steps = 1
n_layer = 8
n_head = 8
n_embd = 512
embedding_rank = 128
dropout = 0.0
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 200
max_iters = 8000
weight_decay = 0.1
eval_interval = 500
eval_iters = 50
log_interval = 50
