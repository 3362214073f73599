"""Byte-level tokenizer: token i < 256 is byte i, so any text round-trips and no vocabulary file is needed."""

from __future__ import annotations

import codecs


class ByteTokenizer:
    """UTF-8 bytes as token ids; ids >= 256 (a larger model vocabulary) decode to nothing."""

    def __init__(self, vocab_size: int) -> None:
        if vocab_size < 256:
            raise ValueError("the byte tokenizer needs a vocabulary of at least 256 tokens")
        self.vocab_size = vocab_size

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, token_ids: list[int]) -> str:
        return bytes(t for t in token_ids if t < 256).decode("utf-8", errors="replace")

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder()


class StreamDecoder:
    """Turns tokens into text one at a time, holding back bytes of a UTF-8 character not yet complete."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        if token_id >= 256:
            return ""
        return self._decoder.decode(bytes([token_id]))

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)
