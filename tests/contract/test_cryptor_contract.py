"""One Cryptor contract, run against Base64Cryptor (unencrypted collaborations) and RsaCryptor."""
from __future__ import annotations

from collections.abc import Iterator

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from v6node.adapters.crypto.base64_cryptor import Base64Cryptor
from v6node.adapters.crypto.rsa_cryptor import RsaCryptor, create_private_key_pem
from v6node.domain.errors import CryptoError
from v6node.ports.cryptor import Cryptor

FEW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@attrs.frozen
class Subject:
    cryptor: Cryptor
    address: str  # a public key this cryptor can decrypt what is encrypted for


@pytest.fixture(scope="module", params=["base64", "rsa"])
def subject(request: pytest.FixtureRequest) -> Subject:
    if request.param == "base64":
        cryptor: Cryptor = Base64Cryptor()
    else:
        cryptor = RsaCryptor(create_private_key_pem(2048))
    return Subject(cryptor, cryptor.own_public_key())


def pieces(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    bounds = [0, *sorted(min(c, len(data)) for c in cuts), len(data)]
    for start, end in zip(bounds, bounds[1:], strict=False):
        yield data[start:end]


def test_is_a_cryptor_and_says_whether_it_encrypts(subject: Subject) -> None:
    assert isinstance(subject.cryptor, Cryptor)
    assert isinstance(subject.cryptor.encrypted, bool)
    # An encrypting cryptor has a public key to publish; the base64 one has none.
    assert bool(subject.cryptor.own_public_key()) is subject.cryptor.encrypted


@FEW
@given(data=st.binary(max_size=1500))
def test_string_form_round_trips(subject: Subject, data: bytes) -> None:
    value = subject.cryptor.encrypt_to_str(data, subject.address)
    assert isinstance(value, str) and value.isascii()
    assert subject.cryptor.decrypt_str(value) == data


@FEW
@given(data=st.binary(max_size=1500))
def test_blob_form_round_trips(subject: Subject, data: bytes) -> None:
    value = subject.cryptor.encrypt_to_bytes(data, subject.address)
    assert isinstance(value, bytes)
    assert subject.cryptor.decrypt_bytes(value) == data


@FEW
@given(data=st.binary(max_size=1500), plain_cuts=st.lists(st.integers(0, 1500), max_size=5),
       sealed_cuts=st.lists(st.integers(0, 2500), max_size=6))
def test_stream_round_trips_in_any_chunking(
    subject: Subject, data: bytes, plain_cuts: list[int], sealed_cuts: list[int]
) -> None:
    sealed = list(subject.cryptor.encrypt_stream(pieces(data, plain_cuts), subject.address))
    assert all(isinstance(chunk, bytes) for chunk in sealed)
    joined = b"".join(sealed)
    opened = list(subject.cryptor.decrypt_stream(pieces(joined, sealed_cuts)))
    assert b"".join(opened) == data


@FEW
@given(data=st.binary(max_size=800))
def test_a_stream_is_the_blob_form(subject: Subject, data: bytes) -> None:
    streamed = b"".join(subject.cryptor.encrypt_stream(pieces(data, [100, 200]), subject.address))
    assert subject.cryptor.decrypt_bytes(streamed) == data
    blob = subject.cryptor.encrypt_to_bytes(data, subject.address)
    assert b"".join(subject.cryptor.decrypt_stream(pieces(blob, [3, 50]))) == data


def test_a_large_value_round_trips(subject: Subject) -> None:
    data = bytes(range(256)) * 4096 + b"tail"  # 1 MiB and a bit
    assert subject.cryptor.decrypt_str(subject.cryptor.encrypt_to_str(data, subject.address)) == data
    assert subject.cryptor.decrypt_bytes(subject.cryptor.encrypt_to_bytes(data, subject.address)) == data
    sealed = subject.cryptor.encrypt_stream(pieces(data, list(range(0, len(data), 65536))), subject.address)
    assert b"".join(subject.cryptor.decrypt_stream(sealed)) == data


@pytest.mark.parametrize("value", ["%%% not valid %%%", "naïve", "QUJ", "QQ==QQ=="])
def test_garbage_strings_are_crypto_errors(subject: Subject, value: str) -> None:
    with pytest.raises(CryptoError):
        subject.cryptor.decrypt_str(value)


@pytest.mark.parametrize("value", [b"\xff\xfe\x00garbage", b"QUJ", b"%%%$%%%$%%%"])
def test_garbage_bytes_are_crypto_errors(subject: Subject, value: bytes) -> None:
    with pytest.raises(CryptoError):
        subject.cryptor.decrypt_bytes(value)
    with pytest.raises(CryptoError):
        list(subject.cryptor.decrypt_stream([value]))


@FEW
@given(data=st.binary(min_size=1, max_size=300))
def test_a_string_missing_its_last_character_is_a_crypto_error(subject: Subject, data: bytes) -> None:
    value = subject.cryptor.encrypt_to_str(data, subject.address)
    with pytest.raises(CryptoError):
        subject.cryptor.decrypt_str(value[:-1])
