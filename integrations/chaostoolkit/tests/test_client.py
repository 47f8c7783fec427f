"""The extension against a stand-in API on a Unix socket: the requests it sends (method, path,
body) and how it reads answers and errors. The real daemon is driven by chaosd's own
integration test (tests/tests/chaostoolkit.rs), which runs `chaos run`."""

import json
import os
import shutil
import socketserver
import ssl
import subprocess
import tempfile
import threading
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from chaosd import actions, probes
from chaosd.client import ChaosdError


class _Api(BaseHTTPRequestHandler):
    faults = {}
    seen = []

    def _answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.seen.append(("POST", self.path, body))
        if body["fault"]["kind"] == "bad.kind":
            return self._answer(400, {"error": "unknown fault kind bad.kind"})
        fid = f"f{len(self.faults) + 1}"
        self.faults[fid] = {"id": fid, "kind": body["fault"]["kind"]}
        self._answer(201, self.faults[fid])

    def do_GET(self):
        self.seen.append(("GET", self.path, None))
        self._answer(200, list(self.faults.values()))

    def do_DELETE(self):
        self.seen.append(("DELETE", self.path, None))
        fid = self.path.rsplit("/", 1)[1]
        self._answer(200, self.faults.pop(fid))

    def address_string(self):
        return "unix"

    def log_message(self, *args):
        pass


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class ExtensionTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        path = os.path.join(self.dir.name, "chaosd.sock")
        _Api.faults, _Api.seen = {}, []
        self.server = _Server(path, _Api)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.cfg = {"chaosd_socket": path}

    def tearDown(self):
        self.server.shutdown()
        self.server.server_close()
        self.dir.cleanup()

    def test_inject_sends_the_fault_targets_and_duration(self):
        info = actions.inject(
            "net.loss", "30s", {"percent": 50}, cgroup="/app", configuration=self.cfg
        )
        self.assertEqual(info["id"], "f1")
        method, path, body = _Api.seen[0]
        self.assertEqual((method, path), ("POST", "/v1/faults"))
        self.assertEqual(
            body,
            {
                "fault": {"kind": "net.loss", "params": {"percent": 50}},
                "targets": [{"cgroup": "/app"}],
                "duration": "30s",
            },
        )
        self.assertTrue(probes.fault_active("f1", configuration=self.cfg))
        self.assertTrue(probes.fault_active(kind="net.loss", configuration=self.cfg))
        self.assertFalse(probes.fault_active(kind="clock.skew", configuration=self.cfg))

    def test_a_host_wide_target_is_the_string_host(self):
        actions.inject("net.partition", "1m", {}, host=True, configuration=self.cfg)
        self.assertEqual(_Api.seen[0][2]["targets"], ["host"])

    def test_recover_without_an_id_ends_what_this_run_injected(self):
        actions._injected.clear()
        actions.inject("net.loss", "30s", {}, cgroup="/a", configuration=self.cfg)
        actions.inject("clock.skew", "30s", {}, unit="b.service", configuration=self.cfg)
        ended = actions.recover(configuration=self.cfg)
        self.assertEqual(sorted(f["id"] for f in ended), ["f1", "f2"])
        self.assertEqual(probes.list_faults(configuration=self.cfg), [])
        # Nothing left to end: a second rollback is a no-op.
        self.assertEqual(actions.recover(configuration=self.cfg), [])

    def test_chaosd_s_refusal_is_raised_with_its_text(self):
        with self.assertRaises(ChaosdError) as e:
            actions.inject("bad.kind", "1s", {}, cgroup="/a", configuration=self.cfg)
        self.assertEqual(e.exception.status, 400)
        self.assertIn("unknown fault kind", str(e.exception))

    def test_an_absent_daemon_is_a_clear_error(self):
        with self.assertRaises(ChaosdError) as e:
            probes.list_faults(configuration={"chaosd_socket": "/nonexistent/chaosd.sock"})
        self.assertIn("cannot reach chaosd", str(e.exception))


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _issue(cwd, name, subject, ext):
    """A P-256 key and a certificate for it signed by ca.crt in ``cwd``."""
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=cwd)
    with open(os.path.join(cwd, f"{name}.ext"), "w") as f:
        f.write(ext)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "1", "-out", f"{name}.crt", "-extfile", f"{name}.ext",
             cwd=cwd)


@unittest.skipUnless(shutil.which("openssl"), "openssl makes the test certificates")
class RemoteTest(unittest.TestCase):
    """The same calls over HTTPS with a client certificate, as to chaosd's remote listener."""

    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        d = self.dir.name
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=test CA",
                 "-days", "1", cwd=d)
        _issue(d, "server", "/CN=chaosd.chaos-mesh.org",
               "subjectAltName=DNS:chaosd.chaos-mesh.org\nextendedKeyUsage=serverAuth\n")
        _issue(d, "client", "/CN=chaos-toolkit", "extendedKeyUsage=clientAuth\n")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(os.path.join(d, "server.crt"), os.path.join(d, "server.key"))
        context.load_verify_locations(os.path.join(d, "ca.crt"))
        context.verify_mode = ssl.CERT_REQUIRED
        _Api.faults, _Api.seen = {}, []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.cfg = {
            "chaosd_url": f"https://127.0.0.1:{self.server.server_address[1]}",
            "chaosd_server_name": "chaosd.chaos-mesh.org",
            "chaosd_ca": os.path.join(d, "ca.crt"),
            "chaosd_cert": os.path.join(d, "client.crt"),
            "chaosd_key": os.path.join(d, "client.key"),
        }

    def tearDown(self):
        self.server.shutdown()
        self.server.server_close()
        self.dir.cleanup()

    def test_inject_and_recover_over_mutual_tls(self):
        actions._injected.clear()
        info = actions.inject("net.loss", "30s", {"percent": 5}, host=True, configuration=self.cfg)
        self.assertEqual(_Api.seen[0][:2], ("POST", "/v1/faults"))
        self.assertTrue(probes.fault_active(info["id"], configuration=self.cfg))
        self.assertEqual([f["id"] for f in actions.recover(configuration=self.cfg)], [info["id"]])

    def test_without_a_client_certificate_the_call_fails_saying_so(self):
        cfg = {k: v for k, v in self.cfg.items() if k not in ("chaosd_cert", "chaosd_key")}
        with self.assertRaises(ChaosdError) as e:
            probes.list_faults(configuration=cfg)
        self.assertIn(self.cfg["chaosd_url"], str(e.exception))

    def test_a_half_configured_client_certificate_is_refused(self):
        cfg = dict(self.cfg, chaosd_key=None)
        with self.assertRaises(ChaosdError) as e:
            probes.list_faults(configuration=cfg)
        self.assertIn("go together", str(e.exception))


if __name__ == "__main__":
    unittest.main()
