"""The cryptor of encrypted collaborations: RSA-wrapped AES-256-CTR, byte-compatible with vantage6 4.x (spec §5.3)."""
from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

try:
    import pybase64
except ImportError:  # a platform without it: binascii, strict too, but ≈ 5× slower to decode
    pybase64 = None  # type: ignore[assignment]

from v6node.adapters.crypto.base64_cryptor import aligned, base64_length
from v6node.domain.errors import CryptoError
from v6node.ports.cryptor import Cryptor

log = logging.getLogger("v6node.crypto")

SEPARATOR = "$"
KEY_BYTES = 32
IV_BYTES = 16
DEFAULT_KEY_BITS = 4096
PUBLIC_EXPONENT = 65537
# Separators are looked for in this many leading bytes only: the header of a 16384-bit
# RSA key is 2,759 bytes, so anything longer is not a header (and garbage without a
# separator fails fast instead of being scanned to its end).
MAX_HEADER = 4096
# The string form is en/decoded in pieces that stay in the CPU cache; 192 KiB of
# plaintext (a multiple of 3, so the base64 pieces concatenate) measured fastest
# on 64 MiB (benchmarks/crypto_throughput.py).
_PLAIN_STEP = 3 * 65536
_TEXT_STEP = 4 * 65536
_PUBLIC_KEY_CACHE = 64


def create_private_key_pem(bits: int = DEFAULT_KEY_BITS) -> bytes:
    """A new RSA private key as unencrypted "BEGIN RSA PRIVATE KEY" PEM, as vantage6 writes it."""
    try:
        key = rsa.generate_private_key(public_exponent=PUBLIC_EXPONENT, key_size=bits)
    except ValueError as exc:
        raise CryptoError(f"cannot create an RSA key of {bits} bits: {exc}") from exc
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.TraditionalOpenSSL,
        encryption_algorithm=serialization.NoEncryption(),
    )


def public_key_of(private_key_pem: bytes) -> str:
    """The public key of ``private_key_pem`` in the server's form: base64 of the PEM SubjectPublicKeyInfo."""
    return _server_form(_load_private_key(private_key_pem))


