"""
Tokenizers by spec string, as recorded in meta.json's "tokenizer" field, so that prepare.py encodes and
train.py / sample.py decode with the same one:

    bytes                        UTF-8 bytes 0..255, end-of-text 256 (offline, no files)
    gpt2, cl100k_base, o200k_base tiktoken encodings (downloaded once, then cached; honours TIKTOKEN_CACHE_DIR)

Each tokenizer has encode(text) -> list[int] (no special tokens), decode(ids) -> str, vocab_size, eot_token, and
byte_lengths(): the UTF-8 length of every token (0 for end-of-text), for tokenizer-independent bits per byte.
"""


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


class TiktokenTokenizer:
    def __init__(self, name):
        import tiktoken

        try:
            self.enc = tiktoken.get_encoding(name)
        except ValueError as e:  # unknown encoding name
            raise SystemExit(f"error: unknown tokenizer {name!r} ({e})")
        except Exception as e:  # first use downloads the BPE files: fails offline
            raise SystemExit(
                f"error: could not load tiktoken encoding {name!r} ({type(e).__name__}): its files are downloaded "
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


def get_tokenizer(spec):
    if spec == "bytes":
        return ByteTokenizer()
    return TiktokenTokenizer(spec)
