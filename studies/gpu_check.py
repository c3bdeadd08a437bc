"""
One command that checks the whole trainer on a GPU inside a time budget, and writes every figure to a summary:

    python studies/gpu_check.py --out_dir=gpu-check                  # every stage, 10 minutes at most
    TIKTOKEN_CACHE_DIR=path/to/tiktoken_cache python studies/gpu_check.py --out_dir=gpu-check   # GPT-2 tokens offline
    python studies/gpu_check.py --stages=train_bf16,generate --out_dir=gpu-check-2   # some stages again
    python studies/gpu_check.py --device=cpu --quick=True --out_dir=gpu-check-cpu   # every stage, tiny, < 1 minute

The stages, in order (STAGES below):
  machine        GPU name, compute capability, memory, torch and CUDA versions, what dtype and compile 'auto' choose,
                 which scaled_dot_product_attention backend our GPT's attention runs (flash, efficient, cudnn, math)
  bench_gpt2     bench.py for GPT-2 124M at block 1024 in bf16, eager and compiled: tokens/s, MFU, peak memory
  bench_configs  bench.py for the shapes of gpt_config and bdh_config (the TinyStories pair of equal non-embedding
                 size), side by side
  train_bf16     a short run of each config on stories made here, bf16, compiled: the loss falls, the checkpoint
                 loads, the second half resumed from the checkpoint at the middle repeats the straight run, sample.py
                 samples from it
  train_fp16     the same runs in float16 with GradScaler, eager (as a T4 or P100 runs them): loss scale, skipped
                 steps, finite losses
  bdh            BDH's attention forms at long sequences (time, memory, where chunked overtakes direct), and
                 studies/bdh_speed.py (our step against the plain transcription of the paper)
  generate       milliseconds per new token with the cache and recomputing, as the context grows; serve.py answers
                 one streamed request

Writes to out_dir: summary.json ({"machine": {...}, "stages": {name: {"status", figures..., "error", "log_tail"}}}),
summary.md (the same for a person) and logs/<stage>.log (each cut to its last 64 KB): under 1 MB in all, rewritten
after every stage, so a run killed midway still leaves its summary. Datasets, runs and checkpoints (GBs at full
size) go to work_dir, by default a temporary folder deleted at the end.

A stage's status: ok; failed (it raised, a script it ran failed, or one of its checks did not hold: the summary says
which); timeout (it ran past its time and was killed, with everything it started; the figures it had recorded are
kept); skipped (less than a second of the budget was left for it). A stage may take its share of the budget plus
what the stages before it left unused, never the shares of the stages after it: a hang costs one stage. Speeds are
recorded, not checked: a stage fails when something is broken, not when something is slow.

How it runs: this process imports torch once and never runs a torch op or touches CUDA. Each stage runs in a process
forked from it, in a process group of its own (killed at the stage's timeout), and each script or measurement of a
stage in a further fork: the scripts as `python script.py args` runs them (runpy, as __main__). On a loaded 2-core
CPU a tiny train.py run took 0.35-0.56 s in all this way, where a new interpreter spent 3.4 s importing torch and 3 s
more on torch._dynamo (which the optimizers import). Only those last processes create a CUDA context, which would
not survive a fork. Linux (fork, process groups).
"""

import gc
import http.client
import json
import math
import os
import platform
import re
import runpy
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import datetime, timezone

STARTED = time.monotonic()  # the budget counts from here: a machine's limit on the command counts all of it

# before torch: its "is there a GPU?" then asks NVML instead of creating a CUDA context here, in the process whose
# forks do all the GPU work (a CUDA context does not survive a fork)
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")

import torch  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import bench  # noqa: E402
from configurator import check_values, configure, report_errors_in_one_line  # noqa: E402
from files import first_line, read_json, write_atomic, write_json  # noqa: E402
from hardware import autocast, device_peak_flops, resolve_device  # noqa: E402
from model import create_model, pick_model_args  # noqa: E402

# -----------------------------------------------------------------------------
out_dir = "gpu-check"  # summary.json, summary.md, logs/; a folder without an earlier summary
device = "auto"  # 'auto' (the GPU where there is one), 'cuda', 'cuda:<index>' or 'cpu'
quick = False  # tiny shapes and a few steps: every stage on a CPU in under a minute (tests/test_gpu_check.py)
budget_minutes = 10.0  # the whole check; each stage's timeout comes out of it (STAGES)
stages = "all"  # 'all', or stage names separated by commas
tokenizer = "auto"  # the stories' tokens: 'gpt2' (the TinyStories configs') or 'bytes'; auto: gpt2 where
# TIKTOKEN_CACHE_DIR is set (nothing is downloaded: a GPU machine may have no network), else bytes; bytes with quick
gpt_config = "config/tinystories_gpt.py"  # the two configs benched and trained, read when the check runs
bdh_config = "config/tinystories_bdh.py"
work_dir = ""  # datasets, runs and checkpoints; empty: a temporary folder, deleted at the end
# -----------------------------------------------------------------------------
# what the stages run: FULL on a GPU, QUICK (tiny) with --quick
TINY = dict(n_layer=2, n_head=2, n_embd=32, block_size=32, batch_size=4, mlp_internal_dim_multiplier=4)
FULL = dict(
    gpt2=dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, batch_size=16),  # 124M; the rest: bench.py's GPT-2
    vocab_size=50257,  # GPT-2's tokens, as the TinyStories configs train on
    bench_steps=["--warmup_steps=3", "--timed_steps=10", "--generate_tokens=64"],  # compilation in the warm-up
    story_bytes=2_000_000,  # ~0.5M GPT-2 tokens of stories
    train_iters=20, eval_iters=10, sample_tokens=64,  # 20 iterations: 330k tokens of each config's batches
    forms=dict(widths={}, lengths=[1024, 2048, 4096, 8192, 16384], chunk_size=0, timed_steps=3),  # BDHConfig's
    # bdh_speed.py's own widths (the demo's): eager and compiled, then a longer batch eager (a compilation is ~1 min)
    bdh_speed=[["--compile=True"], ["--batch_size=64", "--block_size=512"]],
    generate_len=512, serve_tokens=32,
)
QUICK = dict(
    gpt2=dict(n_layer=2, n_head=2, n_embd=32, block_size=32, batch_size=4),
    vocab_size=257,
    bench_steps=["--warmup_steps=1", "--timed_steps=2", "--generate_tokens=4", "--threads=1"],
    story_bytes=100_000,
    train_iters=8, eval_iters=2, sample_tokens=8,
    forms=dict(widths=dict(n_embd=32, n_head=2, mlp_internal_dim_multiplier=4), lengths=[16, 32, 64], chunk_size=16,
               timed_steps=2),
    bdh_speed=[["--n_layer=1", "--n_embd=32", "--n_head=2", "--mlp_internal_dim_multiplier=4", "--batch_size=2",
                "--block_size=16", "--warmup_steps=1", "--timed_steps=1"]],
    generate_len=64, serve_tokens=8,
)
LOG_KEEP = 64 * 1024  # bytes of each stage's log kept in out_dir/logs
TAIL = 2000  # characters of a failed stage's log in the summary


