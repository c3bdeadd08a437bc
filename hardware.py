"""
The machine a script runs on: which device, precision and compile to use (resolve_device turns 'auto' into working
choices and says why), the autocast context, the device's peak FLOP/s for MFU and peak memory, torchrun's processes
(DDP) and what they agree on, and the signals that ask the process to stop.
"""

import os
import re
import signal
import sys
from contextlib import contextmanager, nullcontext
from datetime import timedelta
from functools import lru_cache

import torch
import torch.distributed as dist

# dense bf16/fp16 tensor-core peak FLOP/s by device name, for MFU (first match wins, so specific names first)
PEAK_FLOPS = [
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("A100", 312e12),
    ("4090", 165e12),  # with fp32 accumulate, as PyTorch uses
    ("3090", 71e12),
    ("L4", 121e12),
    ("V100", 125e12),
    ("T4", 65e12),
    ("P100", 18.7e12),  # fp16 without tensor cores
]


def device_peak_flops(device_type, device_name=None):
    """The device's dense half-precision peak in FLOP/s, or None where unknown (CPU)."""
    if device_type != "cuda":
        return None
    name = device_name or torch.cuda.get_device_name()
    return next((flops for key, flops in PEAK_FLOPS if key in name), None)



def resolve_device(device="auto", dtype="auto", compile="auto"):
    """Turn 'auto' (or a request the hardware can't honour) into working choices; print one line saying why."""
    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    if not isinstance(device, str) or not re.fullmatch(r"cpu|mps|cuda(:\d+)?", device):
        raise ValueError(f"--device={device!r}; use auto, cpu, cuda, cuda:<index> or mps")
    device_type = device.split(":")[0]
    if device_type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device={device} but no CUDA GPU is visible; use --device=cpu or --device=auto")
    if device_type == "cuda" and ":" in device and int(device[5:]) >= torch.cuda.device_count():
        raise ValueError(f"--device={device} but this machine has {torch.cuda.device_count()} GPU(s), "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if device_type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("--device=mps but this machine has no Apple GPU; use --device=cpu or --device=auto")
    if compile not in ("auto", True, False):
        raise ValueError(f"--compile={compile!r}; use auto, True or False")
    why = []
    cc = torch.cuda.get_device_capability(device) if device_type == "cuda" else None
    if dtype == "auto":
        # bf16 only where the tensor cores have it (compute capability 8.0+); torch.cuda.is_bf16_supported() also
        # says yes on a T4, which emulates it slowly. A CPU: bf16 where it has bf16 instructions, else float32
        if device_type == "cuda":
            dtype = "bfloat16" if cc >= (8, 0) else "float16"
        else:
            dtype = "bfloat16" if device_type == "cpu" and cpu_has_bfloat16() else "float32"
        why.append("dtype auto")
    elif dtype == "bfloat16" and device_type == "cuda" and cc < (8, 0):
        print(f"warning: this GPU (compute capability {cc[0]}.{cc[1]}) has no fast bfloat16: using float16")
        dtype = "float16"
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"--dtype={dtype!r}; use auto, float32, bfloat16 or float16")
    if compile == "auto":
        compile = device_type == "cuda" and _compile_problem(cc) is None
        why.append("compile auto")
    elif compile and device_type == "cuda" and _compile_problem(cc):
        print(f"warning: torch.compile turned off: {_compile_problem(cc)}")
        compile = False
    name = f" ({torch.cuda.get_device_name(device)}, compute capability {cc[0]}.{cc[1]})" if cc else ""
    print(f"device {device}{name}, dtype {dtype}, compile {compile}" + (f" [{', '.join(why)}]" if why else ""))
    return device, device_type, dtype, bool(compile)


@lru_cache(maxsize=1)
def cpu_has_bfloat16():
    """Whether this CPU multiplies bfloat16 in hardware (x86 AVX512-BF16 or AMX), where autocast in bfloat16 makes
    wide matrix products faster than float32. Elsewhere bfloat16 is emulated, and slower (BENCHMARKS.md)."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, check, lambda: False)() for check in checks)


def _compile_problem(cc):
    if cc < (7, 0):
        return f"Triton needs compute capability 7.0+, this GPU has {cc[0]}.{cc[1]} (e.g. P100)"
    if sys.platform == "win32":
        return "no Triton on Windows"
    try:
        import triton  # noqa: F401
    except ImportError:
        return "Triton is not installed"
    return None


def autocast(device_type, dtype):
    """Mixed precision context: a no-op in float32."""
    if dtype == "float32":
        return nullcontext()
    return torch.autocast(device_type=device_type, dtype=getattr(torch, dtype))


def peak_memory_mb(device_type):
    """Peak memory so far: allocated tensors on a GPU, the process's resident set on a CPU."""
    if device_type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    import resource  # not on Windows, which has no CPU training worth measuring here anyway

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def processes():
    """(ddp, rank, local_rank, world_size) as torchrun sets them in the environment; a plain `python train.py` is
    rank 0 of 1."""
    env = os.environ
    ddp = "RANK" in env and "WORLD_SIZE" in env
    return ddp, int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1))


def init_process_group(device, device_type, local_rank):
    """Join torchrun's processes: NCCL between GPUs (this process on GPU local_rank), gloo between CPU processes;
    a process that waits 10 minutes for the others fails instead of hanging. Returns this process's device."""
    if device_type == "cuda":
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo", timeout=timedelta(minutes=10))
    return device


def agree(ddp, device, *values):
    """What every process must take together (stop, save, the clock): the largest of the processes' values, so a
    flag is true where any process says so."""
    if not ddp:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def gather(ddp, world_size, obj):
    """[each process's obj] in rank order (every process takes part)."""
    if not ddp:
        return [obj]
    objs = [None] * world_size
    dist.all_gather_object(objs, obj)
    return objs


def end_process_group():
    """Leave torchrun's processes together. Called after the DDP wrapper is deleted: it holds the group, whose
    threads must end here and not during the interpreter's shutdown, where gloo can abort the process."""
    dist.barrier()
    dist.destroy_process_group()


def compile_model(model):
    """torch.compile(model), where a compile that fails (an old GPU, Triton's "cannot find -lcuda") falls back to
    eager instead of crashing; for -lcuda, run `ldconfig` or set TRITON_LIBCUDA_PATH to the folder of libcuda.so."""
    torch._dynamo.config.suppress_errors = True
    return torch.compile(model)


@contextmanager
def out_of_memory_hint(batch_size, block_size):
    """A GPU's out-of-memory error as a one-line MemoryError that says what to change."""
    try:
        yield
    except torch.cuda.OutOfMemoryError:
        raise MemoryError(f"CUDA out of memory at batch_size={batch_size}, block_size={block_size}: try a smaller "
                          "--batch_size with a larger --gradient_accumulation_steps (same tokens per step), a smaller "
                          "--block_size, or --gradient_checkpointing=True") from None


class StopSignal:
    """Ctrl-C and SIGTERM (Kaggle, Colab and Slurm ending a session) as a request: name is None until one comes,
    then the signal's name, and training saves and stops after its iteration. A second Ctrl-C stops at once, with
    the usual handlers back; restore() gives them back too (a notebook kernel's own Ctrl-C)."""

    def __init__(self):
        self.name = None
        self.previous = {s: signal.signal(s, self.request) for s in (signal.SIGINT, signal.SIGTERM)}

    def request(self, signum, frame):
        if self.name is not None:
            self.restore()
            raise KeyboardInterrupt
        self.name = signal.Signals(signum).name
        print(f"\n{self.name}: saving a checkpoint and stopping after this iteration (press Ctrl-C again to stop now)")

    def restore(self):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
