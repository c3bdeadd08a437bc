"""
Text generation as sample.py and serve.py show it: Completion streams one continuation of a prompt as text, and
validator checks what a sample wrote (JSON, Python, or a check of the user's own).
"""

import ast
import importlib
import json
import os
import sys

import torch


class Completion:
    """One continuation of a prompt, as text that arrives while it is generated: iterating yields pieces of text,
    one forward pass each (a piece waits while its last character's bytes are split across tokens; the last piece
    holds what is left). It ends at end-of-text (not included) or after max_new_tokens. Then `tokens` holds the
    new ids and `finish_reason` is 'stop' or 'length' (OpenAI's names). An empty prompt starts a new document
    (after end-of-text). The caller holds torch.no_grad() and autocast."""

    def __init__(self, model, enc, prompt, max_new_tokens, temperature=1.0, top_k=None, top_p=None, generator=None,
                 use_cache=True):
        self.model = model
        self.enc = enc
        self.prompt_tokens = enc.encode(prompt) if prompt else [enc.eot_token]
        self.settings = (max_new_tokens, temperature, top_k, top_p, generator, use_cache)
        self.tokens = []
        self.finish_reason = None

    def __iter__(self):
        device = next(self.model.parameters()).device
        x = torch.tensor([self.prompt_tokens], dtype=torch.long, device=device)
        shown = ""
        for token in self.model.generate_stream(x, *self.settings):
            if token.item() == self.enc.eot_token:  # a story ends at end-of-text
                self.finish_reason = "stop"
                break
            self.tokens.append(token.item())
            text = self.enc.decode(self.tokens)
            if not text.endswith("\ufffd"):  # else wait: a character's bytes are split across tokens
                yield text[len(shown):]
                shown = text
        self.finish_reason = self.finish_reason or "length"
        if len(self.text) > len(shown):
            yield self.text[len(shown):]

    @property
    def text(self):
        return self.enc.decode(self.tokens)


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
