"""
Serve trained runs over HTTP: an OpenAI-style completions API that streams tokens as they are generated, and a web
page (serve.html) that shows the runs' continuations of one prompt side by side.

    python serve.py --out_dir=out-demo                            # http://127.0.0.1:8000
    python serve.py --out_dir=out-gpt,out-bdh --port=8080         # several runs, each loaded once

    curl -N http://127.0.0.1:8000/v1/completions -H 'Content-Type: application/json' \\
        -d '{"prompt": "Once upon a time", "max_tokens": 50, "seed": 1, "stream": true}'

- POST /v1/completions: model (a run folder's name; may be left out when one run is loaded), prompt, max_tokens,
  temperature, top_k, top_p, seed, stream (server-sent events ending with `data: [DONE]`), stream_options
  ({"include_usage": true}) and, ours, validate ('json', 'python' or the --validate check). The same seed and
  settings give sample.py's text: both run Completion.
- GET /v1/models: the runs, with model_type, parameter counts, model_args and the training iteration.
- GET /: the page.

A thread serves each connection; the streams of one model that generate at the same time advance together, one
forward pass per token for all of them (generation.Batch), each with its own cache, settings and random generator,
and each gets exactly the text it would get alone. At most --max_concurrent generations run at once: one more gets
503 with Retry-After, never a reset connection, and the listen backlog holds a burst of connections. A client that
sends its request too slowly, stops reading its stream or disconnects is dropped after --request_timeout seconds
(at its next token, for a disconnect). There is no authentication: the default host,
127.0.0.1, takes connections from this machine only. Standard library only (http.server).
"""

import errno
import json
import os
import socket
import threading
import time
import traceback
import uuid
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import torch

from checkpoints import load_model
from configurator import check_values, configure, report_errors_in_one_line
from generation import Batch, Completion, validator
from hardware import autocast, resolve_device
from quantize import check_quantize
from tokenizer import get_tokenizer

# -----------------------------------------------------------------------------
out_dir = "out"  # a run folder, or several separated by commas; a run's model id is its folder's name
checkpoint = "latest"  # 'latest' (ckpt.pt) or 'best' (best.pt) of each run, or a path (one run)
host = "127.0.0.1"  # this machine only; 0.0.0.0 takes connections from anyone on the network (no authentication)
port = 8000  # 0: any free port (printed)
max_tokens = 200  # a request's default (OpenAI's 16 is half a sentence here)
max_tokens_limit = 2048  # the most one request may ask for
validate = ""  # module:function: a check of your own that requests and the page may use, beside json and python
max_concurrent = 64  # generations at once, all models together; one more request gets 503 and Retry-After
request_timeout = 10.0  # seconds a client may take to send its request, or to take the next piece of a stream
quantize = ""  # 'int8': every run's matrices as int8 weights on a CPU (quantize.py)
device = "auto"
dtype = "auto"
# -----------------------------------------------------------------------------
MAX_BODY = 1 << 20  # bytes of a request body
UNSUPPORTED = {"n": 1, "best_of": 1, "echo": False, "logprobs": None, "stop": None, "suffix": None,
               "presence_penalty": 0, "frequency_penalty": 0, "logit_bias": None}  # OpenAI's, at their defaults
LISTEN_BACKLOG = 1024  # connections the kernel queues before accept (socketserver's default, 5, resets a burst)
RETRY_AFTER = 1  # seconds a client told 503 should wait
SEND_BUFFER = 64 * 1024  # bytes the kernel holds for a client that doesn't read: its writes then block, and the
# request timeout drops it (auto-tuned, the buffer would grow to megabytes first)


class RequestError(Exception):
    """A request that can't be served: the HTTP status (4xx: the client's to fix) and a message saying what to do."""

    def __init__(self, message, status=400, param=None, retry_after=None):
        super().__init__(message)
        self.status = status
        self.param = param
        self.retry_after = retry_after


