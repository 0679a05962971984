"""RsaCryptor: round trips, the wire format, the UI compatibility rules, and rejection of bad input."""
from __future__ import annotations

import base64
import binascii
import json
import os
import re
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from v6node.adapters.crypto import rsa_cryptor
from v6node.adapters.crypto.rsa_cryptor import MAX_HEADER, RsaCryptor, create_private_key_pem, public_key_of
from v6node.domain.errors import CryptoError
from v6node.ports.cryptor import Cryptor

IV16 = base64.b64encode(bytes(16)).decode()
FEW = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- keys: generated once per module (RSA-4096 generation takes seconds) ---------------
@pytest.fixture(scope="module")
def pem4096() -> bytes:
    return create_private_key_pem()


@pytest.fixture(scope="module")
def big(pem4096: bytes) -> RsaCryptor:
    """The production key size, for tests about the format."""
    return RsaCryptor(pem4096)


@pytest.fixture(scope="module")
def alice_pem() -> bytes:
    return create_private_key_pem(2048)


@pytest.fixture(scope="module")
def alice(alice_pem: bytes) -> RsaCryptor:
    return RsaCryptor(alice_pem)


@pytest.fixture(scope="module")
def alice_key(alice_pem: bytes) -> rsa.RSAPrivateKey:
    """Alice's key as cryptography sees it, to check the format independently of RsaCryptor."""
    return serialization.load_pem_private_key(alice_pem, password=None)


@pytest.fixture(scope="module")
def big_key(pem4096: bytes) -> rsa.RSAPrivateKey:
    return serialization.load_pem_private_key(pem4096, password=None)


@pytest.fixture(scope="module")
def bob() -> RsaCryptor:
    return RsaCryptor(create_private_key_pem(2048))


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (empty pieces included)."""
    bounds = [0, *sorted(min(c, len(data)) for c in cuts), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def unwrap_with(key: rsa.RSAPrivateKey, wrapped: bytes) -> bytes | None:
    """What PKCS#1 v1.5 unwrapping with ``key`` gives, None when it refuses."""
    try:
        return key.decrypt(wrapped, padding.PKCS1v15())
    except ValueError:
        return None


def ui_style(recipient: RsaCryptor, message: bytes, *, base64_message: bool = True) -> str:
    """A value as the vantage6 browser UI makes it: the key wrapped as base64 text, the message base64'd."""
    key, iv = os.urandom(32), os.urandom(16)
    public = serialization.load_pem_public_key(base64.b64decode(recipient.own_public_key()))
    wrapped = public.encrypt(base64.b64encode(key), padding.PKCS1v15())
    body = base64.b64encode(message) if base64_message else message
    sealed = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor().update(body)
    return "$".join(base64.b64encode(part).decode() for part in (wrapped, iv, sealed))


def with_key(recipient: RsaCryptor, key: bytes, message: bytes) -> str:
    """A string-form value whose wrapped "key" is exactly ``key`` (any length)."""
    iv = os.urandom(16)
    public = serialization.load_pem_public_key(base64.b64decode(recipient.own_public_key()))
    wrapped = public.encrypt(key, padding.PKCS1v15())
    sealed = Cipher(algorithms.AES(key[:32].ljust(32, b"\0")), modes.CTR(iv)).encryptor().update(message)
    return "$".join(base64.b64encode(part).decode() for part in (wrapped, iv, sealed))


# --- round trips --------------------------------------------------------------------
@FEW
@given(data=st.binary(max_size=2048))
@example(data=b"")
@example(data=b"abcd")  # valid base64 text: must come back as is, not base64-decoded
@example(data=b'{"method": "average", "args": [], "kwargs": {"column": "age"}}')
def test_string_form_round_trips_any_bytes(alice: RsaCryptor, bob: RsaCryptor, data: bytes) -> None:
    value = alice.encrypt_to_str(data, bob.own_public_key())
    assert isinstance(value, str) and value.isascii()
    assert bob.decrypt_str(value) == data


