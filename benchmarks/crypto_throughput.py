"""String-form encrypt+decrypt throughput of RsaCryptor beside vantage6-common and the raw limit.

Run with:  .venv/bin/python -m benchmarks.crypto_throughput [--mib 64] [--reps 3]

Side by side in one run on this machine, for the same 64 MiB plaintexts:
* ours: ``RsaCryptor.encrypt_to_str`` then ``decrypt_str`` (RSA-4096), in this process;
* vantage6: the real ``vantage6-common`` 4.15.2 ``RSACryptor`` (``encrypt_bytes_to_str``
  then ``decrypt``) in the rig's server venv, timed inside that process by
  ``tests/rig/v6_crypto_bridge.py`` via ``tests/rig/reference_cryptor.py`` (startup and file reading are not timed);
* raw: AES-256-CTR and base64 of the same bytes with ``cryptography`` and ``binascii``
  alone (one ``update`` and one ``b2a_base64``/``a2b_base64`` call each way, no RSA, no
  header, no ``str``), in this process: the limit the issue sets (ours / raw <= 1.5);
* raw-simd: the same with ``pybase64`` (the SIMD codec ours uses) instead of ``binascii``,
  the limit of what ours does now.

String-form plaintexts are JSON (results are JSON by convention, and vantage6's string-form
decryption fails on non-UTF-8 plaintexts): "records" is a realistic JSON table; "string"
is one JSON string of base64 text, the cheapest JSON to parse, which isolates the crypto.
Times are the best of ``--reps``. Then the peak memory of a streaming round trip
(``encrypt_stream`` into ``decrypt_stream``, 1 MiB chunks) is measured with tracemalloc,
as bytes allocated beyond the plaintext held by the caller.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import random
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pybase64
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from v6node.adapters.crypto.rsa_cryptor import RsaCryptor, create_private_key_pem

from tests.rig.reference_cryptor import ReferenceCryptor

MIB = 1 << 20
STREAM_CHUNK = MIB


def records_payload(size: int) -> bytes:
    """A JSON table of about ``size`` bytes: ids, floats, labels and flags."""
    rng = random.Random(6)
    rows: list[str] = []
    total = 2
    while total < size:
        row = json.dumps({"id": len(rows), "value": rng.random() * 1000, "count": rng.randrange(10**6),
                          "label": f"org-{rng.randrange(100)}-{rng.getrandbits(40):x}", "ok": rng.random() < 0.5})
        rows.append(row)
        total += len(row) + 2
    return ("[" + ", ".join(rows) + "]").encode()


def string_payload(size: int) -> bytes:
    """One JSON string of ``size`` bytes: base64 of random bytes between quotes."""
    inner = base64.b64encode(os.urandom((size - 2) * 3 // 4 + 3))[: size - 2]
    return b'"' + inner + b'"'


def best_of(reps: int, run: Callable[[], tuple[float, float]]) -> tuple[float, float]:
    results = [run() for _ in range(reps)]
    return min(r[0] for r in results), min(r[1] for r in results)


def time_ours(cryptor: RsaCryptor, data: bytes) -> tuple[float, float]:
    own = cryptor.own_public_key()
    started = time.perf_counter()
    value = cryptor.encrypt_to_str(data, own)
    encrypted = time.perf_counter()
    plain = cryptor.decrypt_str(value)
    decrypted = time.perf_counter()
    assert plain == data, "our round trip changed the data"
    return encrypted - started, decrypted - encrypted


def time_raw(data: bytes, encode: Callable[[bytes], bytes], decode: Callable[[bytes], bytes]) -> tuple[float, float]:
    """AES-256-CTR plus base64 with ``encode``/``decode`` and nothing else: the raw limit."""
    key, iv = os.urandom(32), os.urandom(16)
    started = time.perf_counter()
    sealed = encode(Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor().update(data))
    encrypted = time.perf_counter()
    plain = Cipher(algorithms.AES(key), modes.CTR(iv)).decryptor().update(decode(sealed))
    decrypted = time.perf_counter()
    assert plain == data, "raw round trip changed the data"
    return encrypted - started, decrypted - encrypted


def binascii_encode(data: bytes) -> bytes:
    return binascii.b2a_base64(data, newline=False)


def simd_decode(data: bytes) -> bytes:
    return pybase64.b64decode(data, validate=True)


def stream_peak(cryptor: RsaCryptor, data: bytes) -> int:
    """Peak bytes allocated beyond ``data`` during a streaming round trip of it."""
    view = memoryview(data)
    own = cryptor.own_public_key()

    def source() -> Iterator[memoryview]:
        for start in range(0, len(view), STREAM_CHUNK):
            yield view[start : start + STREAM_CHUNK]

    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        position = 0
        for piece in cryptor.decrypt_stream(cryptor.encrypt_stream(source(), own)):
            assert view[position : position + len(piece)] == piece, "stream round trip changed the data"
            position += len(piece)
        assert position == len(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak - baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    size = args.mib * MIB

    print(f"base64 codec: pybase64 {pybase64.get_version()}")
    ours = RsaCryptor(create_private_key_pem(4096))
    payloads = {"records": records_payload(size), "string": string_payload(size)}
    with tempfile.TemporaryDirectory() as tmp, ReferenceCryptor(Path(tmp) / "reference.pem") as reference:
        print(f"string form, encrypt + decrypt, best of {args.reps}; MiB/s = payload / (encrypt + decrypt)")
        print(f"{'payload':9} {'who':9} {'encrypt':>9} {'decrypt':>9} {'MiB/s':>8}")
        for name, data in payloads.items():
            json.loads(data)  # both payloads are valid JSON
            file = Path(tmp) / f"{name}.json"
            file.write_bytes(data)
            timings = reference.call("bench_str", in_file=str(file), reps=args.reps)
            figures = {
                "ours": best_of(args.reps, lambda: time_ours(ours, data)),
                "vantage6": (min(t["encrypt_s"] for t in timings), min(t["decrypt_s"] for t in timings)),
                "raw": best_of(args.reps, lambda: time_raw(data, binascii_encode, binascii.a2b_base64)),
                "raw-simd": best_of(args.reps, lambda: time_raw(data, pybase64.b64encode, simd_decode)),
            }
            mib = len(data) / MIB
            for who, (enc, dec) in figures.items():
                print(f"{name:9} {who:9} {enc * 1000:7.0f}ms {dec * 1000:7.0f}ms {mib / (enc + dec):8.0f}")
            total = {who: sum(times) for who, times in figures.items()}
            print(f"{name:9} ours vs vantage6: {total['vantage6'] / total['ours']:.2f}x faster (target >= 2); "
                  f"ours vs raw: {total['ours'] / total['raw']:.2f}x the raw time (target <= 1.5), "
                  f"{total['ours'] / total['raw-simd']:.2f}x the raw-simd time; "
                  f"payload {len(data)} bytes")
            print(f"{name:9} bound: the raw limit itself is "
                  f"{total['vantage6'] / total['raw']:.2f}x faster than vantage6")
            file.unlink()

    peak = stream_peak(ours, payloads["string"])
    print(f"stream round trip of {len(payloads['string'])} bytes in {STREAM_CHUNK}-byte chunks: peak "
          f"{peak} bytes beyond the payload = {peak / STREAM_CHUNK:.2f} chunks (target < 4)")


if __name__ == "__main__":
    main()