def load_run(path):
    model, ckpt, meta = load_model(path, checkpoint, device, quantize)
    info = {"id": os.path.basename(os.path.normpath(path)), "object": "model", "owned_by": "small-lm",
            "created": int(os.path.getmtime(ckpt["path"])), "model_type": ckpt["model_type"],
            "parameters": model.num_params(), "non_embedding_parameters": model.num_params(non_embedding=True),
            "iter_num": ckpt["iter_num"], "tokenizer": meta["tokenizer"], "model_args": ckpt["model_args"],
            "checkpoint": ckpt["path"]}
    print(f"{info['id']}: {ckpt['path']} (iteration {ckpt['iter_num']}, {ckpt['model_type']}, "
          f"{info['parameters'] / 1e6:.2f}M parameters)")
    return {"model": model, "enc": get_tokenizer(meta["tokenizer"], path), "info": info,
            "block_size": getattr(model.config, "block_size", None),  # GPT's context; BDH has no limit
            "batch": Batch(model, lambda: generating(device_type, dtype))}


@contextmanager
def generating(device_type, dtype):
    """What the batch's thread runs the model under."""
    with torch.no_grad(), autocast(device_type, dtype):
        yield


def number(req, key, default, kind, ok, what):
    value = req.get(key)
    if value is None:
        return default
    allowed = (int, float) if kind is float else int
    if isinstance(value, bool) or not isinstance(value, allowed) or not ok(value):
        raise RequestError(f"{key}={json.dumps(value)} must be {what}", param=key)
    return kind(value)


