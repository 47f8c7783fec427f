"""A small client for chaosd's HTTP API: over its Unix socket on this host, or over the
remote listener of another host (mutual TLS).

Configuration keys:

- ``chaosd_socket``: the Unix socket (default ``/run/chaosd/chaosd.sock``), used unless
  ``chaosd_url`` is set;
- ``chaosd_url``: ``https://HOST:31768`` for a chaosd whose ``[remote]`` listener is on;
  ``http://127.0.0.1:PORT`` for one serving plain HTTP on loopback;
- ``chaosd_ca``: the CA file that signed the server's certificate (else the system's);
- ``chaosd_cert`` and ``chaosd_key``: this client's certificate and key, signed by the CA
  chaosd's ``remote.client_ca`` names;
- ``chaosd_server_name``: the name to expect on the server's certificate when it is not the
  URL's host (chaosd certificates made for Chaos Mesh carry ``chaosd.chaos-mesh.org``).
"""

import http.client
import json
import socket
import ssl
import urllib.parse
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


class _TlsConnection(http.client.HTTPConnection):
    """HTTPS with a client certificate, verifying the server as ``server_name``."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext, server_name: str, timeout):
        super().__init__(host, port, timeout=timeout)
        self._tls = context
        self._server_name = server_name

    def connect(self):
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self._server_name)


def _tls_context(cfg: Dict[str, Any]) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=cfg.get("chaosd_ca"))
        cert, key = cfg.get("chaosd_cert"), cfg.get("chaosd_key")
        if cert or key:
            if not (cert and key):
                raise ChaosdError("chaosd_cert and chaosd_key go together: set both")
            context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise ChaosdError(f"cannot load the TLS files for chaosd: {e}") from e
    return context


def _connection(configuration: Optional[Dict[str, Any]], timeout: float):
    cfg = configuration or {}
    url = cfg.get("chaosd_url")
    if not url:
        return _UnixConnection(cfg.get("chaosd_socket", DEFAULT_SOCKET), timeout)
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("https", "http") or not parsed.hostname:
        raise ChaosdError(f"chaosd_url {url!r}: give https://HOST:PORT (or http:// on loopback)")
    if parsed.path not in ("", "/"):
        raise ChaosdError(f"chaosd_url {url!r}: no path, only https://HOST:PORT")
    port = parsed.port or 31768
    if parsed.scheme == "http":
        return http.client.HTTPConnection(parsed.hostname, port, timeout=timeout)
    server_name = cfg.get("chaosd_server_name") or parsed.hostname
    return _TlsConnection(parsed.hostname, port, _tls_context(cfg), server_name, timeout)


def call(
    method: str,
    path: str,
    body: Optional[Any] = None,
    configuration: Optional[Dict[str, Any]] = None,
    timeout: float = 60.0,
) -> Any:
    """One API call; returns the decoded JSON answer or raises ChaosdError with chaosd's text."""
    conn = _connection(configuration, timeout)
    where = (configuration or {}).get("chaosd_url") or "chaosd"
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"} if payload is not None else {}
        conn.request(method, path, body=payload, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
    except ssl.SSLError as e:
        raise ChaosdError(f"TLS with {where} failed: {e}") from e
    except OSError as e:
        raise ChaosdError(f"cannot reach {where}: {e}") from e
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
