"""The real vantage6-common cryptors (RSACryptor, DummyCryptor) behind a JSON-lines pipe.

Runs under the rig's server venv, which has ``vantage6-common`` installed:
``python v6_crypto_bridge.py KEY_FILE``. It loads (or first creates, with vantage6's own
key generator) the RSA key at KEY_FILE and answers one JSON request per stdin line with
one JSON line ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "Type: text"}``.
``tests/rig/reference_cryptor.py`` drives it from the project venv.

Small payloads travel as base64 in the JSON; large ones as files (``*_file`` arguments).
Every operation takes ``cryptor``: ``"rsa"`` (default) or ``"dummy"``.

Operations: ``public_key``; ``encrypt`` (``form`` "str" or "blob", ``data`` b64 or
``data_file``, ``public_key``, optional ``out_file``); ``decrypt`` (``form``, ``value``
str / b64 of bytes, or ``value_file``, optional ``out_file``); ``encrypt_stream`` /
``decrypt_stream`` (``in_file``, ``out_file``, ``public_key``, ``chunk_size``);
``bench_str`` (``in_file``, ``reps``: string-form encrypt and decrypt of the file's bytes
for our own key, timed inside this process).
"""
from __future__ import annotations

import base64
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


# --- server-venv side ----------------------------------------------------------------
def main() -> None:
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not corrupt answers

    from vantage6.common.encryption import DummyCryptor, RSACryptor  # noqa: PLC0415 - server venv only

    key_file = Path(sys.argv[1])
    if not key_file.exists():
        RSACryptor.create_new_rsa_key(key_file)
    cryptors = {"rsa": RSACryptor(key_file), "dummy": DummyCryptor()}

    def data_of(args: dict[str, Any], name: str) -> bytes:
        if f"{name}_file" in args:
            return Path(args[f"{name}_file"]).read_bytes()
        return base64.b64decode(args[name])

    def emit(value: str | bytes, args: dict[str, Any]) -> str | None:
        """The value inline (str as is, bytes as base64), or written to ``out_file``."""
        if "out_file" in args:
            raw = value.encode() if isinstance(value, str) else value
            Path(args["out_file"]).write_bytes(raw)
            return None
        return value if isinstance(value, str) else base64.b64encode(value).decode()

    def public_key(cryptor: Any, **_: Any) -> str:
        return cryptor.public_key_str if isinstance(cryptor, RSACryptor) else ""

    def encrypt(cryptor: Any, form: str, public_key: str = "", **args: Any) -> str | None:
        value = cryptor.encrypt_bytes_to_str(
            data_of(args, "data"), public_key, skip_base64_encoding_of_msg=(form == "blob")
        )
        return emit(value, args)

    def decrypt(cryptor: Any, form: str, **args: Any) -> str | None:
        if "value_file" in args:
            raw = Path(args["value_file"]).read_bytes()
            value: str | bytes = raw.decode() if form == "str" else raw
        else:
            value = args["value"] if form == "str" else base64.b64decode(args["value"])
        return emit(cryptor.decrypt(value), args)

    def encrypt_stream(cryptor: Any, in_file: str, out_file: str, public_key: str = "",
                       chunk_size: int = 1 << 20) -> int:
        with open(in_file, "rb") as source, open(out_file, "wb") as sink:
            for piece in cryptor.encrypt_stream(source, public_key, chunk_size=chunk_size):
                sink.write(piece)
        return Path(out_file).stat().st_size

    def decrypt_stream(cryptor: Any, in_file: str, out_file: str, chunk_size: int = 1 << 20) -> int:
        with open(in_file, "rb") as source, open(out_file, "wb") as sink:
            for piece in cryptor.decrypt_stream(source, chunk_size=chunk_size):
                sink.write(piece)
        return Path(out_file).stat().st_size

    def bench_str(cryptor: Any, in_file: str, reps: int = 3) -> list[dict[str, float]]:
        data = Path(in_file).read_bytes()
        own = public_key(cryptor)
        timings = []
        for _ in range(reps):
            started = time.perf_counter()
            value = cryptor.encrypt_bytes_to_str(data, own)
            encrypted = time.perf_counter()
            plain = cryptor.decrypt(value)
            decrypted = time.perf_counter()
            if plain != data:
                raise AssertionError("vantage6 round trip changed the data")
            del value, plain
            timings.append({"encrypt_s": encrypted - started, "decrypt_s": decrypted - encrypted})
        return timings

    operations = {
        "public_key": public_key,
        "encrypt": encrypt,
        "decrypt": decrypt,
        "encrypt_stream": encrypt_stream,
        "decrypt_stream": decrypt_stream,
        "bench_str": bench_str,
    }
    print(json.dumps({"ok": True, "result": "ready"}), file=answers)
    for line in sys.stdin:
        request = json.loads(line)
        args = dict(request.get("args", {}))
        try:
            cryptor = cryptors[args.pop("cryptor", "rsa")]
            answer = {"ok": True, "result": operations[request["op"]](cryptor, **args)}
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), file=answers)


# --- project-venv side ---------------------------------------------------------------
if __name__ == "__main__":
    main()