@dataclass
class Check:
    """What every stage needs to know: the device and what 'auto' chose on it, the sizes, the folders."""

    device: str
    device_type: str
    dtype: str  # 'auto''s choice on this device
    compile: bool  # 'auto''s choice
    quick: bool
    work: str
    gpt_config: str
    bdh_config: str
    tokenizer: str
    log: str = None  # the running stage's log, which its scripts append to; None: this process's output

    @property
    def size(self):
        return QUICK if self.quick else FULL


class StageError(Exception):
    """A stage that can't go on: a script failed, or a measurement raised."""


class Figures(dict):
    """A stage's figures, written to path at every change: a stage killed at its timeout keeps what it measured."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        write_json(dict(self), self.path)

    def update(self, figures):
        super().update(figures)
        write_json(dict(self), self.path)

    def check(self, name, ok):
        """A property the stage relies on; one that does not hold fails the stage, which still goes on measuring."""
        self["checks"] = {**self.get("checks", {}), name: bool(ok)}
        return ok


# -----------------------------------------------------------------------------
# processes: every stage, script and measurement runs in a fork of this process


def fork(main, log=None, new_group=False):
    """A child process that runs main() (its exit status) with stdout and stderr appended to log (None: ours); its
    pid. The child never returns from here: it exits without running this process's exit handlers."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        if new_group:
            with suppress(OSError):  # (the child has exited already, or did this itself)
                os.setpgid(pid, pid)  # the child does this too: whichever runs first, it is done before any kill
        return pid
    code = 1
    try:
        if new_group:
            os.setpgid(0, 0)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a script's own Ctrl-C handling (serve.py's)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if log:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)
            # new files on the new descriptors (the old objects may write elsewhere: pytest's capture), line by line:
            # what a stage killed at its timeout printed is in its log
            sys.stdout = open(1, "w", buffering=1, closefd=False)
            sys.stderr = open(2, "w", buffering=1, closefd=False)
        sys.stdin = open(os.devnull)
        code = main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def wait(pid, timeout=None, group=False):
    """pid's exit status, or None if it ran past timeout seconds and was killed (with its process group if group:
    everything it started)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    code = None
    try:
        while code is None:
            done, status = os.waitpid(pid, 0 if deadline is None else os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
            elif time.monotonic() >= deadline:
                break
            else:
                time.sleep(0.05)
    finally:  # also after an exception here (Ctrl-C): nothing it started outlives this check
        if group:  # also after a clean exit: a server or worker it left behind
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        if code is None:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    return code


def leaf_setup(check):
    """In a fork about to run torch work: tiny shapes on a CPU run faster on one thread (a second one waits)."""
    if check.quick and check.device_type == "cpu":
        torch.set_num_threads(1)


def script_main(check, script, args):
    """What a fork runs to be `python script args` (runpy, as __main__), the script's own error handling included."""

    def main():
        leaf_setup(check)
        sys.argv = [script, *map(str, args)]
        try:
            runpy.run_path(os.path.join(REPO, script), run_name="__main__")
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            sys.excepthook(*sys.exc_info())  # the script's: one line for an error a user can fix
            return 1
        return 0

    return main


def run_script(check, script, *args):
    """Run one of the repo's scripts in a fork whose output goes to the stage's log; its output. A failure is a
    StageError with the script's own error line."""
    start = log_size(check.log)
    with open(check.log, "a") as f:
        f.write(f"\n$ python {script} {' '.join(map(str, args))}\n")
    code = wait(fork(script_main(check, script, args), check.log))
    output = read_from(check.log, start)
    if code != 0:
        raise StageError(f"{script} exited with status {code}: {error_line(output)}")
    return output


def start_script(check, script, *args):
    """A script started in a fork and left running (a server): its pid, and where its output starts in the log."""
    start = log_size(check.log)
    return fork(script_main(check, script, args), check.log), start


