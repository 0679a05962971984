"""vantage6-common's own cryptors, driven from the project venv through v6_crypto_bridge.py."""
from __future__ import annotations

import base64
from pathlib import Path

from tests.rig.json_lines import JsonLinesProcess
from tests.rig.paths import RIG_SRC


class ReferenceCryptor(JsonLinesProcess):
    """vantage6-common's RSACryptor/DummyCryptor for the key at ``key_file`` (created if missing)."""

    what = "the vantage6 crypto bridge"

    def __init__(self, key_file: Path) -> None:
        self.key_file = Path(key_file)
        super().__init__(str(RIG_SRC / "v6_crypto_bridge.py"), str(self.key_file))

    # Conveniences for small payloads; big ones go through ``call`` with files.
    def public_key(self) -> str:
        return self.call("public_key")

    def encrypt_to_str(self, data: bytes, public_key: str, cryptor: str = "rsa") -> str:
        return self.call("encrypt", cryptor=cryptor, form="str", public_key=public_key,
                         data=base64.b64encode(data).decode())

    def encrypt_to_bytes(self, data: bytes, public_key: str, cryptor: str = "rsa") -> bytes:
        return base64.b64decode(self.call("encrypt", cryptor=cryptor, form="blob", public_key=public_key,
                                          data=base64.b64encode(data).decode()))

    def decrypt_str(self, value: str, cryptor: str = "rsa") -> bytes:
        return base64.b64decode(self.call("decrypt", cryptor=cryptor, form="str", value=value))

    def decrypt_bytes(self, value: bytes, cryptor: str = "rsa") -> bytes:
        return base64.b64decode(self.call("decrypt", cryptor=cryptor, form="blob",
                                          value=base64.b64encode(value).decode()))