@FEW
@given(data=st.binary(max_size=2048))
@example(data=b"")
def test_blob_form_round_trips_any_bytes(alice: RsaCryptor, bob: RsaCryptor, data: bytes) -> None:
    value = alice.encrypt_to_bytes(data, bob.own_public_key())
    assert isinstance(value, bytes)
    assert bob.decrypt_bytes(value) == data


@FEW
@given(data=st.binary(max_size=3000), plain_cuts=st.lists(st.integers(0, 3000), max_size=6),
       sealed_cuts=st.lists(st.integers(0, 4000), max_size=8))
def test_stream_round_trips_any_bytes_in_any_chunking(
    alice: RsaCryptor, bob: RsaCryptor, data: bytes, plain_cuts: list[int], sealed_cuts: list[int]
) -> None:
    sealed = b"".join(alice.encrypt_stream(pieces(data, plain_cuts), bob.own_public_key()))
    # Cuts land anywhere, so the header is often split across chunks.
    assert b"".join(bob.decrypt_stream(pieces(sealed, sealed_cuts))) == data


@pytest.mark.parametrize("size", [1, 3 * 65536 - 1, 3 * 65536, 3 * 65536 + 1, 4 * 3 * 65536 + 2])
def test_string_form_round_trips_across_its_internal_pieces(alice: RsaCryptor, size: int) -> None:
    data = os.urandom(size)
    assert alice.decrypt_str(alice.encrypt_to_str(data, alice.own_public_key())) == data


@FEW
@given(data=st.binary(max_size=3000), cuts=st.lists(st.integers(0, 3000), max_size=6))
def test_the_string_form_streamed_in_any_chunking_is_the_string_form(
    alice: RsaCryptor, bob: RsaCryptor, data: bytes, cuts: list[int]
) -> None:
    text = b"".join(alice.encrypt_str_stream(pieces(data, cuts), bob.own_public_key()))
    assert len(text) == alice.str_form_length(len(data), bob.own_public_key())
    assert bob.decrypt_str(text.decode("ascii")) == data


@pytest.mark.parametrize("size", [0, 1, 3 * 65536 + 1])
def test_the_streamed_string_form_has_the_announced_length_for_a_4096_bit_key(big: RsaCryptor, size: int) -> None:
    text = b"".join(big.encrypt_str_stream(chunked(os.urandom(size), 1000), big.own_public_key()))
    assert len(text) == big.str_form_length(size, big.own_public_key())
    assert len(big.encrypt_to_str(os.urandom(size), big.own_public_key())) == len(text)
    assert big.decrypt_str(text.decode()) is not None


def test_stream_decrypts_one_byte_at_a_time(alice: RsaCryptor) -> None:
    data = os.urandom(100)
    sealed = b"".join(alice.encrypt_stream([data], alice.own_public_key()))
    assert b"".join(alice.decrypt_stream(sealed[i : i + 1] for i in range(len(sealed)))) == data


def test_bytes_like_inputs_are_accepted(alice: RsaCryptor) -> None:
    own = alice.own_public_key()
    data = bytearray(b"bytes-like")
    assert alice.decrypt_str(alice.encrypt_to_str(memoryview(data), own)) == data
    assert alice.decrypt_bytes(bytearray(alice.encrypt_to_bytes(data, own))) == data
    blob = alice.encrypt_to_bytes(data, own)
    assert alice.decrypt_bytes(memoryview(b"xx" + blob)[2:]) == data


def test_stream_output_is_the_blob_form(alice: RsaCryptor) -> None:
    data = os.urandom(5000)
    chunks = list(alice.encrypt_stream(chunked(data, 1000), alice.own_public_key()))
    assert re.fullmatch(rb"[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+\$", chunks[0])
    assert [len(c) for c in chunks[1:]] == [1000] * 5  # chunk by chunk, nothing accumulated
    assert alice.decrypt_bytes(b"".join(chunks)) == data
    blob = alice.encrypt_to_bytes(data, alice.own_public_key())
    assert b"".join(alice.decrypt_stream(chunked(blob, 777))) == data


