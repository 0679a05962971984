"""The "cryptor" of unencrypted collaborations: base64 both ways."""
from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Iterator

from v6node.domain.errors import CryptoError
from v6node.ports.cryptor import Cryptor


def _decode(value: bytes) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise CryptoError(f"not valid base64 ({exc})") from exc


def base64_length(size: int) -> int:
    """Length of the padded base64 text of ``size`` bytes."""
    return 4 * ((size + 2) // 3)


def aligned(chunks: Iterable[bytes], unit: int) -> Iterator[bytes]:
    """Re-cut ``chunks`` into pieces whose length is a multiple of ``unit`` (the last may not be)."""
    rest = b""
    for chunk in chunks:
        rest += chunk
        cut = len(rest) - len(rest) % unit
        if cut:
            yield rest[:cut]
            rest = rest[cut:]
    if rest:
        yield rest


class Base64Cryptor(Cryptor):
    """Unencrypted collaborations: results are base64 text, inputs are base64 of the JSON."""

    encrypted = False

    def own_public_key(self) -> str:
        return ""

    def encrypt_to_str(self, data: bytes, public_key: str = "") -> str:
        return base64.b64encode(data).decode("ascii")

    def decrypt_str(self, value: str) -> bytes:
        try:
            raw = value.encode("ascii")
        except UnicodeEncodeError as exc:
            raise CryptoError(f"not valid base64 ({exc})") from exc
        return _decode(raw)

    def encrypt_to_bytes(self, data: bytes, public_key: str = "") -> bytes:
        # Like the reference: unencrypted blobs carry base64 text too.
        return base64.b64encode(data)

    def decrypt_bytes(self, value: bytes) -> bytes:
        return _decode(value)

    def encrypt_stream(self, chunks: Iterable[bytes], public_key: str = "") -> Iterator[bytes]:
        for piece in aligned(chunks, 3):
            yield base64.b64encode(piece)

    def encrypt_str_stream(self, chunks: Iterable[bytes], public_key: str = "") -> Iterator[bytes]:
        return self.encrypt_stream(chunks, public_key)

    def str_form_length(self, size: int, public_key: str = "") -> int:
        return base64_length(size)

    def decrypt_stream(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for piece in aligned(chunks, 4):
            yield _decode(piece)
