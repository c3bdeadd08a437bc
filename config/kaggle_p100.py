# Kaggle P100 (16 GB, compute capability 6.0): no bf16 and no Triton, so float16 with GradScaler and eager mode.
# Memory and tokens/s: not measured yet (no P100 was available to us). Kaggle sessions end after ~12 h and only
# /kaggle/working survives: a time budget saves and stops in time; resume with --init_from=resume.
# !python train.py config/kaggle_p100.py --out_dir=/kaggle/working/out
# BDH here: add --model=bdh --mlp_internal_dim_multiplier=64 --batch_size=8 and raise gradient_accumulation_steps;
# its activations are batch x heads x T x N per layer (an estimate; not measured on this GPU), and
# --gradient_checkpointing=True trades a third more compute for most of that memory.
out_dir = "/kaggle/working/out"
dataset = "tinystories"
dtype = "float16"
compile = False
n_layer = 6
n_head = 6
n_embd = 384
block_size = 256
batch_size = 64
gradient_accumulation_steps = 2
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 500
max_iters = 20000
eval_interval = 500
eval_iters = 50
checkpoint_minutes = 15
max_minutes = 660  # 11 h: stop and save before Kaggle's 12 h limit