# --- the wire format, checked with cryptography directly -----------------------------
def test_string_form_is_wrapped_key_iv_and_aes_ctr_ciphertext(big: RsaCryptor, big_key: rsa.RSAPrivateKey) -> None:
    data = b'{"method": "sum", "kwargs": {}}'
    wrapped_b64, iv_b64, sealed_b64 = big.encrypt_to_str(data, big.own_public_key()).split("$")
    wrapped = base64.b64decode(wrapped_b64, validate=True)
    iv = base64.b64decode(iv_b64, validate=True)
    sealed = base64.b64decode(sealed_b64, validate=True)
    assert (len(wrapped), len(iv), len(sealed)) == (512, 16, len(data))
    key = big_key.decrypt(wrapped, padding.PKCS1v15())
    assert len(key) == 32
    assert Cipher(algorithms.AES(key), modes.CTR(iv)).decryptor().update(sealed) == data


def test_blob_form_is_an_ascii_header_then_raw_ciphertext(big: RsaCryptor, big_key: rsa.RSAPrivateKey) -> None:
    data = os.urandom(300)
    value = big.encrypt_to_bytes(data, big.own_public_key())
    wrapped_b64, iv_b64, sealed = value.split(b"$", 2)
    assert len(sealed) == len(data)
    key = big_key.decrypt(base64.b64decode(wrapped_b64, validate=True), padding.PKCS1v15())
    iv = base64.b64decode(iv_b64, validate=True)
    assert Cipher(algorithms.AES(key), modes.CTR(iv)).decryptor().update(sealed) == data


def test_every_value_has_a_fresh_key_and_iv(alice: RsaCryptor) -> None:
    own = alice.own_public_key()
    first, second = (alice.encrypt_to_str(b"same", own).split("$") for _ in range(2))
    assert first[0] != second[0] and first[1] != second[1]


def test_own_public_key_is_base64_of_the_pem_subject_public_key_info(
    big: RsaCryptor, big_key: rsa.RSAPrivateKey, pem4096: bytes
) -> None:
    pem = base64.b64decode(big.own_public_key(), validate=True)
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----\n") and pem.endswith(b"-----END PUBLIC KEY-----\n")
    key = serialization.load_pem_public_key(pem)
    assert isinstance(key, rsa.RSAPublicKey)
    assert (key.key_size, key.public_numbers().e) == (4096, 65537)
    assert key.public_numbers() == big_key.public_key().public_numbers()
    assert public_key_of(pem4096) == big.own_public_key()


