"""Cross-implementation vectors: the real vantage6-common 4.15.2 cryptors against ours.

Encrypted by vantage6 and decrypted by us, and the reverse, for every form (string, blob,
stream) and size (empty, a small JSON input, 1 MiB, 64 MiB). String-form plaintexts are
JSON because vantage6's string-form decryption only takes JSON (it fails on non-UTF-8
plaintexts and base64-decodes other text); blob and stream plaintexts are random bytes.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tests.rig.reference_cryptor import ReferenceCryptor
from v6node.adapters.crypto.base64_cryptor import Base64Cryptor
from v6node.adapters.crypto.rsa_cryptor import RsaCryptor, create_private_key_pem, public_key_of

pytestmark = pytest.mark.server

MIB = 1 << 20
SIZES = ["empty", "small", "1MiB", "64MiB"]
SMALL_INPUT = json.dumps({"method": "partial_average", "args": [], "kwargs": {"column": "age"}}).encode()


# --- one key pair each, one set of payload files, per module ---------------------------
@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("crypto-vectors")


@pytest.fixture(scope="module")
def ours() -> RsaCryptor:
    return RsaCryptor(create_private_key_pem())


@pytest.fixture(scope="module")
def reference(workdir: Path) -> Iterator[ReferenceCryptor]:
    with ReferenceCryptor(workdir / "vantage6.pem") as bridge:  # vantage6 creates its own key
        yield bridge


def json_payload(size: int) -> bytes:
    """A JSON document of exactly ``size`` bytes (a table of random values, then a filler string)."""
    rng = random.Random(size)
    rows = [{"id": i, "value": rng.random(), "label": f"row-{rng.getrandbits(32):08x}"} for i in range(size // 200)]
    head = json.dumps({"rows": rows, "filler": ""}).encode()
    filler = base64.b64encode(os.urandom(size))[: size - len(head)]
    document = head[:-2] + filler + b'"}'
    assert len(document) == size
    return document


@pytest.fixture(scope="module")
def payloads(workdir: Path) -> dict[tuple[str, str], Path]:
    """(kind, size) -> a file: kind "json" for the string form, "binary" for blobs and streams."""
    files = {}
    for size in SIZES:
        for kind in ("json", "binary"):
            if size == "empty":
                data = b""
            elif size == "small":
                data = SMALL_INPUT
            else:
                n = int(size.removesuffix("MiB")) * MIB
                data = json_payload(n) if kind == "json" else os.urandom(n)
            files[kind, size] = path = workdir / f"{kind}-{size}"
            path.write_bytes(data)
    return files


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def chunks_of(path: Path, size: int = MIB) -> Iterator[bytes]:
    with path.open("rb") as file:
        while chunk := file.read(size):
            yield chunk


def write_stream(path: Path, chunks: Iterator[bytes]) -> None:
    with path.open("wb") as file:
        for chunk in chunks:
            file.write(chunk)


# --- vantage6 encrypts, we decrypt -------------------------------------------------------
@pytest.mark.parametrize("size", SIZES)
def test_string_form_from_vantage6(reference: ReferenceCryptor, ours: RsaCryptor, payloads, workdir: Path,
                                   size: str) -> None:
    source, sealed = payloads["json", size], workdir / f"v6-str-{size}"
    reference.call("encrypt", form="str", public_key=ours.own_public_key(), data_file=str(source),
                   out_file=str(sealed))
    value = sealed.read_text(encoding="ascii")
    assert value.count("$") == 2
    assert ours.decrypt_str(value) == source.read_bytes()


@pytest.mark.parametrize("size", SIZES)
def test_blob_form_from_vantage6(reference: ReferenceCryptor, ours: RsaCryptor, payloads, workdir: Path,
                                 size: str) -> None:
    source, sealed = payloads["binary", size], workdir / f"v6-blob-{size}"
    reference.call("encrypt", form="blob", public_key=ours.own_public_key(), data_file=str(source),
                   out_file=str(sealed))
    assert ours.decrypt_bytes(sealed.read_bytes()) == source.read_bytes()


@pytest.mark.parametrize("size", SIZES)
def test_stream_from_vantage6(reference: ReferenceCryptor, ours: RsaCryptor, payloads, workdir: Path,
                              size: str) -> None:
    source, sealed, opened = payloads["binary", size], workdir / f"v6-stream-{size}", workdir / f"ours-open-{size}"
    reference.call("encrypt_stream", public_key=ours.own_public_key(), in_file=str(source), out_file=str(sealed))
    # Odd chunk sizes put the header and the ciphertext across chunk boundaries.
    write_stream(opened, ours.decrypt_stream(chunks_of(sealed, 333_333)))
    assert digest(opened) == digest(source)
    # A vantage6 stream is the blob form.
    if size != "64MiB":
        assert ours.decrypt_bytes(sealed.read_bytes()) == source.read_bytes()


# --- we encrypt, vantage6 decrypts -------------------------------------------------------
@pytest.mark.parametrize("size", SIZES)
def test_string_form_to_vantage6(reference: ReferenceCryptor, ours: RsaCryptor, payloads, workdir: Path,
                                 size: str) -> None:
    source, sealed, opened = payloads["json", size], workdir / f"ours-str-{size}", workdir / f"v6-open-str-{size}"
    sealed.write_text(ours.encrypt_to_str(source.read_bytes(), reference.public_key()), encoding="ascii")
    reference.call("decrypt", form="str", value_file=str(sealed), out_file=str(opened))
    assert digest(opened) == digest(source)


@pytest.mark.parametrize("size", SIZES)
def test_blob_form_to_vantage6(reference: ReferenceCryptor, ours: RsaCryptor, payloads, workdir: Path,
                               size: str) -> None:
    source, sealed, opened = payloads["binary", size], workdir / f"ours-blob-{size}", workdir / f"v6-open-blob-{size}"
    sealed.write_bytes(ours.encrypt_to_bytes(source.read_bytes(), reference.public_key()))
    reference.call("decrypt", form="blob", value_file=str(sealed), out_file=str(opened))
    assert digest(opened) == digest(source)


@pytest.mark.parametrize("size", SIZES)
def test_stream_to_vantage6(reference: ReferenceCryptor, ours: RsaCryptor, payloads, workdir: Path,
                            size: str) -> None:
    source, sealed = payloads["binary", size], workdir / f"ours-stream-{size}"
    opened = workdir / f"v6-open-stream-{size}"
    write_stream(sealed, ours.encrypt_stream(chunks_of(source, 300_000), reference.public_key()))
    reference.call("decrypt_stream", in_file=str(sealed), out_file=str(opened))
    assert digest(opened) == digest(source)
    if size != "64MiB":  # our stream is the blob form, for vantage6 too
        opened.unlink()
        reference.call("decrypt", form="blob", value_file=str(sealed), out_file=str(opened))
        assert digest(opened) == digest(source)


# --- the UI's double base64, keys and public keys -----------------------------------------
def test_ui_style_double_base64_decrypts_alike(reference: ReferenceCryptor, ours: RsaCryptor) -> None:
    """The browser UI wraps the base64 text of the AES key and base64-encodes the message before AES."""

    def ui_encrypt(public_key: str, message: bytes) -> str:
        key, iv = os.urandom(32), os.urandom(16)
        recipient = serialization.load_pem_public_key(base64.b64decode(public_key))
        wrapped = recipient.encrypt(base64.b64encode(key), padding.PKCS1v15())
        sealed = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor().update(base64.b64encode(message))
        return "$".join(base64.b64encode(part).decode() for part in (wrapped, iv, sealed))

    # vantage6 takes the value as the UI means it, which shows that ``ui_encrypt`` does what the UI does.
    assert reference.decrypt_str(ui_encrypt(reference.public_key(), SMALL_INPUT)) == SMALL_INPUT
    assert ours.decrypt_str(ui_encrypt(ours.own_public_key(), SMALL_INPUT)) == SMALL_INPUT


def test_public_key_server_form_is_identical(reference: ReferenceCryptor, workdir: Path) -> None:
    vantage6_key = (workdir / "vantage6.pem").read_bytes()
    assert vantage6_key.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert public_key_of(vantage6_key) == reference.public_key()
    assert RsaCryptor.from_file(workdir / "vantage6.pem").own_public_key() == reference.public_key()


def test_our_key_file_works_in_vantage6(tmp_path: Path) -> None:
    path = tmp_path / "ours.pem"
    pem = create_private_key_pem(2048)
    path.write_bytes(pem)
    mine = RsaCryptor(pem)
    with ReferenceCryptor(path) as same_key:
        assert same_key.public_key() == mine.own_public_key()
        assert same_key.decrypt_str(mine.encrypt_to_str(SMALL_INPUT, mine.own_public_key())) == SMALL_INPUT
        assert mine.decrypt_str(same_key.encrypt_to_str(SMALL_INPUT, same_key.public_key())) == SMALL_INPUT


def test_vantage6_encrypts_for_our_published_key_and_we_for_its(reference: ReferenceCryptor,
                                                                 ours: RsaCryptor) -> None:
    for_us = reference.encrypt_to_bytes(b"\x00\x01binary", ours.own_public_key())
    assert ours.decrypt_bytes(for_us) == b"\x00\x01binary"
    for_it = ours.encrypt_to_bytes(b"\x00\x01binary", reference.public_key())
    assert reference.decrypt_bytes(for_it) == b"\x00\x01binary"


# --- unencrypted collaborations: DummyCryptor against Base64Cryptor ----------------------
@pytest.mark.parametrize("data", [b"", SMALL_INPUT, bytes(range(256)) * 40])
def test_base64_cryptor_matches_dummy_cryptor(reference: ReferenceCryptor, data: bytes) -> None:
    ours = Base64Cryptor()
    assert ours.encrypt_to_str(data, "") == reference.encrypt_to_str(data, "", cryptor="dummy")
    # DummyCryptor ignores the blob flag: its "blob" is base64 text, like ours.
    assert ours.encrypt_to_bytes(data, "") == reference.encrypt_to_str(data, "", cryptor="dummy").encode()
    assert reference.decrypt_str(ours.encrypt_to_str(data, ""), cryptor="dummy") == data
    assert reference.decrypt_bytes(ours.encrypt_to_bytes(data, ""), cryptor="dummy") == data


def test_base64_streams_match_dummy_cryptor(reference: ReferenceCryptor, payloads, workdir: Path) -> None:
    source = payloads["binary", "1MiB"]
    theirs, mine, opened = workdir / "dummy-stream", workdir / "b64-stream", workdir / "dummy-open"
    reference.call("encrypt_stream", cryptor="dummy", in_file=str(source), out_file=str(theirs), chunk_size=100_000)
    write_stream(mine, Base64Cryptor().encrypt_stream(chunks_of(source, 77_777), ""))
    assert mine.read_bytes() == theirs.read_bytes()
    assert b"".join(Base64Cryptor().decrypt_stream(chunks_of(theirs, 55_555))) == source.read_bytes()
    reference.call("decrypt_stream", cryptor="dummy", in_file=str(mine), out_file=str(opened))
    assert digest(opened) == digest(source)
