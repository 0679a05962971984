"""Two-factor codes (RFC 6238 TOTP, SHA-1, 6 digits, 30 s) as an authenticator app makes them."""
from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import time

import httpx


def totp(secret: str, at: float | None = None) -> str:
    key = base64.b32decode(secret + "=" * (-len(secret) % 8), casefold=True)
    counter = int((time.time() if at is None else at) // 30)
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    return f"{(struct.unpack('>I', digest[offset:offset + 4])[0] & 0x7FFFFFFF) % 1_000_000:06d}"


def log_in(http: httpx.Client, username: str, password: str, secrets: dict[str, str]) -> dict:
    """POST /token/user on a server that may want a code: the first login of a user sets up
    two-factor authentication (its secret is kept in ``secrets``), later ones send the code."""
    body = {"username": username, "password": password}
    answer = http.post("/token/user", json=body).json()
    if "otp_secret" in answer:
        secrets[username] = answer["otp_secret"]
        answer = http.post("/token/user", json=body).json()
    if "access_token" not in answer and username in secrets:
        answer = http.post("/token/user", json={**body, "mfa_code": totp(secrets[username])}).json()
    if "access_token" not in answer:
        raise RuntimeError(f"could not log in as {username}: {answer}")
    return answer