def test_new_private_keys_are_unencrypted_traditional_rsa_pem(pem4096: bytes) -> None:
    assert pem4096.startswith(b"-----BEGIN RSA PRIVATE KEY-----\n")
    assert b"ENCRYPTED" not in pem4096
    key = serialization.load_pem_private_key(pem4096, password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 4096
    with pytest.raises(CryptoError, match="512 bits"):
        create_private_key_pem(512)


def test_is_a_cryptor(alice: RsaCryptor) -> None:
    assert isinstance(alice, Cryptor) and alice.encrypted is True


def test_parsed_public_keys_are_cached(alice: RsaCryptor, bob: RsaCryptor) -> None:
    rsa_cryptor._parse_public_key.cache_clear()
    for _ in range(3):
        alice.encrypt_to_str(b"x", bob.own_public_key())
    info = rsa_cryptor._parse_public_key.cache_info()
    assert (info.misses, info.hits) == (1, 2)


# --- UI compatibility ------------------------------------------------------------------
def test_ui_style_value_decrypts_to_the_message(alice: RsaCryptor) -> None:
    message = b'{"method": "count", "kwargs": {"column": "age"}}'
    assert alice.decrypt_str(ui_style(alice, message)) == message


@FEW
@given(message=st.binary(max_size=500))
def test_ui_style_value_of_any_bytes_decrypts(alice: RsaCryptor, message: bytes) -> None:
    assert alice.decrypt_str(ui_style(alice, message)) == message


def test_ui_style_key_with_a_plain_json_message_is_returned_as_is(alice: RsaCryptor) -> None:
    message = b'{"method": "count"}'
    assert alice.decrypt_str(ui_style(alice, message, base64_message=False)) == message


def test_ui_style_message_that_is_neither_base64_nor_json_is_an_error(alice: RsaCryptor) -> None:
    with pytest.raises(CryptoError, match="UI.*neither base64 nor JSON"):
        alice.decrypt_str(ui_style(alice, b"hello world", base64_message=False))


def test_ui_style_key_is_honoured_in_blob_form_without_message_decoding(alice: RsaCryptor) -> None:
    value = ui_style(alice, b"raw bytes", base64_message=False)
    wrapped, iv, sealed = value.split("$")
    blob = f"{wrapped}${iv}$".encode() + base64.b64decode(sealed)
    assert alice.decrypt_bytes(blob) == b"raw bytes"
    assert b"".join(alice.decrypt_stream(chunked(blob, 7))) == b"raw bytes"


def test_python_style_value_of_base64_text_is_not_decoded(alice: RsaCryptor) -> None:
    # vantage6 would base64-decode this plaintext (it is not JSON); the raw key says it was not the UI.
    assert alice.decrypt_str(alice.encrypt_to_str(b"QUJD", alice.own_public_key())) == b"QUJD"


@pytest.mark.parametrize(
    "key", [b"k" * 16, bytes(range(48)), base64.b64encode(bytes(16))], ids=["16", "48", "b64-of-16"]
)
def test_unwrapped_key_of_the_wrong_length_is_an_error(alice: RsaCryptor, key: bytes) -> None:
    with pytest.raises(CryptoError, match=rf"AES key is {len(key)} bytes, expected 32"):
        alice.decrypt_str(with_key(alice, key, b"{}"))


# --- rejection of bad input --------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "empty"),
        ("no separators at all", "no '\\$' separator"),
        ("QUJD$only-one", "only one '\\$' separator"),
        ("$QUJD$QUJD", "wrapped key part of the value is empty"),
        (f"not*base64${IV16}$QUJD", "wrapped key is not valid base64"),
        ("QUJD$Q*JD$QUJD", "IV is not valid base64"),
        ("QUJD$QUJDRA==$QUJD", "IV is 4 bytes, expected 16"),
        (f"QUJD${IV16}$", "wrapped key is 3 bytes, expected 256"),
        (f"QUJDé${IV16}$", "wrapped key is not valid base64"),
        ("QUJD$QUJDé$", "IV is not valid base64"),
        ("x" * (MAX_HEADER + 10) + "$a$b", "no '\\$' separator in its first 4096"),
    ],
)
def test_malformed_string_values_are_rejected_clearly(alice: RsaCryptor, value: str, message: str) -> None:
    with pytest.raises(CryptoError, match=message):
        alice.decrypt_str(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"", "empty"),
        (b"\x00\x01binary without separators", "no '\\$' separator"),
        (b"QUJD$\xff\xfe$ciphertext", "IV is not valid base64"),
    ],
)
def test_malformed_blobs_are_rejected_clearly(alice: RsaCryptor, value: bytes, message: str) -> None:
    with pytest.raises(CryptoError, match=message):
        alice.decrypt_bytes(value)


@FEW
@given(value=st.text(max_size=300))
def test_arbitrary_text_is_rejected(alice: RsaCryptor, value: str) -> None:
    with pytest.raises(CryptoError):
        alice.decrypt_str(value)


@FEW
@given(value=st.binary(max_size=300))
def test_arbitrary_bytes_are_rejected(alice: RsaCryptor, value: bytes) -> None:
    with pytest.raises(CryptoError):
        alice.decrypt_bytes(value)
    with pytest.raises(CryptoError):
        list(alice.decrypt_stream([value]))


@FEW
@given(data=st.binary(min_size=1, max_size=200), where=st.floats(0, 1, exclude_max=True),
       junk=st.sampled_from("!*é\n -_"))
def test_a_non_base64_character_anywhere_is_rejected(alice: RsaCryptor, data: bytes, where: float, junk: str) -> None:
    value = alice.encrypt_to_str(data, alice.own_public_key())
    at = int(where * len(value))
    with pytest.raises(CryptoError):
        alice.decrypt_str(value[:at] + junk + value[at + 1 :])


