"""
Tokenizers by spec string, as recorded in meta.json's "tokenizer" field, so that prepare.py encodes and
train.py / sample.py decode with the same one:

    bytes                        UTF-8 bytes 0..255, end-of-text 256 (offline, no files)
    char                         the characters of the text prepare.py read, sorted (meta.json's "chars"), then
                                 end-of-text: nanoGPT's shakespeare_char
    gpt2, cl100k_base, o200k_base tiktoken encodings (downloaded once, then cached; honours TIKTOKEN_CACHE_DIR)
    bpe:4096                     a byte-level BPE that prepare.py trained on the data: tokenizer.json beside meta.json
    hf:llama.json                a Hugging Face tokenizer.json (Llama, CodeLlama, SuperBPE, ...) beside meta.json
    path/to/tokenizer.json       the same, by path: what a user passes to prepare.py, which stores it as hf:<name>

Files named by a spec are looked up in `directory`: the data folder for prepare.py and train.py, out_dir for
sample.py and eval.py (train.py copies them there). Each tokenizer has encode(text) -> list[int] (no special tokens:
a document's own "<|endoftext|>" is plain text), decode(ids) -> str, vocab_size, eot_token, and byte_lengths(): the
UTF-8 length of every token (0 for end-of-text), for tokenizer-independent bits per byte.
"""

import json
import os


class ByteTokenizer:
    """Byte-level: every UTF-8 byte is a token, plus one end-of-text token. Needs nothing, never fails."""

    vocab_size = 257
    eot_token = 256

    def encode(self, text):
        return list(text.encode("utf-8"))

    def byte_lengths(self):
        return [1] * 256 + [0]

    def decode(self, ids):
        parts, run = [], bytearray()
        for i in ids:
            if i == self.eot_token:
                parts.append(run.decode("utf-8", errors="replace") + "<|endoftext|>")
                run = bytearray()
            elif 0 <= i < 256:
                run.append(i)
        parts.append(run.decode("utf-8", errors="replace"))
        return "".join(parts)


class CharTokenizer:
    """One token per character of a fixed set (nanoGPT's character-level tokenizer), then end-of-text."""

    def __init__(self, chars):
        self.chars = chars
        self.index = {c: i for i, c in enumerate(chars)}
        self.vocab_size = len(chars) + 1
        self.eot_token = len(chars)

    @classmethod
    def from_meta(cls, directory):
        path = os.path.join(directory or ".", "meta.json")
        try:
            with open(path, encoding="utf-8") as f:
                return cls(json.load(f)["chars"])
        except (OSError, ValueError, KeyError, TypeError):
            raise ValueError(f"tokenizer 'char' keeps its characters in meta.json: {path} has none; prepare the data "
                             "again (python prepare.py --tokenizer=char ...)") from None

    def encode(self, text):
        try:
            return [self.index[c] for c in text]
        except KeyError as e:
            raise ValueError(f"character {e.args[0]!r} is not in this character-level vocabulary (the characters of "
                             "the training text); leave it out of the prompt") from None

    def decode(self, ids):
        return "".join(self.chars[i] if i < len(self.chars) else "<|endoftext|>" for i in ids)

    def byte_lengths(self):
        return [len(c.encode("utf-8")) for c in self.chars] + [0]


class TiktokenTokenizer:
    def __init__(self, name):
        import tiktoken

        try:
            self.enc = tiktoken.get_encoding(name)
        except ValueError as e:  # unknown encoding name
            raise ValueError(f"unknown tokenizer {name!r} ({e})")
        except Exception as e:  # first use downloads the BPE files: fails offline
            raise OSError(
                f"could not load tiktoken encoding {name!r} ({type(e).__name__}): its files are downloaded "
                "on first use; without internet, point TIKTOKEN_CACHE_DIR at a folder holding them, "
                "or use --tokenizer=bytes"
            )
        self.vocab_size = self.enc.n_vocab
        self.eot_token = self.enc.eot_token

    def encode(self, text):
        return self.enc.encode_ordinary(text)

    def decode(self, ids):
        return self.enc.decode(list(ids))

    def byte_lengths(self):
        special = self.enc.special_tokens_set
        lengths = []
        for i in range(self.vocab_size):
            try:
                token = self.enc.decode_single_token_bytes(i)
                lengths.append(0 if token.decode("utf-8", "replace") in special else len(token))
            except KeyError:  # an id with no token (gaps in some encodings)
                lengths.append(0)
        return lengths


class HFTokenizer:
    """A Hugging Face tokenizer.json through the `tokenizers` package (optional: imported only here)."""

    # end-of-text markers in the order they are tried: GPT-2 style, Llama/SentencePiece, Llama 3, Gemma
    EOT_NAMES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>")

    def __init__(self, path):
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ImportError(f"tokenizer file {path} needs the tokenizers package: pip install tokenizers")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no tokenizer file {path}")
        try:
            self.tok = Tokenizer.from_file(path)
        except Exception as e:  # not JSON, or not a tokenizer
            raise ValueError(f"{path} is not a Hugging Face tokenizer.json ({str(e).splitlines()[0]})")
        self.tok.encode_special_tokens = True  # like tiktoken's encode_ordinary: special tokens in text are text
        self.vocab_size = self.tok.get_vocab_size(with_added_tokens=True)
        ids = [self.tok.token_to_id(name) for name in self.EOT_NAMES]
        if all(i is None for i in ids):
            raise ValueError(f"{path} has no end-of-text token (looked for {', '.join(self.EOT_NAMES)})")
        self.eot_token = next(i for i in ids if i is not None)

    def encode(self, text):
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids):
        return self.tok.decode(list(ids), skip_special_tokens=False)

    def byte_lengths(self):
        """Byte-level BPEs (GPT-2 style, bpe:N, Llama 3) spell each byte as one character of the token string;
        SentencePiece ones (Llama 2) spell a space as U+2581 and unknown bytes as <0xNN>."""
        special = {t.content for t in self.tok.get_added_tokens_decoder().values() if t.special}
        byte_level = type(self.tok.decoder).__name__ == "ByteLevel"
        lengths = []
        for i in range(self.vocab_size):
            token = self.tok.id_to_token(i)
            if token is None or token in special:
                lengths.append(0)
            elif byte_level:
                lengths.append(len(token))
            elif len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
                lengths.append(1)
            else:
                lengths.append(len(token.replace("\u2581", " ").encode("utf-8")))
        return lengths


def train_bpe(texts, vocab_size, path):
    """Train a byte-level BPE of vocab_size tokens (end-of-text included, id 0) on an iterable of texts; save it
    to path. Byte-level: every string round-trips, nothing is ever unknown. Deterministic for the same texts."""
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError:
        raise ImportError("--tokenizer=bpe:N trains with the tokenizers package: pip install tokenizers")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2's split into words, on bytes
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, seen in training or not
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.save(path)


def get_tokenizer(spec, directory=None):
    """The tokenizer for a spec string; directory holds the files that bpe:N and hf:<name> specs refer to."""
    if spec == "bytes":
        return ByteTokenizer()
    if spec == "char":
        return CharTokenizer.from_meta(directory)
    if spec.startswith(("bpe:", "hf:")):
        name = "tokenizer.json" if spec.startswith("bpe:") else spec[3:]
        if directory is None and spec.startswith("bpe:"):
            raise ValueError(f"tokenizer {spec!r} is a file stored beside meta.json: pass its folder")
        return HFTokenizer(os.path.join(directory, name) if directory is not None else name)
    if spec.endswith(".json"):
        return HFTokenizer(spec)
    return TiktokenTokenizer(spec)
