"""serve.py through a real HTTP client: streams equal sample.py's text for the same seed, concurrent streams don't mix,
bad requests get a 4xx saying what to fix, a client that goes away stops its generation. And sample.py --validate,
which checks samples as the server's validate field does."""

import http.client
import json
import socket
import threading
import time

import pytest
import torch

from checkpoints import load_model
from generation import Completion
from tests.helpers import ONE_THREAD, ForkServer, ServeProcess, run_script
from tokenizer import ByteTokenizer


@pytest.fixture(scope="module")
def forks(tmp_path_factory):
    forks = ForkServer(str(tmp_path_factory.mktemp("forks")), env=ONE_THREAD)
    yield forks
    forks.close()


@pytest.fixture(scope="module")
def long_seeds(tiny_server):
    """Seeds with which the (barely trained) BDH continues "Lily" for 150 tokens or more before end-of-text."""
    body = {"model": "bdh", "prompt": "Lily", "max_tokens": 150}
    lengths = {}
    for seed in range(12):
        _, r = tiny_server.request("POST", "/v1/completions", {**body, "seed": seed})
        lengths[seed] = r["usage"]["completion_tokens"]
    seeds = [seed for seed, n in lengths.items() if n == 150]
    assert len(seeds) >= 2, lengths
    return seeds