def parse_request(body):
    """A completions request's settings, checked: a dict, or a RequestError saying what to fix."""
    try:
        req = json.loads(body)
    except ValueError as e:  # not JSON, or not UTF-8
        raise RequestError(f'the body is not valid JSON ({e}); send an object such as {{"prompt": "Once upon"}}')
    if not isinstance(req, dict):
        raise RequestError('the body must be a JSON object such as {"prompt": "Once upon"}')
    name = req.get("model")
    if name is None and len(runs) == 1:
        name = next(iter(runs))
    if name is None:
        raise RequestError(f"say which model: one of {', '.join(runs)}", param="model")
    if not isinstance(name, str) or name not in runs:
        raise RequestError(f"unknown model {json.dumps(name)}; this server has {', '.join(runs)}", 404, "model")
    for key, default in UNSUPPORTED.items():
        if req.get(key) not in (None, default, [], {}):
            raise RequestError(f"{key}={json.dumps(req[key])} is not supported here; leave it out", param=key)
    prompt = req.get("prompt", "")
    if isinstance(prompt, list) and len(prompt) == 1:  # a batch of one, as some clients send
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise RequestError("prompt must be a string (empty starts a new document)", param="prompt")
    stream = req.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError(f"stream={json.dumps(stream)} must be true or false", param="stream")
    options = req.get("stream_options") or {}
    if not (isinstance(options, dict) and isinstance(options.get("include_usage", False), bool)):
        raise RequestError('stream_options must look like {"include_usage": true}', param="stream_options")
    check = req.get("validate")
    if check is not None and not (isinstance(check, str) and check in validators):
        raise RequestError(f"validate={json.dumps(check)}: use one of {', '.join(validators)}", param="validate")
    return {"model": name, "prompt": prompt, "stream": stream, "validate": check,
            "include_usage": options.get("include_usage", False),
            "max_tokens": number(req, "max_tokens", max_tokens, int, lambda v: 1 <= v <= max_tokens_limit,
                                 f"a whole number from 1 to {max_tokens_limit}"),
            "temperature": number(req, "temperature", 1.0, float, lambda v: 0 <= v <= 2, "a number from 0 to 2"),
            "top_k": number(req, "top_k", 0, int, lambda v: v >= 0, "a whole number >= 0 (0: every token)"),
            "top_p": number(req, "top_p", 1.0, float, lambda v: 0 < v <= 1, "a number above 0 and at most 1"),
            "seed": number(req, "seed", None, int, lambda v: 0 <= v < 2**63, "a whole number from 0 to 2**63 - 1")}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # connections stay open between requests; streams are sent in chunks

    def setup(self):
        self.timeout = request_timeout  # each read and write of this connection: a stalled client gives up its thread
        self.request.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        super().setup()

    def parse_request(self):
        try:
            return super().parse_request()  # reads the headers
        except TimeoutError:  # they did not come in time (a request line that doesn't: http.server closes quietly)
            self.close_connection = True
            self.try_send_error(RequestError(f"the request's headers did not arrive within {request_timeout:g} s; "
                                             "send the request whole", 408))
            return False

    def do_GET(self):
        path = urlsplit(self.path).path
        if path == "/":
            self.send_body(200, page, "text/html; charset=utf-8")
        elif path == "/v1/models":
            self.send_json(200, {"object": "list", "data": [run["info"] for run in runs.values()],
                                 "validators": list(validators)})
        elif path == "/v1/completions":
            self.send_error_json(RequestError("use POST /v1/completions", 405))
        else:
            self.send_error_json(RequestError(f"no page {path}; try / or GET /v1/models", 404))

    def do_POST(self):
        self.streaming = False
        try:
            if urlsplit(self.path).path != "/v1/completions":
                raise RequestError(f"no endpoint POST {urlsplit(self.path).path}; use POST /v1/completions", 404)
            req = parse_request(self.read_body())
            if not admission.acquire(blocking=False):
                raise RequestError(f"the server is busy: {max_concurrent} generations are running; retry in "
                                   f"{RETRY_AFTER} s", 503, retry_after=RETRY_AFTER)
            try:
                self.complete(req)
            finally:
                admission.release()
        except RequestError as e:
            self.send_error_json(e)
        except TimeoutError:  # the body did not come in time, or the client stopped reading its stream
            self.close_connection = True
            if not self.streaming:
                self.try_send_error(RequestError(f"the request's body did not arrive within {request_timeout:g} s",
                                                 408))
        except Exception as e:  # a bug, or out of memory: this request fails, the server goes on
            traceback.print_exc()
            self.close_connection = True
            if not self.streaming:
                self.send_error_json(RequestError(f"{type(e).__name__}: {e}", 500))

    def read_body(self):
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            self.close_connection = True  # a body we don't read would be taken for the next request
            raise RequestError("send the body with a Content-Length header", 411)
        if int(length) > MAX_BODY:
            self.close_connection = True
            raise RequestError(f"the body is {int(length):,} bytes, more than the {MAX_BODY:,} this server reads", 413)
        return self.rfile.read(int(length))

    def complete(self, req):
        run = runs[req["model"]]
        generator = torch.Generator(device=device)
        if req["seed"] is None:
            generator.seed()  # a fresh random seed
        else:
            generator.manual_seed(req["seed"])
        completion = Completion(run["model"], run["enc"], req["prompt"], req["max_tokens"], req["temperature"],
                                req["top_k"] or None, req["top_p"], generator)
        n_prompt = len(completion.prompt_tokens)
        if run["block_size"] and n_prompt > run["block_size"]:
            raise RequestError(f"the prompt is {n_prompt} tokens, but {req['model']} reads at most {run['block_size']} "
                               "(its block_size): shorten it", param="prompt")
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": req["model"]}
        t0 = time.perf_counter()
        stream = run["batch"].submit(completion)
        try:
            if req["stream"]:
                self.start_events()
                self.generate(stream, lambda piece: self.send_event({**head, "choices": [choice(piece)]}))
                end = choice("", completion.finish_reason, check_sample(req, completion))
                self.send_event({**head, "choices": [end]})
                if req["include_usage"]:
                    self.send_event({**head, "choices": [], "usage": usage(completion)})
                self.send_event("[DONE]")
                self.wfile.write(b"0\r\n\r\n")  # the last chunk
            else:
                self.generate(stream, lambda piece: None)
                whole = choice(completion.text, completion.finish_reason, check_sample(req, completion))
                self.send_json(200, {**head, "choices": [whole], "usage": usage(completion)})
            outcome = completion.finish_reason
        except (ConnectionError, TimeoutError) as e:  # the client went away, or stopped reading: drop its generation
            stream.cancel()
            self.close_connection = True
            outcome = "client went away" if isinstance(e, ConnectionError) else "client stopped reading"
        seconds = time.perf_counter() - t0
        print(f"{req['model']}: {len(completion.tokens)} tokens in {seconds:.2f} s "
              f"({len(completion.tokens) / seconds:.1f} tokens/s), {outcome}", flush=True)

    def generate(self, stream, send):
        """Send the stream's pieces of text as the batch makes them; a client that closed its end stops it."""
        while True:
            if self.client_gone():
                raise ConnectionAbortedError("the client closed the connection")
            piece = stream.read()
            if piece is None:
                return
            send(piece)

    def client_gone(self):
        """True once the client has closed its end: its socket reads as end-of-file (pipelined data is not)."""
        timeout = self.connection.gettimeout()
        self.connection.settimeout(0)
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:  # nothing to read: still there
            return False
        except OSError:  # reset
            return True
        finally:
            self.connection.settimeout(timeout)

    def start_events(self):
        self.streaming = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def send_event(self, data):
        event = f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))  # one chunk per event

    def send_body(self, status, body, content_type, headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")  # the client must not send its next request on this one
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status, obj, headers=()):
        self.send_body(status, json.dumps(obj).encode(), "application/json", headers)

    def send_error_json(self, e):
        kind = "invalid_request_error" if e.status < 500 else "server_error"
        headers = [("Retry-After", str(e.retry_after))] if e.retry_after else []
        self.send_json(e.status, {"error": {"message": str(e), "type": kind, "param": e.param, "code": None}}, headers)

    def try_send_error(self, e):
        """An error for a client that may be gone already."""
        try:
            self.send_error_json(e)
        except OSError:
            pass


