"""Encryption of run inputs and results (spec §5)."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, runtime_checkable



@runtime_checkable
class Cryptor(Protocol):
    """Pure computation; raises ``CryptoError`` on data it cannot handle.

    ``public_key`` arguments are what the server stores as an organization's
    ``public_key``: the base64 of the PEM text (ignored when unencrypted).
    """

    # True for the RSA/AES scheme of encrypted collaborations, false for plain base64.
    encrypted: bool

    def own_public_key(self) -> str:
        """Our organization's public key in the server's form ("" when unencrypted)."""

    def encrypt_to_str(self, data: bytes, public_key: str) -> str:
        """String form: ``b64(key)$b64(iv)$b64(ciphertext)`` (base64 of ``data`` when unencrypted)."""

    def encrypt_str_stream(self, chunks: Iterable[bytes], public_key: str) -> Iterator[bytes]:
        """String form as ASCII bytes, produced chunk by chunk with bounded memory; the
        pieces join to what ``encrypt_to_str`` would give with the same key and IV."""

    def str_form_length(self, size: int, public_key: str) -> int:
        """Length of the string form of ``size`` bytes of plaintext for ``public_key``."""

    def decrypt_str(self, value: str) -> bytes:
        """The plaintext of a string-form value addressed to us (with the UI compatibility rules)."""

    def encrypt_to_bytes(self, data: bytes, public_key: str) -> bytes:
        """Blob form: ``b64(key)$b64(iv)$`` then raw ciphertext (base64 text when unencrypted)."""

    def decrypt_bytes(self, value: bytes) -> bytes:
        """The plaintext of a blob-form value."""

    def encrypt_stream(self, chunks: Iterable[bytes], public_key: str) -> Iterator[bytes]:
        """Blob form, produced chunk by chunk with bounded memory."""

    def decrypt_stream(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Plaintext of a blob-form stream, chunk by chunk with bounded memory."""
