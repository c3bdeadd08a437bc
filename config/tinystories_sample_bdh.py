# BDH side of the CPU study in the README: GPT against BDH at matched non-embedding size on the TinyStories sample.
#   python prepare.py --input=../shared/data/tinystories/TinyStories-train-sample.txt --out_dir=data/tinystories_sample
#   python train.py config/tinystories_sample_gpt.py && python train.py config/tinystories_sample_bdh.py
#   python eval.py --compare=out-sample-gpt,out-sample-bdh
# non-embedding parameters 0.79M (4 x (12 * 128^2 + 13 * 128) + 256); BDH's: 0.79M (3 x 16 x 128^2)
out_dir = "out-sample-bdh"
dataset = "tinystories_sample"
model = "bdh"
n_layer = 6
n_head = 4
n_embd = 128
mlp_internal_dim_multiplier = 16  # N = 16 * 128 / 4 = 512 neurons per head
dropout = 0.1
block_size = 256
batch_size = 16
gradient_accumulation_steps = 1  # 4,096 tokens per iteration
max_iters = 150  # 614k tokens, about 1.3 passes over the 477k-token training split
learning_rate = 2e-3
min_lr = 2e-4
warmup_iters = 30
weight_decay = 0.1
eval_interval = 50
eval_iters = 10
log_interval = 10
device = "cpu"
compile = False