def choice(text, finish_reason=None, validation=None):
    """A choice of OpenAI's completion object: a piece of a stream, or the end with its finish_reason."""
    out = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}
    return {**out, "validation": validation} if validation else out


def check_sample(req, completion):
    """The validate check of the sample as sample.py checks it: the prompt and its continuation."""
    if not req["validate"]:
        return None
    reason = validators[req["validate"]](req["prompt"] + completion.text)
    return {"check": req["validate"], "passed": reason is None, "reason": reason}


def usage(completion):
    prompt, new = len(completion.prompt_tokens), len(completion.tokens)
    return {"prompt_tokens": prompt, "completion_tokens": new, "total_tokens": prompt + new}


class Server(ThreadingHTTPServer):
    daemon_threads = True  # Ctrl-C doesn't wait for open connections
    request_queue_size = LISTEN_BACKLOG


def listen(host, port):
    """Bind before loading the models, so a busy port is reported at once."""
    Server.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return Server((host, port), Handler)
    except OSError as e:
        if e.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", None)):
            raise OSError(f"port {port} on {host} is in use; choose another --port (0: any free one)") from None
        raise OSError(f"can't listen on --host={host} --port={port} ({e.strerror or e})") from None


if __name__ == "__main__":
    report_errors_in_one_line()
    check_values(configure(globals()), positive=("max_tokens", "max_tokens_limit", "max_concurrent", "request_timeout"))
    if not 0 <= port <= 65535:
        raise ValueError(f"--port={port} must be a whole number from 0 to 65535 (0: any free port)")
    if not host:
        raise ValueError("--host='' would listen on every network interface: say --host=0.0.0.0 if you mean it")
    if max_tokens > max_tokens_limit:
        raise ValueError(f"--max_tokens={max_tokens} is above --max_tokens_limit={max_tokens_limit}")
    paths = [p for p in out_dir.split(",") if p]
    names = [os.path.basename(os.path.normpath(p)) for p in paths]
    if not paths:
        raise ValueError("--out_dir names no run; give a run folder, or several separated by commas")
    if len(set(names)) < len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"--out_dir names two runs called {twice!r}: a model's id is its folder's name, so rename one")
    if len(paths) > 1 and checkpoint not in ("latest", "best"):
        raise ValueError(f"--checkpoint={checkpoint} is one file, but --out_dir names {len(paths)} runs")
    device = check_quantize(quantize, device, dtype)
    validators = {"json": validator("json"), "python": validator("python")}
    if validate:
        validators[validate] = validator(validate)
    admission = threading.BoundedSemaphore(max_concurrent)
    server = listen(host, port)
    device, device_type, dtype, _ = resolve_device(device, dtype, compile=False)
    runs = {name: load_run(path) for name, path in zip(names, paths)}
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "serve.html"), "rb") as f:
        page = f.read()
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: --host={host}: anyone who can reach this machine can use its models (no authentication)")
    try:
        print(f"serving {', '.join(runs)} at http://{host}:{server.server_port} (Ctrl-C stops)", flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
