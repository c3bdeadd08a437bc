# Fine-tune OpenAI's GPT-2 (124M, downloaded from the Hugging Face hub) on tiny Shakespeare, as nanoGPT's
# config/finetune_shakespeare.py does. The data, with GPT-2's tokenizer (prepare.py's default for --input):
#   python prepare.py --input=path/to/tinyshakespeare/input.txt --blank_line_docs=True --out_dir=data/shakespeare
# then: python train.py config/finetune_shakespeare.py, and python sample.py --out_dir=out-shakespeare
out_dir = "out-shakespeare"
dataset = "shakespeare"
init_from = "gpt2"  # or gpt2-medium, gpt2-large, gpt2-xl (nanoGPT's choice: 1.5B parameters, a large GPU)
eval_interval = 5
eval_iters = 40
always_save_checkpoint = False  # a fine-tune overfits within a few hundred steps: keep the best only
block_size = 1024  # GPT-2's full context; shorter crops its position table
batch_size = 1
gradient_accumulation_steps = 32  # 32 x 1 x 1024 = 32,768 tokens per step
max_iters = 20
learning_rate = 3e-5  # a small constant rate: the weights are already good
decay_lr = False
