"""
Where training writes its numbers: log.csv always (eval.py reads it back), TensorBoard and wandb when asked.
"""

import csv
import os
import time

from files import write_atomic


class RunLog:
    """Where training writes its numbers: out_dir/log.csv always (appended to on resume), TensorBoard and wandb
    when asked, each imported only then. A process other than the master writes nothing."""

    columns = ["iter", "loss", "val_loss", "lr", "tokens_per_sec", "mfu", "grad_norm", "peak_mem_mb", "elapsed_s",
               "x_active", "y_active",  # BDH's fractions of active neurons
               "seq_len", "tokens", "epoch"]  # the curriculum's sequence length, tokens trained, passes over the data

    def __init__(self, out_dir, append, tensorboard=False, wandb_config=None, enabled=True, extra_columns=()):
        self.path = os.path.join(out_dir, "log.csv")
        self.columns = self.columns + [c for c in extra_columns if c not in self.columns]  # e.g. loss_<eval set>
        self.start = time.time()
        self.enabled = enabled
        self.tensorboard = None
        self.wandb = None
        if not enabled:
            return
        if not (append and os.path.exists(self.path)):
            with open(self.path, "w") as f:
                f.write(",".join(self.columns) + "\n")
        else:  # resumed: keep the columns written so far, in their order, and add new ones (a new eval set)
            with open(self.path, newline="") as f:
                reader = csv.DictReader(f)
                rows, old = list(reader), list(reader.fieldnames or [])
            self.columns = old + [c for c in self.columns if c not in old]
            if len(self.columns) > len(old):
                write_atomic(self.path, lambda tmp: self._rewrite(tmp, rows))
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ImportError("--tensorboard_log=True needs TensorBoard: pip install tensorboard") from None
            self.tensorboard = SummaryWriter(os.path.join(out_dir, "tensorboard"))
        if wandb_config is not None:
            try:
                import wandb
            except ImportError:
                raise ImportError("--wandb_log=True needs wandb: pip install wandb (then wandb login)") from None
            self.wandb = wandb
            wandb.init(**wandb_config, resume="allow")

    def _rewrite(self, tmp, rows):
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, self.columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)

    def write(self, it, **metrics):
        if not self.enabled:
            return
        metrics["elapsed_s"] = round(time.time() - self.start, 2)
        row = [str(it)] + [repr(metrics[c]) if c in metrics else "" for c in self.columns[1:]]
        with open(self.path, "a") as f:  # repr keeps full precision: resumed runs compare bit for bit
            f.write(",".join(row) + "\n")
        if self.tensorboard:
            for k, v in metrics.items():
                self.tensorboard.add_scalar(k, v, it)
        if self.wandb:
            self.wandb.log(metrics, step=it)
