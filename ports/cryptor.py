"""Encryption of run inputs and results."""
from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Cryptor(Protocol):
    """Pure computation; raises ``CryptoError`` on data it cannot handle."""

    # True for the RSA/AES scheme of encrypted collaborations, false for plain base64.
    encrypted: bool

    def encrypt_to_str(self, data: bytes, public_key: str) -> str:
        """``data`` for the holder of ``public_key`` (base64 PEM; ignored when unencrypted)."""

    def decrypt_str(self, value: str) -> bytes:
        """The plaintext of a value addressed to us."""