@FEW
@given(data=st.binary(max_size=200), where=st.floats(0, 1, exclude_max=True))
def test_truncation_inside_the_header_is_rejected(alice: RsaCryptor, data: bytes, where: float) -> None:
    value = alice.encrypt_to_str(data, alice.own_public_key())
    header = value.rindex("$") + 1
    with pytest.raises(CryptoError):
        alice.decrypt_str(value[: int(where * header)])
    blob = alice.encrypt_to_bytes(data, alice.own_public_key())
    with pytest.raises(CryptoError):
        alice.decrypt_bytes(blob[: int(where * header)])
    with pytest.raises(CryptoError):
        list(alice.decrypt_stream(chunked(blob[: int(where * header)], 5)))


def test_ciphertext_cut_off_mid_quantum_is_rejected(alice: RsaCryptor) -> None:
    value = alice.encrypt_to_str(b"0123456789", alice.own_public_key())
    with pytest.raises(CryptoError, match="ciphertext is not valid base64"):
        alice.decrypt_str(value[:-1])


def test_padding_inside_the_ciphertext_is_rejected(alice: RsaCryptor) -> None:
    value = alice.encrypt_to_str(os.urandom(3 * 65536 + 30), alice.own_public_key())
    body = value.rindex("$") + 1
    at = body + 4 * 65536 - 1  # the last character of the first internal piece
    with pytest.raises(CryptoError, match="not valid base64"):
        alice.decrypt_str(value[:at] + "=" + value[at + 1 :])


def test_truncated_wrapped_key_is_rejected(alice: RsaCryptor) -> None:
    wrapped, iv, sealed = alice.encrypt_to_str(b"{}", alice.own_public_key()).split("$")
    shorter = base64.b64encode(base64.b64decode(wrapped)[:-1]).decode()
    with pytest.raises(CryptoError, match="wrapped key is 255 bytes, expected 256"):
        alice.decrypt_str(f"{shorter}${iv}${sealed}")


def test_wrong_iv_length_is_rejected(alice: RsaCryptor) -> None:
    wrapped, _, sealed = alice.encrypt_to_str(b"{}", alice.own_public_key()).split("$")
    with pytest.raises(CryptoError, match="IV is 12 bytes, expected 16"):
        alice.decrypt_str(f"{wrapped}${base64.b64encode(bytes(12)).decode()}${sealed}")


def test_value_for_a_key_of_another_size_is_rejected(alice: RsaCryptor, big: RsaCryptor) -> None:
    with pytest.raises(CryptoError, match="wrapped key is 512 bytes, expected 256 for our RSA-2048 key"):
        alice.decrypt_str(big.encrypt_to_str(b"{}", big.own_public_key()))


def test_value_for_another_key_of_the_same_size_is_rejected(
    alice: RsaCryptor, alice_key: rsa.RSAPrivateKey, bob: RsaCryptor
) -> None:
    # With implicit rejection, unwrapping with the wrong key yields a random message, which
    # has the length of a key (1 time in ~245) - undetectable without a MAC. Pick values whose
    # wrong unwrapping is detectable, as nearly all are.
    for _ in range(20):
        value = alice.encrypt_to_bytes(b"secret", bob.own_public_key())
        wrong = unwrap_with(alice_key, base64.b64decode(value.split(b"$")[0]))
        if wrong is None or len(wrong) not in (32, 44):
            break
    with pytest.raises(CryptoError, match="another organization's key|AES key is"):
        alice.decrypt_bytes(value)
    with pytest.raises(CryptoError):
        list(alice.decrypt_stream([value]))


def test_corrupted_wrapped_key_is_rejected(alice: RsaCryptor, alice_key: rsa.RSAPrivateKey) -> None:
    for _ in range(20):
        wrapped, iv, sealed = alice.encrypt_to_str(b"{}", alice.own_public_key()).split("$")
        damaged = bytearray(base64.b64decode(wrapped))
        damaged[100] ^= 0x01
        wrong = unwrap_with(alice_key, bytes(damaged))
        if wrong is None or len(wrong) not in (32, 44):
            break
    with pytest.raises(CryptoError):
        alice.decrypt_str(f"{base64.b64encode(bytes(damaged)).decode()}${iv}${sealed}")


