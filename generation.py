"""
Text generation as sample.py and serve.py show it: Completion streams one continuation of a prompt as text, Batch
generates many of them together (one forward pass per token for all, each stream's text what it is alone), and
validator checks what a sample wrote (JSON, Python, or a check of the user's own).
"""

import ast
import importlib
import json
import os
import queue
import sys
import threading

import torch

from model import sample_next_token


class Completion:
    """One continuation of a prompt, as text that arrives while it is generated: iterating yields pieces of text,
    one forward pass each (a piece waits while its last character's bytes are split across tokens; the last piece
    holds what is left). It ends at end-of-text (not included) or after max_new_tokens. Then `tokens` holds the
    new ids and `finish_reason` is 'stop' or 'length' (OpenAI's names). An empty prompt starts a new document
    (after end-of-text). Iterating generates it alone; a Batch generates it beside others, token for token the same.
    The caller holds torch.no_grad() and autocast."""

    def __init__(self, model, enc, prompt, max_new_tokens, temperature=1.0, top_k=None, top_p=None, generator=None,
                 use_cache=True):
        self.model = model
        self.enc = enc
        self.prompt_tokens = enc.encode(prompt) if prompt else [enc.eot_token]
        self.max_new_tokens = max_new_tokens
        self.sampling = (temperature, top_k, top_p, generator)
        self.use_cache = use_cache
        self.tokens = []
        self.finish_reason = None if max_new_tokens else "length"
        self.shown = ""  # the text given out so far

    def __iter__(self):
        device = next(self.model.parameters()).device
        x = torch.tensor([self.prompt_tokens], dtype=torch.long, device=device)
        for token in self.model.generate_stream(x, self.max_new_tokens, *self.sampling, self.use_cache):
            piece = self.add(token.item())
            if piece:
                yield piece
            if self.finish_reason:
                return

    def add(self, token):
        """Take the next token; return the text it adds ('' while a character's bytes are split across tokens, and
        at end-of-text). Sets finish_reason when this token ends the completion; the last piece holds what is left."""
        if token == self.enc.eot_token:  # a story ends at end-of-text
            self.finish_reason = "stop"
        else:
            self.tokens.append(token)
            if len(self.tokens) >= self.max_new_tokens:
                self.finish_reason = "length"
        text = self.text
        if text.endswith("\ufffd") and not self.finish_reason:
            return ""  # wait: a character's bytes are split across tokens
        piece, self.shown = text[len(self.shown):], text
        return piece

    @property
    def text(self):
        return self.enc.decode(self.tokens)


class Stream:
    """A completion in a Batch, as its reader sees it: pieces of text in a queue, then None (or the exception that
    ended it). cancel() makes the batch drop it before its next token (its reader went away)."""

    def __init__(self, completion):
        self.completion = completion
        self.pieces = queue.Queue()
        self.cancelled = False
        self.tokens = list(completion.prompt_tokens)  # the whole sequence so far
        self.cache = None  # its own cache until it joins the batch's

    def cancel(self):
        self.cancelled = True

    def read(self, timeout=None):
        """The next piece of text, or None at the end; raises what ended the generation, if it failed."""
        piece = self.pieces.get(timeout=timeout)
        if isinstance(piece, BaseException):
            raise piece
        return piece