class RsaCryptor(Cryptor):
    """Encrypts for an organization's public key and decrypts what was encrypted for ours.

    Every value carries a fresh random AES-256 key and IV; the key is wrapped with the
    recipient's RSA key (PKCS#1 v1.5). There is no MAC, as in vantage6: flipped
    ciphertext bytes decrypt to flipped plaintext bytes and cannot be detected. Damaged
    headers, wrapped keys, IVs and base64 are detected and raise ``CryptoError``; so is a
    value for another key, except about once in (key bytes - 11): PKCS#1 v1.5 unwrapping
    with implicit rejection (OpenSSL 3.2+) gives a random message instead of an error,
    and when that has 32 bytes it passes for a key and the plaintext is garbage.

    UI compatibility (the vantage6 browser UI wraps the base64 *text* of the AES key and
    base64-encodes the message before AES): when the unwrapped key is the base64 text of
    32 bytes, the value came from the UI, and the string-form plaintext is base64-decoded
    (strictly). If that fails, a JSON plaintext is returned as it is (what vantage6 does
    with JSON) and anything else raises ``CryptoError`` (vantage6 lets its base64 error
    propagate). A raw 32-byte key means a Python producer (vantage6 or us): the plaintext
    is returned exactly, never base64-decoded, so arbitrary bytes round-trip. vantage6
    applies the message rule to every non-JSON plaintext instead; it fails on non-UTF-8
    plaintexts, which we decrypt. The key rule applies to every form (vantage6 skips it
    for streams); the message rule only to the string form, as in vantage6.
    """

    encrypted = True

    def __init__(self, private_key_pem: bytes) -> None:
        self._private_key = _load_private_key(private_key_pem)
        self._wrapped_key_bytes = (self._private_key.key_size + 7) // 8
        self._own_public_key = _server_form(self._private_key)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> RsaCryptor:
        """Load the private key PEM file at ``path``; every problem names the file."""
        path = Path(path)
        try:
            pem = path.read_bytes()
        except FileNotFoundError as exc:
            raise CryptoError(f"private key file {path} does not exist") from exc
        except IsADirectoryError as exc:
            raise CryptoError(f"private key file {path} is a directory") from exc
        except OSError as exc:
            raise CryptoError(f"cannot read private key file {path}: {exc.strerror or exc}") from exc
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            log.warning(
                "private key file %s can be read by other users (mode %04o): anyone who reads it can decrypt "
                "this organization's data; restrict it with: chmod 600 %s", path, mode, path,
            )
        try:
            return cls(pem)
        except CryptoError as exc:
            raise CryptoError(f"private key file {path}: {exc}") from exc

    def own_public_key(self) -> str:
        return self._own_public_key

    # --- encryption ------------------------------------------------------------------
    def encrypt_to_str(self, data: bytes, public_key: str) -> str:
        header, encryptor = self._seal(public_key)
        plain = _byte_view(data)
        parts = [header]
        for start in range(0, len(plain), _PLAIN_STEP):
            parts.append(_b64encode(encryptor.update(plain[start : start + _PLAIN_STEP])))
        return "".join(parts)

    def encrypt_to_bytes(self, data: bytes, public_key: str) -> bytes:
        header, encryptor = self._seal(public_key)
        return b"".join((header.encode("ascii"), encryptor.update(_byte_view(data))))

    def encrypt_stream(self, chunks: Iterable[bytes], public_key: str) -> Iterator[bytes]:
        # The key is checked here, at the call, not at the first ``next``.
        header, encryptor = self._seal(public_key)
        return _sealed_chunks(header.encode("ascii"), encryptor, chunks)

    def encrypt_str_stream(self, chunks: Iterable[bytes], public_key: str) -> Iterator[bytes]:
        header, encryptor = self._seal(public_key)
        return _sealed_text(header.encode("ascii"), encryptor, chunks)

    def str_form_length(self, size: int, public_key: str) -> int:
        wrapped = (_parse_public_key(public_key).key_size + 7) // 8
        return base64_length(wrapped) + len(SEPARATOR) + base64_length(IV_BYTES) + len(SEPARATOR) + base64_length(size)

    # --- decryption ------------------------------------------------------------------
    def decrypt_str(self, value: str) -> bytes:
        if not isinstance(value, str):
            raise CryptoError(f"the string form must be str, got {type(value).__name__}")
        wrapped, iv, body = _split_header(value, SEPARATOR)
        decryptor, from_ui = self._open(wrapped, iv)
        pieces = []
        end = len(value)
        whole_piece = _TEXT_STEP // 4 * 3
        for start in range(body, end, _TEXT_STEP):
            sealed = _b64decode(value[start : start + _TEXT_STEP], "the ciphertext")
            if len(sealed) != whole_piece and start + _TEXT_STEP < end:
                raise CryptoError("the ciphertext is not valid base64 (padding before its end)")
            pieces.append(decryptor.update(sealed))
        plaintext = b"".join(pieces)
        return _ui_message(plaintext) if from_ui else plaintext

    def decrypt_bytes(self, value: bytes) -> bytes:
        view = _byte_view(value)
        # Offsets found in the header are offsets in ``view``; bytes are searched without a copy.
        head = value if isinstance(value, bytes) else bytes(view[:MAX_HEADER])
        wrapped, iv, body = _split_header(head, b"$")
        decryptor, _ = self._open(wrapped, iv)
        return decryptor.update(view[body:])

    def decrypt_stream(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        head = bytearray()
        decryptor = None
        for chunk in chunks:
            if decryptor is None:
                before = len(head)
                # Copy at most the header's worth; the rest is decrypted from the chunk itself.
                head += _byte_view(chunk)[: MAX_HEADER - before]
                end = _header_end(head)
                if end < 0:
                    if len(head) >= MAX_HEADER:
                        raise CryptoError(f"the stream has no '$'-separated header in its first {MAX_HEADER} bytes")
                    continue
                wrapped, iv, _ = _split_header(bytes(head[:end]), b"$")
                decryptor, _ = self._open(wrapped, iv)
                rest = _byte_view(chunk)[end - before :]
                head = bytearray()
            else:
                rest = _byte_view(chunk)
            opened = decryptor.update(rest)
            del chunk, rest  # the consumer may keep us suspended for long: hold no input meanwhile
            if opened:
                yield opened
        if decryptor is None:
            if not head:
                raise CryptoError("the stream is empty: expected a 'key$iv$' header and ciphertext")
            raise CryptoError(f"the stream ended inside its header (after {len(head)} bytes)")

    # --- internals -------------------------------------------------------------------
    def _seal(self, public_key: str) -> tuple[str, CipherContext]:
        """A fresh AES key and IV for ``public_key``: the ``key$iv$`` header and the encryptor."""
        if not isinstance(public_key, str):
            raise CryptoError(f"the public key must be a str (base64 of PEM), got {type(public_key).__name__}")
        recipient = _parse_public_key(public_key)
        key = os.urandom(KEY_BYTES)
        while _is_utf8(key):
            # vantage6 would take a UTF-8 key for the UI's base64 text and fail on it.
            key = os.urandom(KEY_BYTES)
        iv = os.urandom(IV_BYTES)
        try:
            wrapped = recipient.encrypt(key, padding.PKCS1v15())
        except ValueError as exc:
            raise CryptoError(f"cannot wrap the AES key with the recipient's public key: {exc}") from exc
        header = f"{_b64encode(wrapped)}{SEPARATOR}{_b64encode(iv)}{SEPARATOR}"
        return header, Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()

    def _open(self, wrapped_b64: str | bytes, iv_b64: str | bytes) -> tuple[CipherContext, bool]:
        """The decryptor for a header's parts, and whether the key came in the UI's form."""
        iv = _b64decode(iv_b64, "the IV")
        if len(iv) != IV_BYTES:
            raise CryptoError(f"the IV is {len(iv)} bytes, expected {IV_BYTES}")
        wrapped = _b64decode(wrapped_b64, "the wrapped key")
        if len(wrapped) != self._wrapped_key_bytes:
            raise CryptoError(
                f"the wrapped key is {len(wrapped)} bytes, expected {self._wrapped_key_bytes} for our "
                f"RSA-{self._private_key.key_size} key (truncated, or encrypted for another key)"
            )
        try:
            unwrapped = self._private_key.decrypt(wrapped, padding.PKCS1v15())
        except ValueError as exc:
            raise CryptoError(
                "cannot unwrap the AES key with our private key: the value was encrypted for another "
                "organization's key, or it is corrupted"
            ) from exc
        key, from_ui = _session_key(unwrapped)
        return Cipher(algorithms.AES(key), modes.CTR(iv)).decryptor(), from_ui


def _sealed_chunks(header: bytes, encryptor: CipherContext, chunks: Iterable[bytes]) -> Iterator[bytes]:
    yield header
    for chunk in chunks:
        sealed = encryptor.update(chunk)
        del chunk  # the consumer may keep us suspended for long: hold no input meanwhile
        if sealed:
            yield sealed


def _sealed_text(header: bytes, encryptor: CipherContext, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The string form, piece by piece: pieces of a multiple of 3 bytes encode to base64 that concatenates."""
    yield header
    for piece in aligned(chunks, 3):
        sealed = encryptor.update(piece)
        del piece
        yield _b64encode(sealed).encode("ascii")


def _session_key(unwrapped: bytes) -> tuple[bytes, bool]:
    if len(unwrapped) == KEY_BYTES:
        return unwrapped, False
    try:
        key = _strict_b64decode(unwrapped)
    except ValueError:
        key = b""
    if len(key) == KEY_BYTES:
        return key, True
    raise CryptoError(
        f"the unwrapped AES key is {len(unwrapped)} bytes, expected {KEY_BYTES} "
        "(or their base64 text): the value is corrupted or was encrypted for another key"
    )


def _ui_message(plaintext: bytes) -> bytes:
    try:
        return _strict_b64decode(plaintext)
    except ValueError as exc:
        try:
            json.loads(plaintext)
        except ValueError:
            raise CryptoError(
                f"the message came from the UI (its key is base64 text) but its plaintext is neither "
                f"base64 nor JSON ({exc})"
            ) from exc
        return plaintext


def _split_header(value: str | bytes, sep: str | bytes) -> tuple[str | bytes, str | bytes, int]:
    """The wrapped key and IV parts of ``key$iv$...``, and where the ciphertext starts."""
    if not value:
        raise CryptoError("the value is empty: expected 'key$iv$ciphertext'")
    first = value.find(sep, 0, MAX_HEADER)  # type: ignore[arg-type]  # sep is of value's type
    second = value.find(sep, first + 1, MAX_HEADER) if first >= 0 else -1  # type: ignore[arg-type]
    if second < 0:
        found = "no" if first < 0 else "only one"
        raise CryptoError(
            f"the value is not in the encrypted form 'key$iv$ciphertext': {found} '$' separator "
            f"in its first {MAX_HEADER} characters"
        )
    if first == 0:
        raise CryptoError("the wrapped key part of the value is empty")
    return value[:first], value[first + 1 : second], second + 1


def _header_end(head: bytearray) -> int:
    first = head.find(b"$")
    second = head.find(b"$", first + 1) if first >= 0 else -1
    return second + 1 if second >= 0 else -1


# Base64 decoding was 3/4 of a string-form decryption with binascii (≈ 0.4 GB/s); pybase64's
# SIMD codec decodes and encodes ≈ 2 GB/s (benchmarks/crypto_throughput.py).
# Both are strict: only the alphabet, padding only at the end, otherwise ValueError
# (binascii.Error, or a plain ValueError for a str with non-ASCII characters). pybase64
# also refuses padding after a complete quantum ("AAAA="), which binascii lets through
# and no encoder writes.
if pybase64 is not None:

    def _b64encode(data: bytes | memoryview) -> str:
        return pybase64.b64encode_as_string(data)

    def _strict_b64decode(text: str | bytes | memoryview) -> bytes:
        return pybase64.b64decode(text, validate=True)

else:

    def _b64encode(data: bytes | memoryview) -> str:
        return binascii.b2a_base64(data, newline=False).decode("ascii")

    def _strict_b64decode(text: str | bytes | memoryview) -> bytes:
        return binascii.a2b_base64(text, strict_mode=True)


def _b64decode(text: str | bytes | memoryview, what: str) -> bytes:
    try:
        return _strict_b64decode(text)
    except ValueError as exc:
        raise CryptoError(f"{what} is not valid base64 ({exc})") from exc


def _byte_view(data: bytes) -> memoryview:
    try:
        view = memoryview(data)
    except TypeError as exc:
        raise CryptoError(f"expected bytes, got {type(data).__name__}") from exc
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _load_private_key(pem: bytes) -> rsa.RSAPrivateKey:
    if isinstance(pem, str):
        pem = pem.encode("ascii", "replace")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError as exc:
        raise CryptoError(
            "the private key is encrypted with a password; vantage6 nodes use an unencrypted PEM key"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        if b"PUBLIC KEY-----" in pem:
            raise CryptoError("this is a public key; a private key (PEM) is needed") from exc
        raise CryptoError("not a PEM private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CryptoError(f"the private key is not an RSA key ({type(key).__name__})")
    return key


def _server_form(private_key: rsa.RSAPrivateKey) -> str:
    pem = private_key.public_key().public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    return base64.b64encode(pem).decode("ascii")


@functools.lru_cache(maxsize=_PUBLIC_KEY_CACHE)
def _parse_public_key(public_key: str) -> rsa.RSAPublicKey:
    """An organization's public key from the server's form (only successes are cached)."""
    if not public_key:
        raise CryptoError("no public key: the organization has not uploaded one")
    try:
        pem = _strict_b64decode(public_key)
    except ValueError as exc:
        raise CryptoError(f"the public key is not base64 of a PEM key ({exc})") from exc
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CryptoError("the public key does not decode to a PEM public key") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise CryptoError(f"the public key is not an RSA key ({type(key).__name__})")
    return key
