//! A real Prometheus (Debian's `prometheus`) on a loopback port, and a small service whose
//! counters it scrapes and the test raises. Both stop on drop.

use std::{
    io::{Read as _, Write as _},
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

/// The counters a [`MetricsService`] exports as `test_requests_total` and `test_errors_total`.
#[derive(Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    /// Share of new requests that are errors, in per mille, while traffic runs.
    pub error_per_mille: AtomicU64,
}

/// A loopback HTTP server answering every request with the counters in the Prometheus text
/// format, and a thread counting 20 requests every 100 ms (of which `error_per_mille` fail).
pub struct MetricsService {
    pub port: u16,
    pub counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl MetricsService {
    pub fn start() -> MetricsService {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let serve = {
            let (counters, stop) = (counters.clone(), stop.clone());
            std::thread::spawn(move || serve(&listener, &counters, &stop))
        };
        let traffic = {
            let (counters, stop) = (counters.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    counters.requests.fetch_add(20, Ordering::Relaxed);
                    let errors = 20 * counters.error_per_mille.load(Ordering::Relaxed) / 1000;
                    counters.errors.fetch_add(errors, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        MetricsService {
            port,
            counters,
            stop,
            threads: vec![serve, traffic],
        }
    }
}

fn serve(listener: &TcpListener, counters: &Counters, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut conn, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        // One read takes the request head of a scraper; the body does not matter.
        let mut buf = [0u8; 4096];
        let _ = conn.read(&mut buf);
        let body = format!(
            "# TYPE test_requests_total counter\ntest_requests_total {}\n# TYPE test_errors_total counter\ntest_errors_total {}\n",
            counters.requests.load(Ordering::Relaxed),
            counters.errors.load(Ordering::Relaxed)
        );
        let _ = write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}

impl Drop for MetricsService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// `prometheus` on a free loopback port, scraping `targets` (HOST:PORT, path `/metrics`) every
/// second under job `svc`, its data in a temp dir. Killed and removed on drop.
pub struct Prometheus {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// The program, or why the test cannot run (Debian package `prometheus`).
    pub fn program() -> Result<PathBuf, String> {
        which("prometheus").ok_or_else(|| {
            "prometheus is not installed (apt-get install prometheus; `cargo xtask test` does)"
                .into()
        })
    }

    pub fn start(program: &std::path::Path, targets: &[String]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let port = crate::free_port();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: svc\n    static_configs:\n      - targets: [{}]\n",
            targets
                .iter()
                .map(|t| format!("'{t}'"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(program)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        Prometheus { port, child, dir }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `program`'s path on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}
