# Kaggle 2x T4 (16 GB each, compute capability 7.5): float16 with GradScaler (T4 only emulates bf16), compile
# on (Triton supports 7.5), two processes with torchrun. Memory and tokens/s: not measured yet (no T4 was available
# to us). If NCCL hangs at start, set NCCL_P2P_DISABLE=1 (and NCCL_IB_DISABLE=1).
# !torchrun --standalone --nproc_per_node=2 train.py config/kaggle_t4x2.py
# BDH here: add --model=bdh --mlp_internal_dim_multiplier=64 --batch_size=8 and raise gradient_accumulation_steps;
# its activations are batch x heads x T x N per layer (an estimate; not measured on this GPU), and
# --gradient_checkpointing=True trades a third more compute for most of that memory.
out_dir = "/kaggle/working/out"
dataset = "tinystories"
dtype = "float16"
compile = True
n_layer = 6
n_head = 6
n_embd = 384
block_size = 256
batch_size = 64
gradient_accumulation_steps = 2  # in total: one micro-step per GPU
learning_rate = 1e-3
min_lr = 1e-4
warmup_iters = 500
max_iters = 20000
eval_interval = 500
eval_iters = 50
checkpoint_minutes = 15
max_minutes = 660  # 11 h: stop and save before Kaggle's 12 h limit
