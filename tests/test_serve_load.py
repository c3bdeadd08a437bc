"""serve.py under load, on loopback, bounded in count and time: a burst of streams beside stalled clients loses no
request (each completes with its solo text or gets a clean 503), slow clients are dropped, the server answers after."""

import http.client
import json
import socket
import threading
import time

import pytest
import torch

from checkpoints import load_model
from generation import Completion
from tests.helpers import ServeProcess
from tokenizer import get_tokenizer

BURST = 64
STALLED = 16


@pytest.fixture(scope="module")
def busy_server(tiny_runs):
    """serve.py with room for 16 generations at once and a 2-second patience, serving the tiny GPT and BDH."""
    server = ServeProcess(f"--out_dir={tiny_runs['gpt']},{tiny_runs['bdh']}", "--max_concurrent=16",
                          "--request_timeout=2", "--max_tokens_limit=50000")
    yield server
    server.close()


def solo_text(run, body):
    """The text one request gets alone: Completion, as sample.py runs it, with the request's settings."""
    model, _, meta = load_model(run)
    generator = torch.Generator().manual_seed(body["seed"])
    c = Completion(model, get_tokenizer(meta["tokenizer"], run), body["prompt"], body["max_tokens"],
                   body["temperature"], body["top_k"] or None, 1.0, generator)
    with torch.no_grad():
        return "".join(c)


def stream_or_503(port, body, results, i):
    """One streamed request; results[i] = ('text', text) or ('503', retry-after) or ('error', what went wrong)."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("POST", "/v1/completions", json.dumps({**body, "stream": True}),
                     {"Content-Type": "application/json"})
        response = conn.getresponse()
        if response.status == 503:
            error = json.loads(response.read())["error"]
            results[i] = ("503", response.headers["Retry-After"], error["message"])
        else:
            text = ""
            for line in response:
                if line.strip() == b"data: [DONE]":
                    break
                if line.startswith(b"data: "):
                    choices = json.loads(line[6:])["choices"]
                    text += choices[0]["text"] if choices else ""
            results[i] = ("text", text)
        conn.close()
    except Exception as e:  # a reset connection, a timeout: what the burst must never see
        results[i] = ("error", f"{type(e).__name__}: {e}")


def stalled_client(port, sockets):
    """A client that sends half a request and then nothing."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nContent-Type: application/json\r\nContent-Len")
    sockets.append(s)


def test_a_burst_beside_stalled_clients_loses_no_request(busy_server, tiny_runs):
    stalled = []
    for _ in range(STALLED):
        stalled_client(busy_server.port, stalled)
    bodies = [{"model": "gpt" if i % 2 else "bdh", "prompt": ["Once", "The cat", "Tom", ""][i % 4], "seed": i,
               "max_tokens": 12, "temperature": 1.0 if i % 3 else 0.0, "top_k": 20 if i % 2 else 0}
              for i in range(BURST)]
    results = [None] * BURST
    threads = [threading.Thread(target=stream_or_503, args=(busy_server.port, b, results, i))
               for i, b in enumerate(bodies)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert time.monotonic() - t0 < 120
    errors = [r for r in results if r is None or r[0] == "error"]
    assert not errors, errors  # no reset connection, no timeout
    served = [i for i, r in enumerate(results) if r[0] == "text"]
    refused = [r for r in results if r[0] == "503"]
    assert served and len(served) + len(refused) == BURST
    assert all(r[1] == "1" and "the server is busy" in r[2] for r in refused)
    for i in served[:24]:  # each stream's text is its text alone, whatever ran beside it
        assert results[i][1] == solo_text(tiny_runs[bodies[i]["model"]], bodies[i]), i
    # the stalled clients were answered 408 and let go within the patience, and the server answers afterwards
    for s in stalled:
        s.settimeout(10)
        reply = b""
        while chunk := s.recv(4096):  # the head and the body may come in separate reads: read until it closes
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 408") and b"did not arrive within 2 s" in reply, reply[:200]
        s.close()
    status, r = busy_server.request("POST", "/v1/completions", {"model": "gpt", "max_tokens": 2, "top_k": 1})
    assert status == 200 and r["usage"]["completion_tokens"] == 2


def test_a_client_that_stops_reading_its_stream_is_dropped(busy_server):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # a small window, set before connecting so the kernel advertises it (set after, loopback's autotuned window can
    # hold the whole stream): the server's writes soon block
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", busy_server.port))
    # 50,000 tokens: far more than the server's send buffer holds, and a minute or more of generating; the batch
    # generates on while the handler's write is blocked, until the handler gives up and cancels the stream
    body = json.dumps({"model": "gpt", "prompt": "Lily", "max_tokens": 50000, "stream": True, "temperature": 0.0}).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
              % (len(body), body))
    line = busy_server.wait_for("client stopped reading", timeout=90)  # never read: the server gave up on it
    assert "gpt:" in line and int(line.split("gpt: ")[1].split(" tokens")[0]) < 50000  # cancelled, not finished
    s.close()
    status, _ = busy_server.request("POST", "/v1/completions", {"model": "bdh", "max_tokens": 2})
    assert status == 200
