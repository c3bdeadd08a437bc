"""The README's notebook usage (Kaggle, Colab, Jupyter) in a real IPython kernel: `%run train.py`, train.py pasted
into a cell with edited defaults, `!python sample.py`, resume, and interrupting the kernel during training.
One kernel runs every cell, as in a notebook: torch is imported once."""

import ast
import json
import os
import queue
import re
import shlex
import sys
import time

import pytest
import torch

from tests.helpers import REPO, TINY_MODEL, read_log

SKIP = "the notebook test needs nbclient, nbformat and ipykernel (pip install -r requirements-test.txt)"
nbformat = pytest.importorskip("nbformat", reason=SKIP)
nbclient = pytest.importorskip("nbclient", reason=SKIP)
pytest.importorskip("ipykernel", reason=SKIP)
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402 (after the skips: nbclient brings it)
from jupyter_client.manager import AsyncKernelManager  # noqa: E402
from jupyter_core.utils import ensure_async, run_sync  # noqa: E402

CELL_TIMEOUT = 120  # seconds per cell; each one takes a few seconds, so a hang fails instead of blocking CI


class Notebook:
    """A notebook whose cells run one at a time in one kernel, as a user runs them; each returns its output text."""

    def __init__(self, client):
        self.client = client
        self.nb = client.nb

    def run(self, source):
        """Run a cell to its end; a cell that raises fails the test with the kernel's traceback."""
        cell = nbformat.v4.new_code_cell(source)
        self.nb.cells.append(cell)
        self.client.execute_cell(cell, len(self.nb.cells) - 1)
        return output_text(cell.outputs)

    def run_and_interrupt(self, source, when, timeout=CELL_TIMEOUT):
        """Start a cell, interrupt the kernel (as the notebook's stop button does) once when(output so far) is true,
        and wait for the cell to end. Returns (output text, the execute reply's content, interrupted)."""
        self.nb.cells.append(nbformat.v4.new_code_cell(source))
        return run_sync(self._run_and_interrupt)(source, when, timeout)

    async def _run_and_interrupt(self, source, when, timeout):
        kc, km = self.client.kc, self.client.km
        msg_id = await ensure_async(kc.execute(source))
        deadline = time.monotonic() + timeout
        text, interrupted = "", False
        while True:  # the cell's output, up to the kernel's idle status for it
            if time.monotonic() > deadline:
                raise AssertionError(f"the cell did not end in {timeout} s (interrupted: {interrupted}):\n"
                                     f"{text[-3000:]}")
            try:
                msg = await ensure_async(kc.get_iopub_msg(timeout=0.5))
            except queue.Empty:
                assert await ensure_async(km.is_alive()), f"the kernel died:\n{text[-3000:]}"
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            text += output_text([{"output_type": msg["msg_type"], **msg["content"]}])
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
            if not interrupted and when(text):
                await ensure_async(km.interrupt_kernel())
                interrupted = True
        while True:
            reply = await ensure_async(kc.get_shell_msg(timeout=max(1.0, deadline - time.monotonic())))
            if reply["parent_header"].get("msg_id") == msg_id:
                return text, reply["content"], interrupted


def output_text(outputs):
    """A cell's printed text: its streams (stdout, stderr, `!` commands) and any traceback."""
    parts = []
    for out in outputs:
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif out["output_type"] == "error":
            parts.append("\n".join(out["traceback"]))
    return "".join(parts)


@pytest.fixture
def notebook(tmp_path):
    """A real IPython kernel running this interpreter (the venv's python, with torch), in the repo root."""
    spec_dir = tmp_path / "kernels" / "small-lm-test"
    spec_dir.mkdir(parents=True)
    # a kernelspec of our own: a `python3` spec elsewhere (~/.local/share/jupyter) may name another python
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "small-lm test", "language": "python", "interrupt_mode": "signal"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    km = AsyncKernelManager(kernel_name="small-lm-test",
                            kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")]))
    # `!python` in a cell finds this interpreter first, as in a notebook whose kernel has the packages installed
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
           "IPYTHONDIR": str(tmp_path / "ipython"), "PYTHONHASHSEED": "0"}
    client = nbclient.NotebookClient(nbformat.v4.new_notebook(), km=km, timeout=CELL_TIMEOUT, startup_timeout=60,
                                     shutdown_kernel="immediate")
    with client.setup_kernel(cwd=REPO, env=env, cleanup_kc=True):  # shut the kernel down after the test
        yield Notebook(client)


def tiny_flags(dataset, out_dir, *extra):
    return " ".join(shlex.quote(a) for a in [f"--dataset={dataset}", f"--out_dir={out_dir}", *TINY_MODEL, *extra])


def ckpt_iter(out_dir):
    return torch.load(os.path.join(out_dir, "ckpt.pt"), weights_only=True)["iter_num"]


def logged_iters(out_dir):
    return [int(r["iter"]) for r in read_log(out_dir) if r["loss"]]


