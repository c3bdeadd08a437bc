"""
The machine a script runs on: which device, precision and compile to use (resolve_device turns 'auto' into working
choices and says why), the autocast context, the device's peak FLOP/s for MFU, and peak memory.
"""

import re
import sys
from contextlib import nullcontext

import torch

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
        # says yes on a T4, which emulates it slowly
        dtype = "float32" if device_type != "cuda" else ("bfloat16" if cc >= (8, 0) else "float16")
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
