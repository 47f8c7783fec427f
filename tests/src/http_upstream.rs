//! An HTTP/1.1 upstream on loopback for the tests of the HTTP faults: a python
//! `http.server` answering every GET with 200 and `upstream <path>` (keep-alive), over TLS
//! when given a certificate and key. Killed on drop.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use crate::{free_port, netns::KillOnDrop};

/// Answers every GET with 200 and `upstream <path>`, HTTP/1.1 keep-alive; over TLS when given
/// a certificate and key.
const SCRIPT: &str = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = ("upstream " + self.path).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
if len(sys.argv) > 2:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("ready", flush=True)
srv.serve_forever()
"#;

/// A running upstream on `127.0.0.1:port`.
pub struct Upstream {
    pub port: u16,
    _child: KillOnDrop,
}

impl Upstream {
    /// Starts one on a free port; over TLS with `(cert, key)` (PEM files).
    pub fn start(tls: Option<(&str, &str)>) -> Upstream {
        let port = free_port();
        let mut cmd = Command::new("python3");
        cmd.args(["-c", SCRIPT, &port.to_string()]);
        if let Some((cert, key)) = tls {
            cmd.args([cert, key]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 must be installed");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the python upstream did not start");
        Upstream {
            port,
            _child: KillOnDrop(child),
        }
    }

    /// `http://127.0.0.1:port` and `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}
