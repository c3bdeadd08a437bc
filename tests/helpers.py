"""What the test modules share: paths, the tiny model's flags, and running a script as a user would."""

import http.client
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(REPO, "..", "shared", "data")  # offline test data beside a checkout, absent in a clone
# a model small enough that a training iteration takes milliseconds on a laptop CPU
TINY_MODEL = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=4", "--eval_iters=2",
              "--device=cpu", "--dtype=float32", "--compile=False"]
# tiny models on a busy CPU: a second thread costs more than it gives (threads that wait for each other's turn)
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


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


# A process that has imported torch once and forks a child per script run: the child runs the script as
# `python script.py args` would (runpy as __main__; an uncaught exception goes through sys.excepthook, exit status 1),
# in ~0.3 s instead of the 2-3 s torch's import takes on CI's 2 cores. Its results equal a real process's
# (tests/test_bad_inputs.py checks that on a sample of cases).
FORK_SERVER = r"""
import json, os, runpy, signal, sys
import numpy, torch  # the slow imports, once, before any fork; nothing here runs a torch op (threads stay unstarted)
repo = sys.argv[1]
sys.path.insert(0, repo)

def run(script):
    try:
        runpy.run_path(script, run_name="__main__")
        return 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except BaseException:
        sys.excepthook(*sys.exc_info())
        return 1

for line in sys.stdin:
    case = json.loads(line)
    pid = os.fork()
    if pid == 0:
        for fd, path in ((0, os.devnull), (1, case["stdout"]), (2, case["stderr"])):
            os.dup2(os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC if fd else os.O_RDONLY), fd)
        sys.stdin = open(os.devnull)
        signal.alarm(120)  # a run that hangs is killed (and fails its test) instead of blocking the suite
        sys.argv = [case["script"], *case["args"]]
        code = run(os.path.join(repo, case["script"]))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status), flush=True)
"""


class ForkServer:
    """run(script, *args) -> CompletedProcess, like run_script(..., check=False), from a forked child."""

    def __init__(self, workdir, env=None):
        self.workdir = workdir
        self.proc = subprocess.Popen([sys.executable, "-c", FORK_SERVER, REPO], cwd=REPO, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)

    def run(self, script, *args):
        out, err = os.path.join(self.workdir, "stdout"), os.path.join(self.workdir, "stderr")
        self.proc.stdin.write(json.dumps({"script": script, "args": [str(a) for a in args], "stdout": out,
                                          "stderr": err}) + "\n")
        self.proc.stdin.flush()
        code = int(self.proc.stdout.readline())
        return subprocess.CompletedProcess([script, *args], code, open(out).read(), open(err).read())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def train_gpt_and_bdh(dataset, folder):
    """Two tiny byte-level runs of dataset, folder/gpt and folder/bdh: what the tests of serve.py serve side by
    side. 60 iterations teach the GPT to end its stories with end-of-text; 10 leave BDH rambling on."""
    forks = ForkServer(str(folder), env=ONE_THREAD)
    for name, iters, args in (("gpt", 60, ["--learning_rate=1e-2"]),
                              ("bdh", 10, ["--model=bdh", "--mlp_internal_dim_multiplier=4"])):
        proc = forks.run("train.py", f"--dataset={dataset}", f"--out_dir={os.path.join(folder, name)}", *TINY_MODEL,
                         f"--max_iters={iters}", f"--eval_interval={iters}", *args)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    forks.close()
    return os.path.join(folder, "gpt"), os.path.join(folder, "bdh")


class ServeProcess:
    """serve.py in its own process on a free port (--port=0); its output lines collected as they come."""

    def __init__(self, *args, cwd=REPO):
        self.proc = subprocess.Popen([sys.executable, os.path.join(REPO, "serve.py"), "--port=0", "--device=cpu",
                                      "--dtype=float32", *args], cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=ONE_THREAD)
        self.lines = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(line) for line in self.proc.stdout], daemon=True).start()
        self.port = int(re.search(r"at http://127\.0\.0\.1:(\d+) ", self.wait_for("serving ")).group(1))

    def wait_for(self, text, timeout=120):
        """The next line of its output that holds text."""
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            if text in line:
                return line
            seen.append(line)
        raise AssertionError(f"serve.py printed no line with {text!r}:\n{''.join(seen)[-3000:]}")

    def request(self, method, path, body=None, timeout=60):
        """(status, parsed JSON body) of one request; a dict body is sent as JSON."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        conn.request(method, path, json.dumps(body) if isinstance(body, dict) else body,
                     {"Content-Type": "application/json"})
        response = conn.getresponse()
        status, data = response.status, json.loads(response.read())
        conn.close()
        return status, data

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
