//! The HTTP endpoint: `/metrics` (Prometheus text format), `/healthz` (alive) and `/readyz`.
//!
//! Owns: a listener on one thread, answering one short request at a time. Must not: touch the
//! engine. It reads the metrics registry (internally synchronised) and a readiness flag that the
//! runtime sets; a scrape never waits on processing, and processing never waits on a scrape.
//!
//! Why a plain std thread and not an async server: three GET routes polled every few seconds by
//! Prometheus and a probe need no executor, and keeping the file runtime free of one keeps
//! `replay` simple. Requests are bounded (8 KiB of head, 2 s to arrive).

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus::Registry;

use crate::metrics::Metrics;

/// What `/readyz` answers: `None` when ready, else why not.
pub trait Readiness: Send + Sync {
    fn not_ready_reason(&self) -> Option<String>;
}

/// The file runtimes' readiness: a flag set while they run.
impl Readiness for AtomicBool {
    fn not_ready_reason(&self) -> Option<String> {
        (!self.load(Ordering::Relaxed)).then(|| "not ready".to_string())
    }
}

/// A running endpoint; stops when dropped.
pub struct HttpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `listen` (e.g. `127.0.0.1:9464`; port 0 picks a free one) and serves until dropped.
    pub fn start(
        listen: &str,
        registry: Registry,
        ready: Arc<dyn Readiness>,
    ) -> io::Result<HttpServer> {
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        // Non-blocking accept, so the thread notices `stop` within one poll interval.
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("onecount-http".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            // A client that misbehaves costs at most the read timeout.
                            let _ = answer(stream, &registry, ready.as_ref());
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(100)),
                    }
                }
            })?;
        Ok(HttpServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(stream: TcpStream, registry: &Registry, ready: &dyn Readiness) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    let mut head = 0usize;
    reader.read_line(&mut request_line)?;
    // Drain the headers (bounded): the routes need nothing from them.
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        head += n;
        if n == 0 || line == "\r\n" || line == "\n" || head > 8192 {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            Metrics::render(registry),
        ),
        ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".to_string()),
        ("GET", "/readyz") => match ready.not_ready_reason() {
            None => ("200 OK", "text/plain", "ready\n".to_string()),
            Some(why) => ("503 Service Unavailable", "text/plain", format!("{why}\n")),
        },
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_string(),
        ),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}
