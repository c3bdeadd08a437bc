"""
int8 weights for a loaded model on a CPU: sample.py, eval.py and serve.py --quantize=int8.

Every matrix a token is multiplied by becomes int8, one scale per output row, through PyTorch's own dynamic
quantization (torch.ao's quantized Linear: fbgemm's int8 kernels on x86, qnnpack's on ARM): the activations are
quantized per call, the products run in int8 with int32 sums, the result comes back to float32. GPT: every
nn.Linear of its blocks (attention's q/k/v and output, the MLP). BDH: its encoders E and E_v and its decoder D_x, as
linear maps. Both: the output head (the token table's transpose, or its own). The token lookups, norms, biases, BDH's
attention and the rotary embedding stay float32.

Why this and not torchao: torchao is PyTorch's newer home for quantization, but in a trial on one MLP on the
2-core development CPU in eager mode its int8 configs (weight-only, dynamic) and torch's own _weight_int8pack_mm
were slower than float32, where torch.ao's dynamic Linear decodes GPT-2 124M's shape 1.62x faster than float32
(BENCHMARKS.md, "int8 and llama.cpp on a CPU"). torch.ao.quantization warns that it is deprecated in favour of
torchao; that warning is silenced here on purpose, and the day a torch drops it, --quantize=int8 says so in one line.
"""

import warnings

import torch
import torch.nn as nn

QUANTIZE = ("", "int8")  # '': float weights as trained


def _dynamic_int8():
    """torch.ao's quantize_dynamic and its per-row qconfig; an ImportError saying what to do where torch has none."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the deprecation notice (see the module docstring)
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    except ImportError:
        raise ImportError(f"--quantize=int8 needs torch.ao.quantization's dynamic int8 Linear, which torch "
                          f"{torch.__version__} no longer has; use a torch release that has it (2.4-2.13 do)") from None
    if not torch.backends.quantized.supported_engines or torch.backends.quantized.engine == "none":
        raise ImportError("--quantize=int8: this torch build has no int8 CPU kernels (fbgemm, x86, qnnpack)")
    return quantize_dynamic, per_channel_dynamic_qconfig


class Int8Linear(nn.Module):
    """F.linear(x, weight, bias) with weight as int8 (one scale per output row): torch.ao's dynamic Linear, which
    quantizes its input with one scale per call. So a decoding step (x (B, 1, K), several streams at once in
    serve.py) calls it row by row: each row's numbers are then its own at any B, as model.per_row makes them in float."""

    def __init__(self, weight, bias=None):
        super().__init__()
        self.out_features, self.in_features = weight.shape  # as nn.Linear's (GPT's value-embedding gate reads it)
        quantize_dynamic, qconfig = _dynamic_int8()
        linear = nn.Linear(weight.size(1), weight.size(0), bias=bias is not None)
        with torch.no_grad():
            linear.weight.copy_(weight)
            if bias is not None:
                linear.bias.copy_(bias)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.linear = quantize_dynamic(nn.Sequential(linear), {nn.Linear: qconfig})[0]

    def forward(self, x):  # (..., K) -> (..., N)
        if x.dim() == 3 and x.size(1) == 1 and x.size(0) > 1:
            return torch.cat([self.linear(row) for row in x.split(1)])
        return self.linear(x)


def check_quantize(how, device, dtype="auto"):
    """A one-line ValueError for a --quantize other than '' and 'int8', for int8 on a device that is not the CPU
    (the int8 kernels are CPU ones) and for int8 under a 16-bit autocast (its products take float32 in and out).
    Returns the device to use: int8 makes device='auto' the CPU."""
    if how not in QUANTIZE:
        raise ValueError(f"--quantize={how!r}; use int8 (int8 weights on a CPU) or leave it empty (float weights)")
    if not how:
        return device
    if device == "auto":
        return "cpu"
    if torch.device(device).type != "cpu":
        raise ValueError(f"--quantize=int8 runs on the CPU (PyTorch's int8 kernels are CPU ones), not on "
                         f"--device={device}; say --device=cpu, or leave --quantize empty on a GPU")
    if dtype not in ("auto", "float32", torch.float32):
        raise ValueError(f"--quantize=int8 computes around its int8 products in float32, not --dtype={dtype}: "
                         "leave --dtype at auto or float32")
    return device


def quantize_model(model, how, device):
    """model with int8 weights where how == 'int8' (changed in place and returned); how == '' returns it unchanged.
    For inference only: the int8 model has no gradients."""
    check_quantize(how, device)
    if not how:
        return model
    name = type(model).__name__
    if name not in ("GPT", "BDH"):
        raise ValueError(f"--quantize=int8 knows GPT and BDH, not {name}")
    model = model.float().eval().requires_grad_(False)
    if name == "GPT":  # every linear layer of the blocks (attention's and the MLP's, value-embedding gates included)
        for block in model.h:
            for parent in list(block.modules()):
                for child_name, child in list(parent.named_children()):
                    if isinstance(child, nn.Linear):
                        setattr(parent, child_name, Int8Linear(child.weight, child.bias))
    else:
        _quantize_bdh(model)
    head = Int8Linear(model.lm_head.full())  # factorized: x @ proj^T @ weight^T, multiplied out to one matrix
    # (B, T, d) -> (B, T, padded V); the token lookup keeps the float table. A bound method, not the module: a module
    # would be registered as a child named unembed, and the class's unembed() would still be the one called
    model.lm_head.unembed = head.forward
    model.quantized = how
    return model


# -----------------------------------------------------------------------------
# BDH's products as int8 linear maps


def _quantize_bdh(model):
    """BDH's three products (BDH.encode, encode_v, decode) as int8 linear maps on this model; its layer is BDH's."""
    c = model.config
    nh, D, N = c.n_head, c.n_embd, c.N
    # E, (nh, D, N): one map D -> nh * N (every head reads the same x); E_v: a map D -> N per head (each head reads its
    # own yKV); D_x, (nh * N, D): one map nh * N -> D over the heads side by side
    encoder = Int8Linear(model.encoder.detach().permute(0, 2, 1).reshape(nh * N, D))
    encoders_v = [Int8Linear(model.encoder_v[h].detach().t()) for h in range(nh)]
    decoder = Int8Linear(model.decoder.detach().t())

    def encode(x):  # (B, T, D) -> (nh, B, T, N)
        B, T, _ = x.shape
        return encoder(x).view(B, T, nh, N).permute(2, 0, 1, 3)

    def encode_v(y):  # (nh, B, T, D) -> (nh, B, T, N)
        return torch.stack([encoders_v[h](y[h]) for h in range(nh)])

    def decode(xy):  # (nh, B, T, N) -> (B, T, D), the heads' products summed
        return decoder(xy.permute(1, 2, 0, 3).flatten(2))

    model.encode, model.encode_v, model.decode = encode, encode_v, decode