def call(check, function, *args):
    """function(*args) in a fork (its torch work, CUDA included, stays there); its result, sent back as JSON. An
    exception there is raised here again: a ValueError as one (a user's input), any other as a StageError."""
    read_end, write_end = os.pipe()

    def main():
        os.close(read_end)
        try:
            leaf_setup(check)
            result = {"value": function(*args)}
        except Exception as e:
            if not isinstance(e, ValueError):
                traceback.print_exc()
            result = {"type": type(e).__name__, "error": str(e)}
        with os.fdopen(write_end, "w") as f:
            json.dump(result, f)
        return 0

    pid = fork(main, check.log)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        text = f.read()
    code = wait(pid)
    if not text:
        raise StageError(f"{function.__name__} died (exit status {code}) before it could answer")
    result = json.loads(text)
    if result.get("type") == "ValueError":  # a user's input (probe_device)
        raise ValueError(result["error"])
    if "error" in result:
        raise StageError(f"{function.__name__}: {result['type']}: {first_line(result['error'])}")
    return result["value"]


def log_size(path):
    return os.path.getsize(path) if os.path.exists(path) else 0


def read_from(path, offset):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def error_line(output):
    """A failed script's gist: its `error: ...` line, else the last line (a traceback's exception)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return next((line for line in reversed(lines) if line.startswith("error:")), lines[-1] if lines else "no output")


# -----------------------------------------------------------------------------
# what the stages share: the configs, the data, bench.py's rows, train.py's log


def read_config(path):
    """A config file's assignments of plain values (it is Python, as configurator.py runs it)."""
    scope = {}
    try:
        with open(path) as f:
            exec(compile(f.read(), path, "exec"), {}, scope)
    except Exception as e:
        line = f" line {e.lineno}" if isinstance(e, SyntaxError) else ""
        raise ValueError(f"config file {path}{line}: {type(e).__name__}: {getattr(e, 'msg', e)}") from None
    return {k: v for k, v in scope.items() if v is None or type(v) in (bool, int, float, str)}


def config_shape(check, path):
    """A config file's (model type, the model's fields it sets, block_size, batch_size): as it is, or with quick
    scaled down to TINY (the rest of its recipe kept)."""
    values = read_config(path)
    if check.quick:
        values.update(TINY, **{k: v for k, v in (("n_kv_head", 1), ("embedding_rank", 8)) if values.get(k)})
    model_type = values.get("model", "gpt")
    args = pick_model_args(model_type, values)
    args.pop("vocab_size", None)  # the data's (train.py) or FULL/QUICK's (bench.py)
    # train.py's defaults where the file sets none (BDH's config class has no block_size: it is the runs')
    return model_type, args, values.get("block_size", 256), values.get("batch_size", 32)


def flags(args):
    return [f"--{k}={v}" for k, v in args.items()]


def dataset(check):
    """The stories every training stage uses: made by the first stage that needs them."""
    folder = os.path.join(check.work, "data")
    if not os.path.exists(os.path.join(folder, "meta.json")):
        run_script(check, "prepare.py", "--dataset=synthetic_stories", f"--num_bytes={check.size['story_bytes']}",
                   f"--tokenizer={check.tokenizer}", f"--out_dir={folder}", "--num_proc=1")
    return folder


def bench_rows(check, name, *args):
    """bench.py's rows (eager, and compiled where compile works) from its JSON, the figures worth a summary."""
    path = os.path.join(check.work, f"bench-{name}.json")
    run_script(check, "bench.py", *args, *check.size["bench_steps"], f"--vocab_size={check.size['vocab_size']}",
               f"--device={check.device}", "--dtype=bfloat16", "--compile=auto", f"--json={path}")
    report = read_json(path)
    return [{"model": r["model"], "compile": r["compile"], "dtype": report["dtype"], "params_M": r["params"] / 1e6,
             "non_embedding_params_M": r["non_embedding_params"] / 1e6, "batch_size": r["batch_size"],
             "seq_len": r["seq_len"], "tokens_per_sec": r["train_tokens_per_sec"], "ms_per_step": r["ms_per_step"],
             "mfu": r["mfu"], "tflops": r["flops_per_sec"] / 1e12, "peak_mem_mb": r["peak_mem_mb"],
             "saved_mb": r["saved_mb"], "generate_tokens_per_sec": r["generate_tokens_per_sec"],
             "generate_nocache_tokens_per_sec": r["generate_nocache_tokens_per_sec"]} for r in report["results"]]


def read_log(run):
    """train.py's log.csv as rows of floats (None where a row has no value)."""
    with open(os.path.join(run, "log.csv")) as f:
        header, *lines = f.read().splitlines()
    return [{k: float(v) if v else None for k, v in zip(header.split(","), line.split(","))} for line in lines]