def test_readme_notebook_cells_in_a_real_kernel(notebook, tiny_dataset, tmp_path):
    # the kernel: this python, in the repo root, with the kernel's own Ctrl-C handler while a cell runs
    probe = ("import os, signal, sys\n"
             "print(sys.executable, os.getcwd(), os.getpid(), signal.getsignal(signal.SIGINT), sep='|')")
    executable, cwd, pid, kernel_handler = notebook.run(probe).split("|")
    assert os.path.realpath(executable) == os.path.realpath(sys.executable)
    assert os.path.realpath(cwd) == os.path.realpath(REPO)
    assert "request_stop" not in kernel_handler, kernel_handler

    # 1. `%run train.py <config> --key=value ...`
    a = tmp_path / "a"
    out = notebook.run(f"%run train.py config/train_demo_cpu.py {tiny_flags(tiny_dataset, a)} "
                       "--max_iters=4 --eval_interval=2 --log_interval=1")
    assert "Traceback" not in out and "done: 4 iterations" in out, out
    assert ckpt_iter(a) == 4
    assert logged_iters(a) == [1, 2, 3, 4]
    assert notebook.run(probe).split("|")[3] == kernel_handler  # the kernel's Ctrl-C is back

    # 2. train.py's text pasted into a cell, its defaults edited there; the kernel's `-f kernel.json` is ignored
    b = tmp_path / "b"
    edits = {"out_dir": str(b), "dataset": tiny_dataset, "max_iters": "3", "log_interval": "1", "eval_interval": "3"}
    edits.update(flag[2:].split("=", 1) for flag in TINY_MODEL)
    source = open(os.path.join(REPO, "train.py")).read()
    for key, value in edits.items():
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass  # a string: cpu, float32, a path
        source, n = re.subn(rf"^{key} = .*$", f"{key} = {value!r}", source, count=1, flags=re.M)
        assert n == 1, f"train.py has no default line `{key} = ...` to edit: update this test's edits"
    out = notebook.run(source)
    assert "Traceback" not in out and "override" not in out and "done: 3 iterations" in out, out
    extra = sorted(set(json.load(open(b / "config.json"))) - set(json.load(open(a / "config.json"))))
    assert not extra, f"train.py pasted into a cell took the notebook's own variables for config keys: {extra}"
    ckpt = torch.load(b / "ckpt.pt", weights_only=True)  # as sample.py and --init_from=resume load it
    assert ckpt["iter_num"] == 3
    assert ckpt["model_args"]["n_embd"] == 32 and ckpt["model_args"]["n_layer"] == 2  # the edited defaults
    assert logged_iters(b) == [1, 2, 3]

    # 3. `!python sample.py` from the first run's checkpoint
    out = notebook.run(f"!python sample.py --out_dir={shlex.quote(str(a))} --max_new_tokens=20 --num_samples=1 "
                       "--device=cpu")
    assert "---------------" in out and "Traceback" not in out and "iteration 4" in out, out

    # 4. resume the first run with more iterations
    out = notebook.run(f"%run train.py config/train_demo_cpu.py {tiny_flags(tiny_dataset, a)} "
                       "--max_iters=6 --eval_interval=2 --log_interval=1 --init_from=resume")
    assert "resuming from" in out and "at iteration 4" in out and "done: 6 iterations" in out, out
    assert ckpt_iter(a) == 6
    assert logged_iters(a) == [1, 2, 3, 4, 5, 6]

    # 5. interrupt the kernel during a long run: train.py saves ckpt.pt, stops, and the kernel lives on
    c = tmp_path / "c"
    run_c = f"%run train.py {tiny_flags(tiny_dataset, c)} --log_interval=1 --eval_interval=100000 --warmup_iters=1"
    out, reply, interrupted = notebook.run_and_interrupt(f"{run_c} --max_iters=100000",
                                                         when=lambda text: re.search(r"^iter \d+/", text, re.M))
    assert interrupted, out
    assert reply["status"] == "ok" and "Traceback" not in out, out  # no KeyboardInterrupt: a clean stop
    assert "stopped by SIGINT" in out, out
    stopped_at = ckpt_iter(c)  # saved by the interrupt: a run that evaluates only at 0 saves nothing else
    assert stopped_at > 0
    assert logged_iters(c)[-1] == stopped_at
    assert f"stopped by SIGINT: {stopped_at} iterations" in out, out
    assert not (c / "best.pt").exists()

    # the same kernel (not a restarted one), with its own Ctrl-C handler back
    assert run_sync(ensure_async)(notebook.client.km.is_alive())
    assert notebook.run(probe).split("|")[2:] == [pid, kernel_handler]
    # and the next interrupt stops a cell as usual
    out, reply, interrupted = notebook.run_and_interrupt("import time\nprint('sleeping', flush=True)\ntime.sleep(60)",
                                                         when=lambda text: "sleeping" in text, timeout=30)
    assert interrupted and reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt", (reply, out)

    # a cell that resumes from the interrupted run's checkpoint
    out = notebook.run(f"{run_c} --max_iters={stopped_at + 2} --init_from=resume")
    assert f"at iteration {stopped_at}" in out and f"done: {stopped_at + 2} iterations" in out, out
    assert ckpt_iter(c) == stopped_at + 2
    assert logged_iters(c)[-2:] == [stopped_at + 1, stopped_at + 2]