def test_empty_stream_is_rejected(alice: RsaCryptor) -> None:
    with pytest.raises(CryptoError, match="stream is empty"):
        list(alice.decrypt_stream([]))
    with pytest.raises(CryptoError, match="stream is empty"):
        list(alice.decrypt_stream([b"", b""]))


def test_stream_ending_inside_its_header_is_rejected(alice: RsaCryptor) -> None:
    sealed = b"".join(alice.encrypt_stream([b"data"], alice.own_public_key()))
    first = sealed.index(b"$")
    with pytest.raises(CryptoError, match=rf"ended inside its header \(after {first + 5} bytes\)"):
        list(alice.decrypt_stream([sealed[:first], sealed[first : first + 5]]))


def test_stream_without_a_header_fails_within_its_first_bytes(alice: RsaCryptor) -> None:
    produced = []

    def endless() -> Iterator[bytes]:
        while True:
            produced.append(1)
            yield b"x" * 1000

    with pytest.raises(CryptoError, match="no '\\$'-separated header in its first 4096 bytes"):
        list(alice.decrypt_stream(endless()))
    assert len(produced) == 5


def test_stream_header_split_across_chunks_with_a_bad_iv_is_rejected(alice: RsaCryptor) -> None:
    wrapped = alice.encrypt_to_str(b"", alice.own_public_key()).split("$")[0].encode()
    chunks = [wrapped[:10], wrapped[10:] + b"$QUJ", b"D$", b"ciphertext"]
    with pytest.raises(CryptoError, match="IV is 3 bytes, expected 16"):
        list(alice.decrypt_stream(chunks))


@pytest.mark.parametrize(
    ("public_key", "message"),
    [
        ("", "no public key"),
        ("not base64!", "not base64"),
        (base64.b64encode(b"-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n").decode(),
         "does not decode to a PEM public key"),
        (base64.b64encode(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)).decode(),
         "not an RSA key"),
        (b"bytes", "must be a str"),
    ],
)
def test_unusable_public_keys_are_rejected_at_the_call(alice: RsaCryptor, public_key: str, message: str) -> None:
    for encrypt in (alice.encrypt_to_str, alice.encrypt_to_bytes, alice.encrypt_stream):
        with pytest.raises(CryptoError, match=message):
            encrypt(b"data", public_key)  # the stream too: before its first chunk is asked for


# --- loading keys ------------------------------------------------------------------------
def test_from_file_loads_a_key_and_its_public_key(tmp_path: Path, pem4096: bytes, big: RsaCryptor) -> None:
    path = tmp_path / "private_key.pem"
    path.write_bytes(pem4096)
    loaded = RsaCryptor.from_file(path)
    assert loaded.own_public_key() == big.own_public_key()
    assert loaded.decrypt_str(big.encrypt_to_str(b"{}", big.own_public_key())) == b"{}"