def stream(port, body, events=None, started=None):
    """Stream a completion; returns its chunks (the JSON of each `data:` line before [DONE]), appends
    (arrival time, text) for each to events, and sets the event started at the first."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/v1/completions", json.dumps({**body, "stream": True}), {"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200 and response.headers["Content-Type"] == "text/event-stream", response.read()
    chunks = []
    for line in response:
        if line.startswith(b"data: "):
            if line.strip() == b"data: [DONE]":
                break
            chunks.append(json.loads(line[6:]))
            if events is not None and chunks[-1]["choices"]:
                events.append((time.monotonic(), chunks[-1]["choices"][0]["text"]))
            if started:
                started.set()
    conn.close()
    return chunks


def sample_py(forks, out_dir, settings):
    """The text sample.py prints for one sample (prompt and continuation) with a request's settings, and its count
    of tokens."""
    names = {"prompt": "start", "max_tokens": "max_new_tokens"}
    proc = forks.run("sample.py", f"--out_dir={out_dir}", "--device=cpu", "--dtype=float32", "--num_samples=1",
                     *[f"--{names.get(k, k)}={v}" for k, v in settings.items()])
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.split("parameters)\n", 1)[1].rsplit("\n---------------\n", 1)[0]
    return text, int(proc.stderr.split("(")[-1].split(" tokens")[0])


# -----------------------------------------------------------------------------
# the API


def test_models_lists_the_runs_with_their_parameters_and_iteration(tiny_server, tiny_runs):
    status, models = tiny_server.request("GET", "/v1/models")
    assert status == 200 and models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["gpt", "bdh"]  # the run folders' names
    for m in models["data"]:
        model, ckpt, _ = load_model(tiny_runs[m["id"]])
        assert m["model_type"] == m["id"] and m["iter_num"] == ckpt["iter_num"] == (60 if m["id"] == "gpt" else 10)
        assert m["parameters"] == model.num_params() and m["model_args"] == ckpt["model_args"]
    assert models["validators"] == ["json", "python", "checks:short"]


@pytest.mark.parametrize("model", ["gpt", "bdh"])
def test_a_streamed_completion_is_sample_py_s_text_for_the_same_seed(model, tiny_server, tiny_runs, forks):
    settings = {"prompt": "The cat", "seed": 7, "max_tokens": 60, "temperature": 0.8, "top_k": 200, "top_p": 0.9}
    chunks = stream(tiny_server.port, {"model": model, **settings, "stream_options": {"include_usage": True}})
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    expected, n_tokens = sample_py(forks, tiny_runs[model], settings)
    assert settings["prompt"] + text == expected
    assert len(chunks) > 10  # token by token, not all at the end
    assert chunks[-1]["usage"] == {"prompt_tokens": 7, "completion_tokens": n_tokens, "total_tokens": 7 + n_tokens}
    assert chunks[-2]["choices"][0]["finish_reason"] == ("length" if n_tokens == 60 else "stop")
    assert {c["id"] for c in chunks} == {chunks[0]["id"]} and chunks[0]["object"] == "text_completion"
    status, whole = tiny_server.request("POST", "/v1/completions", {"model": model, **settings})  # not streamed
    assert status == 200 and whole["choices"][0]["text"] == text
    assert whole["usage"] == chunks[-1]["usage"] and whole["object"] == "text_completion"


def test_finish_reason_is_length_at_max_tokens_and_stop_at_end_of_text(tiny_server):
    ends = []
    for seed in range(10):
        _, r = tiny_server.request("POST", "/v1/completions", {"model": "gpt", "prompt": "Tom", "max_tokens": 40,
                                                          "seed": seed})
        ends.append((r["choices"][0]["finish_reason"], r["usage"]["completion_tokens"], r["choices"][0]["text"]))
    assert {reason for reason, _, _ in ends} == {"stop", "length"}, ends  # the GPT ends some stories that soon
    for reason, n, text in ends:
        assert (reason == "stop") == (n < 40) and "<|endoftext|>" not in text


def test_two_concurrent_streams_take_turns_and_do_not_mix(tiny_server, long_seeds):
    requests = [{"model": "bdh", "prompt": "Lily", "seed": seed, "max_tokens": 150} for seed in long_seeds[:2]]
    alone = [tiny_server.request("POST", "/v1/completions", r)[1]["choices"][0]["text"] for r in requests]
    assert alone[0] != alone[1]
    events, first_arrived = [[], []], threading.Event()
    threads = [threading.Thread(target=stream, args=(tiny_server.port, requests[0], events[0], first_arrived)),
               threading.Thread(target=stream, args=(tiny_server.port, requests[1], events[1]))]
    threads[0].start()
    first_arrived.wait(timeout=60)  # the second starts while the first streams
    threads[1].start()
    for t in threads:
        t.join(timeout=120)
    for text, e in zip(alone, events):
        assert "".join(piece for _, piece in e) == text  # each its own tokens, in order
    # the second's first token came before the first's last: a lock held for a whole request would fail this
    assert events[1][0][0] < events[0][-1][0]


def test_a_client_that_disconnects_mid_stream_stops_its_generation(tiny_server, long_seeds):
    body = {"model": "bdh", "prompt": "Lily", "seed": long_seeds[0], "max_tokens": 2048}
    whole = tiny_server.request("POST", "/v1/completions", body)[1]["usage"]["completion_tokens"]  # 150 or more
    conn = http.client.HTTPConnection("127.0.0.1", tiny_server.port, timeout=60)
    conn.request("POST", "/v1/completions", json.dumps({**body, "stream": True}))
    response = conn.getresponse()
    assert response.readline().startswith(b"data: {")  # generation has begun
    response.close()  # the response holds the socket open too
    conn.close()
    line = tiny_server.wait_for("client went away", timeout=60)
    assert int(line.split("bdh: ")[1].split(" tokens")[0]) < whole  # it stopped before the end it would have reached
    # greedy (top_k 1): a random draw could end the story early, and the count checked here with it
    status, r = tiny_server.request("POST", "/v1/completions", {"model": "bdh", "max_tokens": 3, "top_k": 1},
                                    timeout=10)
    assert status == 200 and r["usage"]["completion_tokens"] == 3  # the server goes on


def test_validate_checks_prompt_and_continuation(tiny_server, long_seeds):
    short = {"model": "bdh", "prompt": "Lily", "max_tokens": 5, "seed": long_seeds[0], "validate": "checks:short"}
    status, r = tiny_server.request("POST", "/v1/completions", short)
    assert status == 200 and r["choices"][0]["validation"] == {"check": "checks:short", "passed": True, "reason": None}
    _, r = tiny_server.request("POST", "/v1/completions", {**short, "max_tokens": 40})  # 44 characters
    assert r["choices"][0]["validation"] == {"check": "checks:short", "passed": False,
                                             "reason": "checks:short returned False"}
    for seed in range(3):
        chunks = stream(tiny_server.port, {**short, "prompt": "[1, 2]", "validate": "json", "max_tokens": 1,
                                           "seed": seed})
        text = "".join(c["choices"][0]["text"] for c in chunks)
        try:
            json.loads("[1, 2]" + text)
            assert chunks[-1]["choices"][0]["validation"] == {"check": "json", "passed": True, "reason": None}
        except json.JSONDecodeError as e:
            assert chunks[-1]["choices"][0]["validation"] == {"check": "json", "passed": False,
                                                              "reason": f"JSONDecodeError: {e}"}


LONG_PROMPT = "The cat sat on the mat. Tom likes his ball."  # 43 byte tokens, the tiny GPT's block_size is 32
BAD_REQUESTS = [  # (method, path, body, status, what the error message says)
    ("POST", "/v1/completions", {"model": "gtp"}, 404, 'unknown model "gtp"; this server has gpt, bdh'),
    ("POST", "/v1/completions", {"prompt": "Tom"}, 400, "say which model: one of gpt, bdh"),
    ("POST", "/v1/completions", b'{"model": "gpt", "prompt": ', 400, "the body is not valid JSON (Expecting value"),
    ("POST", "/v1/completions", b"\xff\xfe", 400, "the body is not valid JSON"),
    ("POST", "/v1/completions", b'["gpt"]', 400, "the body must be a JSON object"),
    ("POST", "/v1/completions", {"model": "gpt", "max_tokens": 0}, 400, "max_tokens=0 must be a whole number from 1"),
    ("POST", "/v1/completions", {"model": "gpt", "max_tokens": 5000}, 400, "max_tokens=5000 must be a whole number"),
    ("POST", "/v1/completions", {"model": "gpt", "max_tokens": 10.5}, 400, "max_tokens=10.5 must be a whole number"),
    ("POST", "/v1/completions", {"model": "gpt", "max_tokens": "10"}, 400, 'max_tokens="10" must be a whole number'),
    ("POST", "/v1/completions", {"model": "gpt", "temperature": -1}, 400, "temperature=-1 must be a number from 0"),
    ("POST", "/v1/completions", {"model": "gpt", "temperature": 2.5}, 400, "temperature=2.5 must be a number"),
    ("POST", "/v1/completions", {"model": "gpt", "top_k": -1}, 400, "top_k=-1 must be a whole number >= 0"),
    ("POST", "/v1/completions", {"model": "gpt", "top_p": 0}, 400, "top_p=0 must be a number above 0 and at most 1"),
    ("POST", "/v1/completions", {"model": "gpt", "top_p": 1.5}, 400, "top_p=1.5 must be a number above 0"),
    ("POST", "/v1/completions", {"model": "gpt", "seed": -1}, 400, "seed=-1 must be a whole number from 0"),
    ("POST", "/v1/completions", {"model": "gpt", "seed": True}, 400, "seed=true must be a whole number"),
    ("POST", "/v1/completions", {"model": "gpt", "stream": "yes"}, 400, 'stream="yes" must be true or false'),
    ("POST", "/v1/completions", {"model": "gpt", "stream_options": 1}, 400, "stream_options must look like"),
    ("POST", "/v1/completions", {"model": "gpt", "prompt": 42}, 400, "prompt must be a string"),
    ("POST", "/v1/completions", {"model": "gpt", "prompt": LONG_PROMPT}, 400,
     "the prompt is 43 tokens, but gpt reads at most 32 (its block_size): shorten it"),
    ("POST", "/v1/completions", {"model": "gpt", "n": 2}, 400, "n=2 is not supported here"),
    ("POST", "/v1/completions", {"model": "gpt", "validate": "xml"}, 400,
     'validate="xml": use one of json, python, checks:short'),
    ("GET", "/v1/completions", None, 405, "use POST /v1/completions"),
    ("POST", "/v1/chat/completions", {"model": "gpt"}, 404, "no endpoint POST /v1/chat/completions"),
    ("GET", "/nope", None, 404, "no page /nope"),
]


@pytest.mark.parametrize("method, path, body, status, message", BAD_REQUESTS,
                         ids=[f"{i}-{case[-1][:30]}" for i, case in enumerate(BAD_REQUESTS)])
def test_a_bad_request_gets_a_4xx_and_a_json_error_saying_what_to_fix(method, path, body, status, message,
                                                                     tiny_server):
    got, data = tiny_server.request(method, path, body)
    assert got == status, data
    assert message in data["error"]["message"], data
    assert data["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("header, status, message", [
    ("", 411, "send the body with a Content-Length header"),
    ("Content-Length: 2000000\r\n", 413, "the body is 2,000,000 bytes, more than the 1,048,576 this server reads"),
])
def test_a_body_of_unknown_or_excessive_length_is_refused_unread(header, status, message, tiny_server):
    with socket.create_connection(("127.0.0.1", tiny_server.port), timeout=30) as sock:
        sock.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\n{header}\r\n".encode())
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == status
        assert json.loads(response.read())["error"]["message"] == message
        assert response.getheader("Connection") == "close"  # what the client sends next is not a request


def test_a_prompt_too_long_for_the_gpt_is_fine_for_bdh(tiny_server):
    status, r = tiny_server.request("POST", "/v1/completions", {"model": "bdh", "prompt": LONG_PROMPT,
                                                                "max_tokens": 3})
    assert status == 200 and r["usage"]["prompt_tokens"] == len(LONG_PROMPT) == 43


def test_one_run_needs_no_model_name(tiny_runs):
    server = ServeProcess(f"--out_dir={tiny_runs['gpt']}")
    try:
        # greedy (top_k 1): with a random seed the tiny GPT sometimes ended the story after 2 tokens
        status, r = server.request("POST", "/v1/completions", {"prompt": "Tom", "max_tokens": 4, "top_k": 1})
        assert status == 200 and r["model"] == "gpt" and r["usage"]["completion_tokens"] == 4
    finally:
        server.close()


# -----------------------------------------------------------------------------
# the generation loop sample.py and serve.py share, and sample.py --validate


class ScriptedModel(torch.nn.Module):
    """generate_stream yields the token ids it was given, whatever the prompt."""

    def __init__(self, ids):
        super().__init__()
        self.ids = ids
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def generate_stream(self, idx, max_new_tokens, *settings):
        for i in self.ids[:max_new_tokens]:
            yield torch.tensor([[i]])


@pytest.mark.parametrize("ids, max_new_tokens, pieces, finish_reason", [
    ([84, 0xC3, 0xA9, 33, 256, 65], 10, ["T", "\u00e9", "!"], "stop"),  # é's two bytes arrive as one piece
    ([84, 0xC3], 2, ["T", "\ufffd"], "length"),  # cut inside a character: what is left, replaced
    ([256], 5, [], "stop"),
])
def test_completion_holds_back_a_split_character_and_stops_at_end_of_text(ids, max_new_tokens, pieces,
                                                                         finish_reason):
    completion = Completion(ScriptedModel(ids), ByteTokenizer(), "x", max_new_tokens)
    assert list(completion) == pieces
    assert completion.finish_reason == finish_reason and completion.text == "".join(pieces)
    assert 256 not in completion.tokens


def printed_samples(stdout):
    """sample.py's samples, and what follows the last one."""
    parts = stdout.split("parameters)\n", 1)[1].split("\n---------------\n")
    return parts[:-1], parts[-1]


