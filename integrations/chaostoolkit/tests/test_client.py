"""The extension against a stand-in API on a Unix socket: the requests it sends (method, path,
body) and how it reads answers and errors. The real daemon is driven by chaosd's own
integration test (tests/tests/chaostoolkit.rs), which runs `chaos run`."""

import json
import os
import socketserver
import tempfile
import threading
import unittest
from http.server import BaseHTTPRequestHandler

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


if __name__ == "__main__":
    unittest.main()
