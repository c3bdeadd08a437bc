# BDH (the Dragon Hatchling) in the paper's reference shape on TinyStories; compare with config/tinystories_gpt.py.
#   python prepare.py --dataset=tinystories --tokenizer=gpt2 && python train.py config/tinystories_bdh.py
# parameters (GPT-2 tokenizer, 50257 padded to 50304), from model.num_params():
#   non-embedding 25,165,824 = E, E_v (4 x 256 x 8192 each) and D_x (32768 x 256), shared by the 6 layers
#   embedding     25,755,648 = token table 50304 x 256 + untied head 256 x 50304
#   total         50,921,472
# compute: 1.29G training FLOPs per token at T = 512 (the shared weights run in each of the 6 layers); 131M tokens
# (8000 x 16,384) take roughly an hour on an RTX 4090 at ~40 TFLOP/s achieved (an estimate).
# memory: activations are batch x heads x T x N per layer (N = 8192), about 1 GB per 512-token sequence in bf16:
# batch 16 fits 24 GB; on smaller GPUs lower batch_size (raising gradient_accumulation_steps) or set
# gradient_checkpointing = True. Training logs can show model.last_activity (the paper reports ~5% after training).
out_dir = "out-tinystories-bdh"
dataset = "tinystories"
model = "bdh"
block_size = 512
batch_size = 16
gradient_accumulation_steps = 2  # 16,384 tokens per iteration, as the GPT configs
n_layer = 6
n_embd = 256
n_head = 4
mlp_internal_dim_multiplier = 128  # N = 128 * 256 / 4 = 8192 neurons per head
dropout = 0.1
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 200
max_iters = 8000
weight_decay = 0.1
eval_interval = 500
eval_iters = 50
log_interval = 50
