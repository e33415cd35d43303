//! A fault-injecting TCP proxy for testing how ferry copes with broken,
//! truncated and hanging network connections against real servers.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};

/// What the proxy does with a connection. The mode is sampled when a
/// connection is accepted; [`TcpProxy::set_mode`] affects later connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward bytes both ways unchanged.
    Forward,
    /// Forward until `bytes` bytes have passed through the connection in
    /// total (client->server plus server->client), then close both sides
    /// abruptly. Simulates a connection dropped mid-transfer.
    CutAfter {
        /// Total bytes (both directions) forwarded before the cut.
        bytes: u64,
    },
    /// Accept the connection and read (and discard) whatever the client sends,
    /// but never connect to the target or answer. Simulates a hung server.
    Stall,
}

/// A TCP proxy on `127.0.0.1:<free port>` forwarding to a target address, in
/// background threads. Stops (closing all its connections) on drop.
pub struct TcpProxy {
    port: u16,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

struct Shared {
    target: SocketAddr,
    mode: Mutex<ProxyMode>,
    stop: AtomicBool,
    connections: AtomicUsize,
    next_id: AtomicU64,
    /// Open sockets per connection, so drop can shut them down and unblock
    /// the threads reading from them.
    open: Mutex<HashMap<u64, Vec<TcpStream>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Locks a mutex, ignoring poisoning: the protected data stays consistent
/// even if a connection thread panicked.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// Remembers `stream` for shutdown on drop; if the proxy is already
    /// stopping, shuts it down immediately instead (checked under the same
    /// lock drop uses, so no stream escapes the shutdown sweep).
    fn register(&self, id: u64, stream: &TcpStream) {
        let mut open = lock(&self.open);
        if self.stop.load(Ordering::SeqCst) {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        if let Ok(clone) = stream.try_clone() {
            open.entry(id).or_default().push(clone);
        }
    }

    fn unregister(&self, id: u64) {
        lock(&self.open).remove(&id);
    }
}

impl TcpProxy {
    /// Starts the proxy on a free loopback port, forwarding to `target`.
    pub fn start(target: SocketAddr, mode: ProxyMode) -> Result<TcpProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context("TcpProxy: failed to bind 127.0.0.1:0")?;
        let port = listener
            .local_addr()
            .context("TcpProxy: failed to read the listener address")?
            .port();
        // Non-blocking accept so the accept loop can notice `stop`.
        listener
            .set_nonblocking(true)
            .context("TcpProxy: failed to make the listener non-blocking")?;
        let shared = Arc::new(Shared {
            target,
            mode: Mutex::new(mode),
            stop: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            threads: Mutex::new(Vec::new()),
        });
        let accept_shared = Arc::clone(&shared);
        let accept_thread = std::thread::Builder::new()
            .name(format!("tcp-proxy-{port}"))
            .spawn(move || accept_loop(listener, accept_shared))
            .context("TcpProxy: failed to spawn the accept thread")?;
        Ok(TcpProxy {
            port,
            shared,
            accept_thread: Some(accept_thread),
        })
    }

    /// The local port clients should connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port()`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Changes the mode for connections accepted from now on.
    pub fn set_mode(&self, mode: ProxyMode) {
        *lock(&self.shared.mode) = mode;
    }

    /// Number of connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.accept_thread.take() {
            let _ = handle.join();
        }
        for streams in lock(&self.shared.open).values() {
            for s in streams {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        let threads = std::mem::take(&mut *lock(&self.shared.threads));
        for t in threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let mode = *lock(&shared.mode);
                let conn_shared = Arc::clone(&shared);
                let spawned = std::thread::Builder::new()
                    .name("tcp-proxy-conn".into())
                    .spawn(move || handle_connection(client, mode, conn_shared));
                if let Ok(handle) = spawned {
                    let mut threads = lock(&shared.threads);
                    threads.retain(|t| !t.is_finished());
                    threads.push(handle);
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn handle_connection(client: TcpStream, mode: ProxyMode, shared: Arc<Shared>) {
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    // Accepted sockets must block: the pump threads rely on blocking reads.
    let _ = client.set_nonblocking(false);
    shared.register(id, &client);
    match mode {
        ProxyMode::Stall => {
            let mut buf = [0u8; 16 * 1024];
            let mut reader = &client;
            while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
        }
        ProxyMode::Forward => forward(&client, None, id, &shared),
        ProxyMode::CutAfter { bytes } => forward(&client, Some(bytes), id, &shared),
    }
    let _ = client.shutdown(Shutdown::Both);
    shared.unregister(id);
}

fn forward(client: &TcpStream, limit: Option<u64>, id: u64, shared: &Arc<Shared>) {
    let server = match TcpStream::connect_timeout(&shared.target, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(_) => return,
    };
    shared.register(id, &server);
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
        let _ = server.shutdown(Shutdown::Both);
        return;
    };
    let counter = Arc::new(Mutex::new(0u64));
    let upstream = {
        let counter = Arc::clone(&counter);
        let (from, to) = (client2, server2);
        std::thread::Builder::new()
            .name("tcp-proxy-up".into())
            .spawn(move || pump(&from, &to, limit, &counter))
    };
    pump(&server, client, limit, &counter);
    match upstream {
        Ok(handle) => {
            let _ = handle.join();
        }
        Err(_) => {
            let _ = client.shutdown(Shutdown::Both);
        }
    }
    let _ = server.shutdown(Shutdown::Both);
}

/// Copies `from` -> `to` until EOF (propagated as a half-close) or error. With
/// a limit, stops once the shared counter reaches it and closes both sockets
/// in both directions, which also ends the opposite pump.
fn pump(from: &TcpStream, to: &TcpStream, limit: Option<u64>, counter: &Mutex<u64>) {
    let mut buf = [0u8; 32 * 1024];
    let mut reader = from;
    let mut writer = to;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
        };
        let (allowed, cut) = match limit {
            None => (n, false),
            Some(limit) => {
                let mut total = lock(counter);
                let allowed = (n as u64).min(limit.saturating_sub(*total)) as usize;
                *total += allowed as u64;
                (allowed, *total >= limit)
            }
        };
        if allowed > 0 && writer.write_all(&buf[..allowed]).is_err() {
            let _ = from.shutdown(Shutdown::Both);
            return;
        }
        if cut {
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
            return;
        }
    }
}