def test_sample_validate_reports_the_share_that_passes_with_failing_examples(tiny_runs, forks, tmp_path):
    (tmp_path / "ok.txt").write_text('{"a": [1, 2]}')
    (tmp_path / "cut.txt").write_text('{"a": [1, ')
    base = [f"--out_dir={tiny_runs['gpt']}", "--device=cpu", "--max_new_tokens=0", "--num_samples=4", "--validate=json"]
    proc = forks.run("sample.py", *base, f"--start=FILE:{tmp_path / 'ok.txt'}")
    assert proc.returncode == 0 and printed_samples(proc.stdout)[1] == "validate json: 4/4 samples pass (100%)\n"
    proc = forks.run("sample.py", *base, f"--start=FILE:{tmp_path / 'cut.txt'}")
    report = printed_samples(proc.stdout)[1].splitlines()
    assert report[0] == "validate json: 0/4 samples pass (0%)"
    assert report[1:] == [f"  sample {i}: JSONDecodeError: Expecting value: line 1 column 11 (char 10): "
                          "'{\"a\": [1, '" for i in (1, 2, 3)]  # a few, not all


def test_sample_validate_with_a_function_of_the_user_s_own(tiny_runs, tmp_path):
    (tmp_path / "mycheck.py").write_text("def even(text):\n    return len(text) % 2 == 0\n")
    proc = run_script("sample.py", f"--out_dir={tiny_runs['gpt']}", "--device=cpu", "--num_samples=8", "--start=Tom",
                      "--max_new_tokens=40", "--temperature=1.5", "--validate=mycheck:even", cwd=tmp_path,
                      env=ONE_THREAD)
    samples, report = printed_samples(proc.stdout)
    failing = [i + 1 for i, s in enumerate(samples) if len(s) % 2]
    assert len(samples) == 8 and 0 < len(failing) < 8  # the check can go either way on these samples
    assert report.splitlines()[0] == f"validate mycheck:even: {8 - len(failing)}/8 samples pass " \
                                     f"({100 * (8 - len(failing)) / 8:.0f}%)"
    assert [int(line.split()[1][:-1]) for line in report.splitlines()[1:]] == failing[:3]
    assert "mycheck:even returned False" in report