class Batch:
    """The streams of one model that generate at the same time, advanced together: one forward pass per token for
    all of them, each row with its own position, cache, sampling settings and random generator. A stream joins after
    its prompt's own forward pass and leaves at end-of-text, at its max_new_tokens, or when cancelled. Its tokens are
    those it gets alone (Completion): the same prompt pass, then decoding steps in which no row's numbers depend on
    another's (model.per_row), and past a GPT's block_size the same re-read of the last block_size tokens. One thread
    runs the model; submit() from any thread. context() gives the thread torch.no_grad() and autocast."""

    def __init__(self, model, context):
        self.model = model
        self.context = context
        self.block_size = getattr(model.config, "block_size", None)  # BDH reads any length
        self.device = next(model.parameters()).device
        self.waiting = queue.Queue()
        self.streams = []  # the batch's rows, in the order of self.cache's rows
        self.cache = None
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def submit(self, completion):
        stream = Stream(completion)
        self.waiting.put(stream)
        return stream

    def close(self):
        """Stop the thread once the streams in flight are done."""
        self.waiting.put(None)
        self.thread.join()

    def run(self):
        closing = False
        while not (closing and not self.streams):
            if not self.streams and not closing:
                self.waiting.put(self.waiting.get())  # sleep until a stream (or close) comes
            try:
                with self.context():
                    while not self.waiting.empty():
                        stream = self.waiting.get_nowait()
                        closing = closing or stream is None
                        if stream is not None:
                            self.join(stream)
                    if self.streams:
                        self.step()
            except Exception as e:  # a bug or out of memory: every stream in flight ends with it; the batch goes on
                for stream in self.streams:
                    stream.pieces.put(e)
                self.streams, self.cache = [], None

    def join(self, stream):
        """The prompt's forward pass (alone, as Completion's first step) and its first token; then it has a row."""
        if stream.completion.finish_reason:  # max_new_tokens 0: nothing to generate
            stream.pieces.put(None)
            return
        try:
            going = not stream.cancelled and self.prefill(stream)
        except Exception as e:  # this prompt's pass failed (out of memory, say): this stream ends, the batch goes on
            stream.pieces.put(e)
            going = False
        if going:
            self.cache = stream.cache if self.cache is None else type(stream.cache).concat([self.cache, stream.cache])
            self.streams.append(stream)
        stream.cache = None

    def prefill(self, stream):
        """A fresh cache of the stream's last block_size tokens (all of them for BDH), read in one forward pass, and
        the next token from its logits. Returns whether the stream goes on."""
        window = stream.tokens[-self.block_size:] if self.block_size else stream.tokens
        stream.cache = self.model.new_cache()
        logits, _ = self.model(torch.tensor([window], device=self.device), cache=stream.cache)
        return self.emit(stream, logits[:, -1])

    def step(self):
        """One token for every row: a row whose next position is past block_size is read again alone (prefill), the
        others in one forward pass."""
        keep = [i for i, s in enumerate(self.streams) if not s.cancelled]
        full = [i for i in keep if self.block_size and int(self.cache_positions()[i]) + 1 > self.block_size]
        rows = [i for i in keep if i not in full]
        again = [self.streams[i] for i in full]
        self.streams = [self.streams[i] for i in rows]
        self.cache = self.cache.rows(rows) if rows else None
        if self.streams:
            last = torch.tensor([[s.tokens[-1]] for s in self.streams], device=self.device)
            logits, _ = self.model(last, cache=self.cache)
            going = [i for i, s in enumerate(self.streams) if self.emit(s, logits[i : i + 1, -1])]
            if len(going) < len(self.streams):
                self.streams = [self.streams[i] for i in going]
                self.cache = self.cache.rows(going) if going else None
        for stream in again:
            self.join(stream)

    def cache_positions(self):
        return self.cache.pos if torch.is_tensor(self.cache.pos) else [self.cache.pos] * len(self.streams)

    def emit(self, stream, logits):
        """Sample the stream's next token from its logits (1, V) with its own settings and generator, as
        model.generate_stream does; hand its text to the reader. Returns whether the stream goes on."""
        c = stream.completion
        token = sample_next_token(logits[:, : self.model.config.vocab_size], *c.sampling).item()
        stream.tokens.append(token)
        piece = c.add(token)
        if piece:
            stream.pieces.put(piece)
        if c.finish_reason:
            stream.pieces.put(None)
        return not c.finish_reason


def validator(spec):
    """A check of a sample's text, by name: 'json' (it parses as JSON), 'python' (it parses as Python source) or
    'module:function', the user's own (a true result passes; false or an exception fails). Returns check(text),
    which gives None for a text that passes, else the reason in one line."""
    if spec == "json":
        return _reason_of(json.loads, (json.JSONDecodeError,))
    if spec == "python":
        return _reason_of(ast.parse, (SyntaxError, ValueError))  # ValueError: a null byte in the text
    module_name, _, function_name = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if not (module_name and function_name):
        raise ValueError(f"--validate={spec!r}: use json, python or module:function (your own check)")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # the user's module beside where they run the script
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # not found, or an error in the module itself
        raise ValueError(f"--validate={spec}: can't import {module_name} ({type(e).__name__}: {e})") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ValueError(f"--validate={spec}: {module_name} has no function {function_name}")

    def check(text):
        try:
            result = function(text)
        except Exception as e:  # the user's check failing on a sample is that sample's failure
            return f"{type(e).__name__}: {e}".splitlines()[0]
        return None if result else f"{spec} returned {result!r}"

    return check


def _reason_of(parse, errors):
    def check(text):
        try:
            parse(text)
        except errors as e:
            return f"{type(e).__name__}: {e}".splitlines()[0]
        return None

    return check
