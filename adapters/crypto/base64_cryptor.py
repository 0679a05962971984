"""The "cryptor" of unencrypted collaborations: base64 both ways."""
from __future__ import annotations

import base64
import binascii

from v6node.domain.errors import CryptoError


class Base64Cryptor:
    encrypted = False

    def encrypt_to_str(self, data: bytes, public_key: str = "") -> str:
        return base64.b64encode(data).decode("ascii")

    def decrypt_str(self, value: str) -> bytes:
        try:
            return base64.b64decode(value.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise CryptoError(f"not valid base64 ({exc})") from exc
