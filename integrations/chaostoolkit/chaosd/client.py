"""A small client for chaosd's HTTP API over its Unix socket."""

import http.client
import json
import socket
from typing import Any, Dict, Optional

DEFAULT_SOCKET = "/run/chaosd/chaosd.sock"


class ChaosdError(Exception):
    """chaosd refused a request or could not be reached; the message says why."""

    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        self.status = status


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def _connection(configuration: Optional[Dict[str, Any]], timeout: float):
    cfg = configuration or {}
    return _UnixConnection(cfg.get("chaosd_socket", DEFAULT_SOCKET), timeout)


def call(
    method: str,
    path: str,
    body: Optional[Any] = None,
    configuration: Optional[Dict[str, Any]] = None,
    timeout: float = 60.0,
) -> Any:
    """One API call; returns the decoded JSON answer or raises ChaosdError with chaosd's text."""
    conn = _connection(configuration, timeout)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"} if payload is not None else {}
        conn.request(method, path, body=payload, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
    except OSError as e:
        raise ChaosdError(f"cannot reach chaosd: {e}") from e
    finally:
        conn.close()
    try:
        decoded = json.loads(data) if data else None
    except ValueError as e:
        raise ChaosdError(f"chaosd answered {resp.status} with no JSON: {data[:200]!r}") from e
    if resp.status >= 400:
        message = decoded.get("error") if isinstance(decoded, dict) else None
        raise ChaosdError(message or f"chaosd answered {resp.status}", resp.status)
    return decoded
