"""What the test modules share: paths, the tiny model's flags, and running a script as a user would."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(REPO, "..", "shared", "data")  # offline test data beside a checkout, absent in a clone
# a model small enough that a training iteration takes milliseconds on a laptop CPU
TINY_MODEL = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=4", "--eval_iters=2",
              "--device=cpu", "--dtype=float32", "--compile=False"]


def run_script(script, *args, check=True, timeout=300, env=None, cwd=REPO):
    """Run one of the repo's scripts in a new process; returns the CompletedProcess."""
    proc = subprocess.run([sys.executable, os.path.join(REPO, script), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def assert_one_line_error(proc, *needles):
    """A non-zero exit with one line on stderr, no traceback, holding each needle."""
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def read_log(out_dir):
    """log.csv as a list of dicts (empty strings where a row has no value)."""
    lines = open(os.path.join(out_dir, "log.csv")).read().splitlines()
    header = lines[0].split(",")
    return [dict(zip(header, line.split(","))) for line in lines[1:]]
