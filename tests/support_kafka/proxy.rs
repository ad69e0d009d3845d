//! A TCP proxy a test can cut: the service reaches the broker only through it, so cutting it is
//! a broker outage for the service alone while the test's own clients go on working.
//!
//! Owns: one listener thread and two pump threads per connection, forwarding bytes unchanged to
//! an upstream address. [`Proxy::cut`] closes every open connection and then accepts and drops
//! new ones at once (the listener stays bound, so nothing else can take its port, which the
//! broker advertises) until [`Proxy::restore`]. Must not: look into the bytes, or outlive its
//! handle (dropping it closes everything).
//!
//! Plain std threads, not async: a test's handful of Kafka connections, blocking copies, and no
//! executor to share with the code under test.

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The variable `scripts/test.sh` sets to `"LISTEN UPSTREAM"` (`scripts/kafka-broker.sh
/// proxied`): where the broker advertises its PROXIED listener, and that listener.
pub const PROXY_VAR: &str = "ONECOUNT_TEST_KAFKA_PROXY";

/// The proxy's listen address (also the bootstrap address a proxied client uses) and its
/// upstream, from [`PROXY_VAR`]. Panics when unset: broker tests never skip.
pub fn proxied_broker() -> (SocketAddr, SocketAddr) {
    let value = std::env::var(PROXY_VAR).unwrap_or_default();
    let parsed = value
        .split_once(' ')
        .and_then(|(l, u)| Some((l.trim().parse().ok()?, u.trim().parse().ok()?)));
    parsed.unwrap_or_else(|| {
        panic!(
            "{PROXY_VAR} is {value:?}, not \"LISTEN_ADDR UPSTREAM_ADDR\": run scripts/test.sh, \
             or export {PROXY_VAR}=\"$(scripts/kafka-broker.sh proxied)\" next to \
             ONECOUNT_TEST_KAFKA"
        )
    })
}

/// A running proxy; stops and closes every connection when dropped.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

struct Shared {
    upstream: SocketAddr,
    cut: AtomicBool,
    stop: AtomicBool,
    /// Both sockets of every open connection, so `cut` can close them from outside their pumps.
    open: Mutex<HashMap<u64, [TcpStream; 2]>>,
    next_id: AtomicU64,
    /// Connections accepted and forwarded, over the proxy's life.
    forwarded: AtomicU64,
    /// Connections accepted and dropped because the proxy was cut.
    refused: AtomicU64,
}

impl Shared {
    fn close(&self, id: u64) {
        let sockets = self.open.lock().unwrap().remove(&id);
        for s in sockets.iter().flatten() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn close_all(&self) {
        let open: Vec<_> = self.open.lock().unwrap().drain().collect();
        for (_, sockets) in open {
            for s in &sockets {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Proxy {
    /// Listens on `listen` (port 0 picks one) and forwards each connection to `upstream`.
    pub fn start(listen: SocketAddr, upstream: SocketAddr) -> io::Result<Proxy> {
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            cut: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        });
        let accepting = shared.clone();
        let accept_thread = std::thread::Builder::new()
            .name("test-proxy-accept".into())
            .spawn(move || accept_loop(listener, accepting))?;
        Ok(Proxy {
            addr,
            shared,
            accept_thread: Some(accept_thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every open connection; new ones are accepted and closed at once until `restore`.
    pub fn cut(&self) {
        // The flag first: a connection accepted while closing is then dropped, not forwarded.
        self.shared.cut.store(true, Ordering::SeqCst);
        self.shared.close_all();
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.shared.open.lock().unwrap().len()
    }

    /// Connections forwarded so far.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// Connections refused (accepted and closed) while cut.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept with a connection of our own.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
        self.shared.close_all();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        if shared.cut.load(Ordering::SeqCst) {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        // An upstream that refuses is what the client sees: its connection closes.
        let Ok(upstream) = TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(5))
        else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        // Each pump owns a reader and a writer; the originals stay in `open` for `cut`.
        let Ok(pumps) = (|| -> io::Result<_> {
            Ok([
                (client.try_clone()?, upstream.try_clone()?, "up"),
                (upstream.try_clone()?, client.try_clone()?, "down"),
            ])
        })() else {
            continue;
        };
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        shared.open.lock().unwrap().insert(id, [client, upstream]);
        // `cut` may have run between the check above and the insert: close what it missed.
        if shared.cut.load(Ordering::SeqCst) {
            shared.close(id);
            continue;
        }
        shared.forwarded.fetch_add(1, Ordering::SeqCst);
        for (mut from, mut to, direction) in pumps {
            let pumping = shared.clone();
            let _ = std::thread::Builder::new()
                .name(format!("test-proxy-{id}-{direction}"))
                .spawn(move || {
                    let _ = io::copy(&mut from, &mut to);
                    // One side ended (or `cut` shut it): end the whole connection, as a
                    // broker or network failure would.
                    pumping.close(id);
                });
        }
    }
}