def checkpoint_facts(path):
    """What a checkpoint holds that the summary reports: it loads as sample.py loads it (weights_only)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return {"iter_num": ckpt["iter_num"], "loss_scale": (ckpt.get("scaler") or {}).get("scale"),
            "mb": os.path.getsize(path) / 2**20}


def short_run(check, figures, name, config, dtype, compile, sample=False):
    """Train config for train_iters on the stories, then again from its checkpoint at the middle: the figures of
    the straight run, and checks that its loss fell, its checkpoint loads and the resumed half repeats it."""
    data, size = dataset(check), check.size
    half = size["train_iters"] // 2
    model_type, model_args, block_size, batch_size = config_shape(check, config)
    whole, resumed = (os.path.join(check.work, "runs", f"{name}-{dtype}{tail}") for tail in ("", "-resumed"))
    for folder in (whole, resumed):
        shutil.rmtree(folder, ignore_errors=True)  # a work_dir used before
    args = [config, f"--dataset={data}", f"--device={check.device}", f"--dtype={dtype}", f"--compile={compile}",
            f"--max_iters={2 * half}", f"--eval_interval={half}", f"--eval_iters={size['eval_iters']}",
            "--log_interval=1", "--keep_checkpoints=3", "--checkpoint_minutes=0", f"--warmup_iters={max(1, half // 2)}",
            "--block_size_schedule="]  # one length: each length is another compilation, and a short run checks
    # training, not the curriculum; the warm-up fits the short run (the config's is for thousands of iterations)
    if check.quick:
        args += flags({**model_args, "block_size": block_size, "batch_size": batch_size})
        args += ["--gradient_accumulation_steps=1", "--total_batch_size=0"]
    run_script(check, "train.py", *args, f"--out_dir={whole}")
    rows = read_log(whole)
    steps = [r for r in rows if r["loss"] is not None]
    evals = [r["val_loss"] for r in rows if r["val_loss"] is not None]
    steady = [r for r in steps if r["iter"] > 2] or steps  # the first steps compile
    facts = call(check, checkpoint_facts, os.path.join(whole, "ckpt.pt"))
    result = {"config": os.path.relpath(config, REPO), "model": model_type, "dtype": dtype, "compile": compile,
              "iters": len(steps), "loss_first": steps[0]["loss"], "loss_last": steps[-1]["loss"],
              "val_loss_first": evals[0], "val_loss_last": evals[-1],
              "tokens_per_sec": statistics.median(r["tokens_per_sec"] for r in steady),
              "mfu": statistics.median(r["mfu"] for r in steady) if steady[0]["mfu"] is not None else None,
              "peak_mem_mb": max(r["peak_mem_mb"] for r in steps), "checkpoint_mb": facts["mb"]}
    if dtype == "float16":  # GradScaler skips a step whose gradient overflowed, and lowers its scale
        result["loss_scale"] = facts["loss_scale"]
        result["skipped_steps"] = sum(not is_finite(r["grad_norm"]) for r in steps)
        figures.check(f"{name}: the checkpoint holds GradScaler's state", facts["loss_scale"] is not None)
    figures.check(f"{name}: every loss finite", all(is_finite(r["loss"]) for r in steps))
    figures.check(f"{name}: val loss fell", evals[-1] < evals[0])
    figures.check(f"{name}: ckpt.pt loads, at the last iteration", facts["iter_num"] == 2 * half)

    # the second half again, resumed from the middle's checkpoint in a folder of its own
    os.makedirs(resumed)
    shutil.copy(os.path.join(whole, f"ckpt_{half}.pt"), os.path.join(resumed, "ckpt.pt"))
    run_script(check, "train.py", *args, f"--out_dir={resumed}", "--init_from=resume")
    straight = {r["iter"]: r["loss"] for r in steps}
    again = {r["iter"]: r["loss"] for r in read_log(resumed) if r["loss"] is not None}
    exact = [i for i in again if again[i] == straight.get(i)]  # floats read back from full-precision text
    diff = max((abs(again[i] - straight[i]) / abs(straight[i]) for i in again if i in straight), default=None)
    result["resume"] = {"from_iter": half, "steps": len(again), "bit_exact_steps": len(exact), "max_rel_diff": diff}
    figures.check(f"{name}: the resumed run ran the second half", sorted(again) == list(range(half + 1, 2 * half + 1)))
    # a GPU's kernels may add in a different order from run to run (flash attention's backward does), which moves
    # the later steps a little; the first resumed step's forward reads only the restored weights and data order
    figures.check(f"{name}: the first resumed step repeats the straight run bit for bit", half + 1 in exact)
    figures.check(f"{name}: the resumed losses within 1e-3 of the straight run's", diff is not None and diff < 1e-3)
    shutil.rmtree(resumed)  # GBs at full size
    if sample:
        output = run_script(check, "sample.py", f"--out_dir={whole}", f"--device={check.device}", "--num_samples=1",
                            f"--max_new_tokens={size['sample_tokens']}", "--start=Once upon a time", "--seed=1")
        speed = re.search(r"\((\d+) tokens, ([\d.]+) tokens/s\)", output)
        text = output.split("\nOnce upon a time", 1)[-1].split("\n---------------", 1)[0]
        result["sample"] = ("Once upon a time" + text)[:300]
        result["sample_tokens_per_sec"] = float(speed.group(2)) if speed else None
        # it ran to its speed line; a model 8 steps old may end the text at once (0 tokens), which is still a sample
        figures.check(f"{name}: sample.py samples", speed is not None)
    return result


def is_finite(x):
    return x is not None and math.isfinite(x)


# -----------------------------------------------------------------------------
# measurements that run in a fork of a stage (call): their torch work never reaches this process


def machine_facts(check):
    device, device_type, dtype, _ = resolve_device(check.device, "auto", "auto")  # (the summary has its choices)
    facts = {"torch": torch.__version__, "cuda": torch.version.cuda,
             "cudnn": torch.backends.cudnn.version() if device_type == "cuda" else None,
             "python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
             "cpu_count": os.cpu_count()}
    try:
        import triton

        facts["triton"] = triton.__version__
    except ImportError:
        facts["triton"] = None
    if device_type == "cuda":
        p = torch.cuda.get_device_properties(device)
        facts.update(gpu=p.name, compute_capability=f"{p.major}.{p.minor}", memory_gb=round(p.total_memory / 2**30, 1),
                     multiprocessors=p.multi_processor_count,
                     peak_tflops=(device_peak_flops("cuda", p.name) or 0) / 1e12)  # 0: not in hardware.PEAK_FLOPS
    _, args, _, _ = config_shape(check, check.gpt_config)
    facts.update(sdpa_backends(device, dtype, {**args, "n_layer": 1, "vocab_size": check.size["vocab_size"]}))
    return facts


def sdpa_backends(device, dtype, model_args):
    """Which scaled_dot_product_attention kernel our GPT's attention runs at this dtype and shape (the op the
    profiler records), and which of the backends can run it at all."""
    net = create_model("gpt", model_args).to(device)
    x = torch.zeros((2, model_args["block_size"]), dtype=torch.long, device=device)
    device_type = device.split(":")[0]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof, autocast(device_type, dtype):
        net(x, x)
    ops = {e.name for e in prof.events() if "scaled_dot_product" in e.name}
    runs = next((name for name in ("flash", "efficient", "cudnn", "math") if any(name in op for op in ops)), None)
    can_run = {}
    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION),
                          ("cudnn", SDPBackend.CUDNN_ATTENTION), ("math", SDPBackend.MATH)):
        try:
            with sdpa_kernel(backend), autocast(device_type, dtype):
                net(x, x)
            can_run[name] = True
        except Exception:  # "no available kernel", or a backend this torch lacks
            can_run[name] = False
    return {"sdpa_backend": runs, "sdpa_ops": sorted(ops), "sdpa_can_run": can_run}


def bdh_forms(check):
    """One layer of BDH (BDHConfig's widths at full size), batch 1, at each length: each form's training step
    (the forms in turn, as tests/test_bench.py times them), what it saves for backward, and its peak GPU memory. A
    form that runs out of memory at a length says so, and the other is still measured."""
    spec = check.size["forms"]
    args = {**spec["widths"], "n_layer": 1, "dropout": 0.0, "vocab_size": 256}
    rows = []
    for T in spec["lengths"]:
        g = torch.Generator().manual_seed(0)
        x, y = torch.randint(0, 256, (2, 1, T), generator=g).to(check.device)
        row, steps = {"T": T}, {}
        for form in ("direct", "chunked"):
            try:
                torch.manual_seed(0)
                net = create_model("bdh", args).to(check.device)
                net.track_activity, net.attention_form = False, form  # as train.py's steps between log lines
                net.chunk_size = spec["chunk_size"] or net.chunk_size
                (optimizer,) = net.configure_optimizers(0.1, 6e-4, (0.9, 0.95), check.device_type)
                scaler = torch.amp.GradScaler(check.device_type, enabled=check.dtype == "float16")
                row[f"{form}_saved_mb"] = bench.saved_for_backward_mb(net, x, y, check.dtype)
                if check.device_type == "cuda":  # one step alone: its own peak
                    torch.cuda.reset_peak_memory_stats()
                    bench.train_step(net, optimizer, x, y, scaler, check.dtype)
                    row[f"{form}_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
                steps[form] = (net, optimizer, scaler)
            except torch.OutOfMemoryError:
                row[f"{form}_ms"] = "out of memory"
                net = optimizer = None
                free_memory(check)
        try:
            times = bench.median_step_times(steps, x, y, 1, spec["timed_steps"], check.dtype) if steps else {}
            row.update({f"{form}_ms": 1000 * t for form, t in times.items()})
        except torch.OutOfMemoryError:
            row["error"] = "out of memory with both forms' weights and optimizers held"
        del steps, net, optimizer
        free_memory(check)
        rows.append(row)
    return rows


def free_memory(check):
    gc.collect()
    if check.device_type == "cuda":
        torch.cuda.empty_cache()


def generation_curve(check, model_type, model_args):
    """Milliseconds per new token at positions N/8, N/4, N/2 and N of one greedy sequence (the median of the 8
    tokens ending there), with the cache and recomputing the context for each token; random weights of the shape
    (speed does not depend on them). BENCHMARKS.md's recipe, with the GPU synchronised around each token."""
    N = check.size["generate_len"]
    args = {**model_args, "dropout": 0.0, "vocab_size": check.size["vocab_size"]}
    if model_type == "gpt":
        args["block_size"] = max(args.get("block_size", N), N)  # the whole sequence within its context
    torch.manual_seed(0)
    net = create_model(model_type, args).to(check.device).eval()
    curves = {}
    for use_cache in (True, False):
        cache = net.new_cache() if use_cache else None
        tokens = torch.zeros((1, 1), dtype=torch.long, device=check.device)
        ms = []
        with torch.no_grad(), autocast(check.device_type, check.dtype):
            for _ in range(N):
                bench.sync(check.device_type)
                t0 = time.perf_counter()
                logits, _ = net(tokens[:, -1:], cache=cache) if use_cache else net(tokens)
                tokens = torch.cat((tokens, logits[:, -1:, : net.config.vocab_size].argmax(-1)), dim=1)
                bench.sync(check.device_type)
                ms.append(1000 * (time.perf_counter() - t0))
        curves["cache" if use_cache else "recompute"] = {p: statistics.median(ms[p - 8: p]) for p in
                                                         (N // 8, N // 4, N // 2, N)}
    return curves


def probe_device(device):
    """resolve_device's choices for device (in a fork: asking a GPU creates a CUDA context)."""
    return resolve_device(device, "auto", "auto")


# -----------------------------------------------------------------------------
# the stages: each fn(check, figures), in a process of its own


def machine(check, figures):
    figures.update(call(check, machine_facts, check))


def bench_gpt2(check, figures):
    figures["rows"] = bench_rows(check, "gpt2", "--model=gpt", *flags(check.size["gpt2"]))


def bench_configs(check, figures):
    for name, config in (("gpt", check.gpt_config), ("bdh", check.bdh_config)):
        model_type, args, block_size, batch_size = config_shape(check, config)
        shape = {**args, "block_size": block_size, "batch_size": batch_size}
        rows = bench_rows(check, name, f"--model={model_type}", *flags(shape))
        figures[name] = {"config": os.path.relpath(config, REPO), "rows": rows}
    gpt, bdh = figures["gpt"]["rows"], figures["bdh"]["rows"]
    figures["gpt_over_bdh_tokens_per_sec"] = {("compiled" if g["compile"] else "eager"):
                                              g["tokens_per_sec"] / b["tokens_per_sec"] for g, b in zip(gpt, bdh)}


def train_bf16(check, figures):
    for name, config in (("gpt", check.gpt_config), ("bdh", check.bdh_config)):
        figures[name] = short_run(check, figures, name, config, "bfloat16", check.compile, sample=True)


def train_fp16(check, figures):
    for name, config in (("gpt", check.gpt_config), ("bdh", check.bdh_config)):
        figures[name] = short_run(check, figures, name, config, "float16", False)
        shutil.rmtree(os.path.join(check.work, "runs", f"{name}-float16"))


def bdh(check, figures):
    rows = call(check, bdh_forms, check)
    figures["forms"] = rows
    timed = [r for r in rows if all(isinstance(r.get(f"{f}_ms"), float) for f in ("direct", "chunked"))]
    # the shortest length from which the chunked form is the faster at every longer length measured
    figures["chunked_faster_from_T"] = next((r["T"] for i, r in enumerate(timed)
                                             if all(s["chunked_ms"] < s["direct_ms"] for s in timed[i:])), None)
    for i, extra in enumerate(check.size["bdh_speed"]):
        threads = [] if check.quick else ["--threads=0"]  # a GPU's host: torch's default; quick: bdh_speed's one
        output = run_script(check, "studies/bdh_speed.py", f"--device={check.device}", *threads, *extra)
        # bdh_speed.py prints a table (no JSON): "name  ms ms/step  ratio x the reference's speed ..."
        rows = {m[1].strip(): {"ms_per_step": float(m[2].replace(",", "")), "speed_vs_reference": float(m[3])}
                for m in re.finditer(r"^(\S.*?)\s+([\d.,]+) ms/step\s+([\d.]+)x", output, re.M)}
        memory = re.search(r"ours saves ([\d.]+)x the reference's memory", output)
        figures[f"bdh_speed_{i + 1}"] = {"args": " ".join(extra), "rows": rows,
                                         "memory_vs_reference": float(memory[1]) if memory else None}
        figures.check(f"bdh_speed.py {i + 1}: its table read", {"ours", "reference"} <= set(rows))


def generate(check, figures):
    for name, config in (("gpt", check.gpt_config), ("bdh", check.bdh_config)):
        model_type, args, _, _ = config_shape(check, config)
        curves = call(check, generation_curve, check, model_type, args)
        cache = list(curves["cache"].values())
        figures[f"{name}_ms_per_token"] = {**curves, "cache_last_over_first": cache[-1] / cache[0]}
    figures["serve"] = serve_one_request(check, figures)


def serve_one_request(check, figures):
    """serve.py on a trained run (train_bf16's GPT, else a tiny one trained here), one streamed completion."""
    run = os.path.join(check.work, "runs", "gpt-bfloat16")
    if not os.path.exists(os.path.join(run, "ckpt.pt")):
        run = os.path.join(check.work, "runs", "serve-gpt")
        shutil.rmtree(run, ignore_errors=True)
        run_script(check, "train.py", f"--dataset={dataset(check)}", f"--out_dir={run}", f"--device={check.device}",
                   *flags(TINY), "--max_iters=10", "--eval_interval=10", "--eval_iters=2", "--compile=False")
    pid, start = start_script(check, "serve.py", f"--out_dir={run}", "--port=0", f"--device={check.device}")
    try:
        address = None
        while address is None:  # its "serving NAME at http://HOST:PORT" line, or its exit
            address = re.search(r"^serving \S+ at http://([^\s:]+):(\d+)", read_from(check.log, start), re.M)
            if address is None and os.waitpid(pid, os.WNOHANG)[0]:
                raise StageError(f"serve.py exited: {error_line(read_from(check.log, start))}")
            time.sleep(0.05)
        conn = http.client.HTTPConnection(address[1], int(address[2]), timeout=120)
        body = {"prompt": "Once upon a time", "max_tokens": check.size["serve_tokens"], "stream": True, "seed": 1,
                "stream_options": {"include_usage": True}}
        t0 = time.perf_counter()
        conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        events, done, first = [], False, None
        for line in response:
            line = line.decode().strip()
            if not line.startswith("data: "):
                continue
            first = first or time.perf_counter() - t0
            if line == "data: [DONE]":
                done = True
                break
            events.append(json.loads(line[6:]))
        seconds = time.perf_counter() - t0
        conn.close()
    finally:
        os.kill(pid, signal.SIGINT)  # serve.py's Ctrl-C; the stage's process group is killed after it anyway
        if wait(pid, timeout=10) is None:
            print("serve.py did not stop on Ctrl-C: killed")
    text = "".join(c.get("text", "") for e in events for c in e.get("choices", []))
    usage = next((e["usage"] for e in events if e.get("usage")), {})
    tokens = usage.get("completion_tokens")
    result = {"run": os.path.basename(run), "http_status": response.status, "events": len(events), "text": text[:300],
              "completion_tokens": tokens, "first_event_ms": 1000 * first if first else None, "seconds": seconds,
              "tokens_per_sec": tokens / seconds if tokens else None}
    figures.check("serve.py: status 200", response.status == 200)
    figures.check("serve.py: the stream ends with [DONE]", done)
    figures.check("serve.py: streamed its completion", tokens is not None and len(text) >= (tokens > 0))
    return result


STAGES = [  # name, function, share of the budget
    ("machine", machine, 0.04),
    ("bench_gpt2", bench_gpt2, 0.14),
    ("bench_configs", bench_configs, 0.18),
    ("train_bf16", train_bf16, 0.26),
    ("train_fp16", train_fp16, 0.12),
    ("bdh", bdh, 0.14),
    ("generate", generate, 0.12),
]


# -----------------------------------------------------------------------------
# the runner


def run_stage(name, function, timeout, check, out):
    """One stage in a process group of its own, killed after timeout seconds: its summary entry."""
    log = os.path.join(out, "logs", f"{name}.log")
    path = os.path.join(check.work, f"{name}.json")
    for stale in (log, path):
        if os.path.exists(stale):
            os.remove(stale)

    def main():
        figures = Figures(path)
        try:
            function(replace(check, log=log), figures)
        except Exception as e:
            traceback.print_exc()
            figures["error"] = (str(e) if isinstance(e, StageError) else f"{type(e).__name__}: {e}")[:500]
            return 1
        return 0

    t0 = time.monotonic()
    code = wait(fork(main, log, new_group=True), timeout, group=True)
    figures = read_json(path) if os.path.exists(path) else {}
    error = figures.pop("error", None)
    failed = [k for k, ok in figures.get("checks", {}).items() if not ok]
    if code is None:
        status, error = "timeout", f"still running after {timeout:.0f} s: killed, with everything it started"
    elif code != 0:
        status, error = "failed", error or f"its process exited with status {code}"
    elif failed:
        status, error = "failed", "checks that did not hold: " + "; ".join(failed)
    else:
        status = "ok"
    entry = {"status": status, "seconds": round(time.monotonic() - t0, 1), "timeout_s": round(timeout), **figures}
    if status != "ok":
        entry["error"] = error
        entry["log_tail"] = read_from(log, max(0, log_size(log) - 4 * TAIL))[-TAIL:] if os.path.exists(log) else ""
    if log_size(log) > LOG_KEEP:  # the end is what explains a failure
        write_text(log, "[...]\n" + read_from(log, log_size(log) - LOG_KEEP))
    return entry


def run_stages(stage_list, out, budget_s, check, facts):
    """Run [(name, function, share)] in turn, writing out/summary.json and summary.md before the first and after
    each; the summary. A stage's timeout is the budget left less the shares promised to the stages after it."""
    os.makedirs(os.path.join(out, "logs"), exist_ok=True)
    summary = {"machine": facts, "stages": {name: {"status": "pending"} for name, _, _ in stage_list}}
    write_summary(out, summary)
    total = sum(share for _, _, share in stage_list) or 1.0
    t0 = time.monotonic()
    for i, (name, function, _) in enumerate(stage_list):
        promised = budget_s * sum(share for _, _, share in stage_list[i + 1:]) / total
        timeout = budget_s - (time.monotonic() - t0) - promised
        if timeout < 1:
            error = f"{max(0, timeout):.1f} s of the budget left for it: too little to start"
            summary["stages"][name] = {"status": "skipped", "error": error}
            print(f"{name}: skipped ({error})", flush=True)
        else:
            print(f"{name}: running (at most {timeout:.0f} s)", flush=True)
            summary["stages"][name] = {"status": "running"}
            write_summary(out, summary)
            try:
                summary["stages"][name] = run_stage(name, function, timeout, check, out)
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the stage's processes are killed already
                summary["stages"][name] = {"status": "failed", "error": "interrupted"}
                for later, _, _ in stage_list[i + 1:]:
                    summary["stages"][later] = {"status": "skipped", "error": "the check was interrupted"}
                write_summary(out, summary)
                raise
            entry = summary["stages"][name]
            print(f"{name}: {entry['status']} in {entry['seconds']} s" + (f": {entry['error']}" if entry.get("error")
                                                                         else ""), flush=True)
        if name == "machine" and summary["stages"][name]["status"] == "ok":
            facts.update({k: v for k, v in summary["stages"][name].items() if k not in ("status", "seconds",
                                                                                       "timeout_s")})
        write_summary(out, summary)
    return summary


def write_summary(out, summary):
    write_json(summary, os.path.join(out, "summary.json"))
    write_text(os.path.join(out, "summary.md"), summary_markdown(summary))


def write_text(path, text):
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    write_atomic(path, write)


def summary_markdown(summary):
    m = summary["machine"]
    lines = [f"# gpu_check: {m.get('gpu') or m.get('device', '?')}, {m.get('date', '')}", "",
             f"`{m.get('command', '')}`", "", "| machine | |", "|---|---|"]
    lines += [f"| {k} | {cell(v)} |" for k, v in m.items() if k != "command"]
    lines += ["", "| stage | status | seconds | error |", "|---|---|---|---|"]
    lines += [f"| {name} | {s['status']} | {s.get('seconds', '')} | {cell(s.get('error', ''))} |"
              for name, s in summary["stages"].items()]
    for name, s in summary["stages"].items():
        lines += ["", f"## {name}: {s['status']}", ""]
        if name == "machine" and s["status"] == "ok":
            lines.append("(the machine table above)")
            continue
        checks = s.get("checks", {})
        if checks:
            failed = [k for k, ok in checks.items() if not ok]
            lines.append(f"- checks: {len(checks) - len(failed)} of {len(checks)} hold" +
                         "".join(f"\n  - did not hold: {k}" for k in failed))
        for key, value in s.items():
            if key not in ("status", "seconds", "timeout_s", "error", "log_tail", "checks"):
                lines += markdown(key, value)
        if s.get("log_tail"):
            lines += ["", "```", s["log_tail"].rstrip(), "```"]
    return "\n".join(lines) + "\n"


def markdown(key, value):
    """A figure as markdown lines: a list of rows as a table, a dict by its keys, a value on a line of its own."""
    if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
        columns = list(dict.fromkeys(k for r in value for k in r))
        return ([f"{key}:", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
                + ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in value] + [""])
    if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):  # rows by name
        return markdown(key, [{"": k, **v} for k, v in value.items()])
    if isinstance(value, dict):
        nested = [k for k, v in value.items() if isinstance(v, (dict, list))]
        plain = cell({k: v for k, v in value.items() if k not in nested})
        lines = [f"- {key}: {plain}"] if plain else []
        return lines + [line for k in nested for line in markdown(f"{key}.{k}", value[k])]
    return [f"- {key}: {cell(value)}"]


def cell(v):
    if isinstance(v, float):
        text = f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    elif isinstance(v, list):
        text = ", ".join(map(cell, v))
    elif isinstance(v, dict):
        text = ", ".join(f"{k} {cell(x)}" for k, x in v.items())
    else:
        text = "-" if v is None else str(v)
    return text.replace("|", "\\|").replace("\n", " ")


# -----------------------------------------------------------------------------
def main():
    report_errors_in_one_line()
    config = configure(globals())
    check_values(config, positive=("budget_minutes",), choices={"tokenizer": ("auto", "gpt2", "bytes")})
    out = os.path.abspath(out_dir)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out_dir={out_dir} is a file, not a folder; choose another --out_dir")
    if os.path.exists(os.path.join(out, "summary.json")):
        raise ValueError(f"--out_dir={out_dir} already holds a summary (summary.json) of an earlier check; choose "
                         "another --out_dir (nothing was overwritten)")
    if work_dir and os.path.exists(work_dir) and not os.path.isdir(work_dir):
        raise ValueError(f"--work_dir={work_dir} is a file, not a folder; choose another --work_dir")
    configs = {}
    for key, path in (("gpt_config", gpt_config), ("bdh_config", bdh_config)):
        found = next((os.path.abspath(p) for p in (path, os.path.join(REPO, path)) if os.path.isfile(p)), None)
        if found is None:
            raise ValueError(f"--{key}={path}: no such config file (the repo's are in config/)")
        read_config(found)  # a broken file stops here, not in a stage
        configs[key] = found
    names = [name for name, _, _ in STAGES]
    chosen = names if stages == "all" else [s.strip() for s in str(stages).split(",") if s.strip()]
    if not chosen:
        raise ValueError("--stages is empty; give 'all' or some of " + ", ".join(names))
    for name in chosen:
        if name not in names:
            raise ValueError(f"--stages: no stage {name!r}; choose from {', '.join(names)} (or all)")
    if tokenizer != "auto":
        tokens = tokenizer
    else:  # no download: a GPU machine may have no network
        tokens = "gpt2" if os.environ.get("TIKTOKEN_CACHE_DIR") and not quick else "bytes"
    probe = Check(str(device), str(device).split(":")[0], "float32", False, quick, "", "", "", tokens)
    resolved, device_type, dtype, can_compile = call(probe, probe_device, device)

    # the optimizers import torch._dynamo: once here, not in each fork (seconds each)
    import torch._dynamo  # noqa: F401

    if torch.cuda.is_initialized():  # an import made a CUDA context here: the forks could not use the GPU
        raise RuntimeError("CUDA was initialised in gpu_check's own process; its forks can't use the GPU")
    work = os.path.abspath(work_dir) if work_dir else tempfile.mkdtemp(prefix="gpu_check-")
    os.makedirs(work, exist_ok=True)
    check = Check(resolved, device_type, dtype, can_compile, quick, work, configs["gpt_config"], configs["bdh_config"],
                  tokens)
    facts = {"command": " ".join(["python studies/gpu_check.py", *sys.argv[1:]]),
             "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "device": resolved,
             "dtype_auto": dtype, "compile_auto": can_compile, "quick": quick, "budget_minutes": budget_minutes,
             "tokenizer": tokens}
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM as Ctrl-C: kill the stage, write the summary
    try:
        budget_s = 60 * budget_minutes - (time.monotonic() - STARTED)
        summary = run_stages([s for s in STAGES if s[0] in chosen], out, budget_s, check, facts)
    except KeyboardInterrupt:
        raise SystemExit(f"interrupted: the summary so far is in {os.path.join(out_dir, 'summary.md')}") from None
    finally:
        if not work_dir:
            shutil.rmtree(work, ignore_errors=True)
    print(summary_markdown(summary))
    bad = [name for name, s in summary["stages"].items() if s["status"] != "ok"]
    print(f"{len(chosen) - len(bad)} of {len(chosen)} stages ok" + (f"; not ok: {', '.join(bad)}" if bad else "")
          + f"; summary in {os.path.join(out_dir, 'summary.md')}")
    if bad:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