def test_from_file_loads_pkcs8_keys_too(tmp_path: Path, alice: RsaCryptor, alice_key: rsa.RSAPrivateKey) -> None:
    path = tmp_path / "pkcs8.pem"
    path.write_bytes(alice_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    assert RsaCryptor.from_file(str(path)).own_public_key() == alice.own_public_key()


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d, a: d / "missing.pem", "does not exist"),
        (lambda d, a: d, "is a directory"),
        (lambda d, a: _write(d / "junk.pem", b"not a key at all\n"), "not a PEM private key"),
        (lambda d, a: _write(d / "empty.pem", b""), "not a PEM private key"),
        (lambda d, a: _write(d / "public.pem", a.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)), "this is a public key"),
        (lambda d, a: _write(d / "locked.pem", a.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"))), "encrypted with a password"),
        (lambda d, a: _write(d / "ec.pem", ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())),
         "not an RSA key"),
    ],
)
def test_from_file_errors_name_the_file(tmp_path: Path, alice_key: rsa.RSAPrivateKey, make, message: str) -> None:
    path = make(tmp_path, alice_key)
    with pytest.raises(CryptoError, match=message) as caught:
        RsaCryptor.from_file(path)
    assert str(path) in str(caught.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_from_file_unreadable(tmp_path: Path, pem4096: bytes) -> None:
    path = _write(tmp_path / "secret.pem", pem4096)
    path.chmod(0)
    with pytest.raises(CryptoError, match=f"cannot read private key file {re.escape(str(path))}"):
        RsaCryptor.from_file(path)


def test_constructor_rejects_non_keys() -> None:
    with pytest.raises(CryptoError, match="not a PEM private key"):
        RsaCryptor(b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n")
    with pytest.raises(CryptoError, match="not a PEM private key"):
        public_key_of(b"nonsense")


def test_json_rule_never_changes_python_values(alice: RsaCryptor) -> None:
    # Non-JSON, non-UTF-8 plaintext (which vantage6's decrypt fails on) comes back exactly.
    data = bytes(range(256))
    with pytest.raises(ValueError):
        json.loads(data)
    assert alice.decrypt_str(alice.encrypt_to_str(data, alice.own_public_key())) == data
    assert binascii.hexlify(alice.decrypt_str(alice.encrypt_to_str(b"\x80", alice.own_public_key()))) == b"80"


def test_stream_round_trip_memory_is_bounded_by_a_few_chunks(alice: RsaCryptor) -> None:
    chunk = 256 * 1024
    data = os.urandom(32 * chunk)
    view = memoryview(data)
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        sealed = alice.encrypt_stream((view[i : i + chunk] for i in range(0, len(data), chunk)), alice.own_public_key())
        total = sum(len(piece) for piece in alice.decrypt_stream(sealed))
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    assert total == len(data)
    assert peak < 4 * chunk  # the input chunk's ciphertext, its plaintext, the previous plaintext


# --- the base64 codec -----------------------------------------------------------------
def test_the_simd_base64_codec_is_in_use() -> None:
    # The throughput target (benchmarks/crypto_throughput.py) holds only with pybase64's C codec.
    assert rsa_cryptor.pybase64 is not None
    assert "C extension active" in rsa_cryptor.pybase64.get_version()


def test_padding_after_a_complete_quantum_is_rejected(alice: RsaCryptor) -> None:
    value = alice.encrypt_to_str(b"012345", alice.own_public_key())  # 6 bytes: 8 characters, no padding
    with pytest.raises(CryptoError, match="ciphertext is not valid base64"):
        alice.decrypt_str(value + "=")


def test_without_pybase64_binascii_does_the_same_job(pem4096: bytes, tmp_path: Path) -> None:
    # A fresh interpreter where importing pybase64 fails, as on a platform without it.
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(pem4096)
    script = f"""
import sys
sys.modules["pybase64"] = None
from v6node.adapters.crypto import rsa_cryptor
from v6node.domain.errors import CryptoError
assert rsa_cryptor.pybase64 is None
cryptor = rsa_cryptor.RsaCryptor.from_file({str(key_file)!r})
data = bytes(range(256)) * 2000
value = cryptor.encrypt_to_str(data, cryptor.own_public_key())
assert cryptor.decrypt_str(value) == data
for bad in (value[:-1], value[:-9] + "!" + value[-8:]):
    try:
        cryptor.decrypt_str(bad)
    except CryptoError as exc:
        assert "not valid base64" in str(exc), exc
    else:
        raise AssertionError("corrupted base64 was accepted")
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_a_private_key_file_readable_by_others_is_warned_about(tmp_path: Path, alice_pem: bytes, caplog) -> None:
    key = tmp_path / "privkey.pem"
    key.write_bytes(alice_pem)
    key.chmod(0o600)
    RsaCryptor.from_file(key)
    assert "can be read by other users" not in caplog.text
    key.chmod(0o644)
    RsaCryptor.from_file(key)
    assert f"private key file {key} can be read by other users (mode 0644)" in caplog.text
