"""What the operator's commands ask the server as a person (not as the node): version, user login, key upload."""
from __future__ import annotations

from typing import Any

import httpx
from attrs import frozen

from v6node.domain.errors import AuthenticationFailed, NodeError, ServerRejected, ServerUnavailable


class MfaCodeNeeded(AuthenticationFailed):
    """The server wants the user's two-factor code; log in again with it."""


@frozen
class UserOrganization:
    id: int
    name: str


@frozen
class NodeCollaboration:
    node_name: str
    collaboration: str
    encrypted: bool


class HttpxOperatorApi:
    """Blocking calls to ``api_base`` (e.g. ``https://v6.example.org:443/api``); a user's token
    after ``log_in``. Connection errors become ``ServerUnavailable``; refused logins
    ``AuthenticationFailed``; other 4xx/5xx ``ServerRejected``."""

    def __init__(self, api_base: str, timeout: float = 30.0, transport: httpx.BaseTransport | None = None) -> None:
        self.api_base = api_base.rstrip("/")
        self._client = httpx.Client(base_url=self.api_base + "/", timeout=timeout, transport=transport)
        self._user_id: int | None = None

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpxOperatorApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ServerUnavailable(f"{method} {self.api_base}/{path}: {exc or type(exc).__name__}") from exc

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        if response.status_code >= 400:
            raise ServerRejected(response.status_code, _message(response), method, f"{self.api_base}/{path}")
        try:
            return response.json()
        except ValueError as exc:
            raise ServerRejected(response.status_code, "the answer is not JSON", method, f"{self.api_base}/{path}") from exc

    def server_version(self) -> str:
        body = self._json("GET", "version")
        return str(body.get("version") if isinstance(body, dict) else body)

    def log_in(self, username: str, password: str, mfa_code: str | None = None) -> None:
        """Log in as a user; ``MfaCodeNeeded`` when the server asks for a two-factor code."""
        body: dict[str, str] = {"username": username, "password": password}
        if mfa_code:
            body["mfa_code"] = mfa_code
        response = self._request("POST", "token/user", json=body)
        if response.status_code in (400, 401):
            raise AuthenticationFailed(f"the server refused the login of user '{username}': {_message(response)}")
        if response.status_code >= 400:
            raise ServerRejected(response.status_code, _message(response), "POST", f"{self.api_base}/token/user")
        answer = response.json()
        if "access_token" in answer:
            self._client.headers["Authorization"] = f"Bearer {answer['access_token']}"
            self._user_id = int(str(answer.get("user_url", "")).rstrip("/").rsplit("/", 1)[-1])
            return
        if "qr_uri" in answer:
            raise AuthenticationFailed(
                f"user '{username}' has not set up two-factor authentication, which this server requires: "
                "log in once in the vantage6 UI to set it up, then try again"
            )
        if mfa_code is None and "two-factor" in str(answer.get("msg", "")):
            raise MfaCodeNeeded(str(answer.get("msg")))
        raise AuthenticationFailed(f"the server did not log in user '{username}': {answer.get('msg') or answer}")

    def node_collaboration(self, api_key: str) -> NodeCollaboration:
        """Log in with a node's API key and read its collaboration (a client of its own: this
        one's user session, if any, stays as it is)."""
        response = self._request("POST", "token/node", json={"api_key": api_key})
        if response.status_code in (400, 401):
            raise AuthenticationFailed(f"the server refused the node's API key: {_message(response)}")
        if response.status_code >= 400:
            raise ServerRejected(response.status_code, _message(response), "POST", f"{self.api_base}/token/node")
        answer = response.json()
        node_id = int(str(answer.get("node_url", "")).rstrip("/").rsplit("/", 1)[-1])
        headers = {"Authorization": f"Bearer {answer['access_token']}"}
        node = self._json("GET", f"node/{node_id}", headers=headers)
        collaboration = self._json("GET", f"collaboration/{int(node['collaboration']['id'])}", headers=headers)
        return NodeCollaboration(
            node_name=str(node.get("name", "")), collaboration=str(collaboration.get("name", "")),
            encrypted=bool(collaboration.get("encrypted")),
        )

    def my_organization(self) -> UserOrganization:
        if self._user_id is None:
            raise NodeError("log in first")
        user = self._json("GET", f"user/{self._user_id}")
        organization_id = int(user["organization"]["id"])
        organization = self._json("GET", f"organization/{organization_id}")
        return UserOrganization(id=organization_id, name=str(organization["name"]))

    def set_organization_public_key(self, organization_id: int, public_key: str) -> None:
        self._json("PATCH", f"organization/{organization_id}", json={"public_key": public_key})


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("msg", body)) if isinstance(body, dict) else str(body)[:200]
