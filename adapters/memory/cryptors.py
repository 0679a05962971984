"""Cryptors for the harness: base64 for plain collaborations, RSA with one test key for encrypted ones."""
from __future__ import annotations

import functools

from v6node.adapters.crypto.base64_cryptor import Base64Cryptor
from v6node.adapters.crypto.rsa_cryptor import RsaCryptor, create_private_key_pem
from v6node.ports.cryptor import Cryptor


@functools.cache
def test_private_key() -> bytes:
    """One RSA key per process: 2048 bits keeps tests fast (the format is what 4096 gives)."""
    return create_private_key_pem(2048)


def memory_cryptor_factory(encrypted: bool, _private_key: str) -> Cryptor:
    return RsaCryptor(test_private_key()) if encrypted else Base64Cryptor()
