//! The HTTP face under hostile or careless clients: half-sent headers and bodies are cut after
//! their timeouts, a connection cap makes newcomers wait instead of starving the acceptor, slow
//! clients and page traffic do not keep webhooks from being accepted, and SIGTERM does not wait
//! for idle or half-open connections. Plain `TcpStream`s play the clients ureq cannot.

use crate::harness::Transport;
use crate::service::{delivery, mirror_toml, pair, Serve, SECRET};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a test waits for the server to close a connection it should close.
const CLOSE_LIMIT: Duration = Duration::from_secs(10);

/// A service with one mirror, `app`, and `serve_section` in its `[serve]`.
fn start(serve_section: &str) -> Serve {
    let (src, dst) = pair("face");
    let toml = mirror_toml(
        "app",
        &src.url(Transport::File),
        &dst.url(Transport::File),
        "",
    );
    Serve::start(serve_section, &toml)
}

fn connect(serve: &Serve) -> TcpStream {
    let addr = serve.base.trim_start_matches("http://");
    TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// A connection that sent the start of a request's headers and nothing more.
fn half_header(serve: &Serve) -> TcpStream {
    let mut conn = connect(serve);
    conn.write_all(b"GET / HTTP/1.1\r\nHost: ferry\r\nX-Slow: ")
        .expect("send half a header");
    conn
}

/// A connection that sent a webhook's headers and 10 of the 1000 body bytes they announce.
fn half_body(serve: &Serve) -> TcpStream {
    let mut conn = connect(serve);
    conn.write_all(
        b"POST /hooks/app HTTP/1.1\r\nHost: ferry\r\nContent-Type: application/json\r\n\
          X-GitHub-Event: push\r\nContent-Length: 1000\r\n\r\n{\"ref\": \"",
    )
    .expect("send half a body");
    conn
}

/// A keep-alive connection that made one request, read the whole answer, and stays open.
fn idle_keep_alive(serve: &Serve) -> TcpStream {
    let mut conn = connect(serve);
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: ferry\r\n\r\n")
        .expect("send a request");
    conn.set_read_timeout(Some(CLOSE_LIMIT)).expect("timeout");
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.ends_with(b"ok\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => panic!(
                "GET /healthz was not answered: {:?}",
                String::from_utf8_lossy(&seen)
            ),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    conn
}

/// Reads until the server closes the connection or `limit` passes: what it sent, and whether
/// it closed.
fn read_until_closed(conn: &mut TcpStream, limit: Duration) -> (String, bool) {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (String::from_utf8_lossy(&seen).into_owned(), false);
        }
        conn.set_read_timeout(Some(left)).expect("read timeout");
        match conn.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&seen).into_owned(), true),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return (String::from_utf8_lossy(&seen).into_owned(), true),
        }
    }
}

/// Whether the server has closed the connection, without waiting.
fn closed_now(conn: &TcpStream) -> bool {
    conn.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 64];
    let closed = match (&*conn).read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    };
    conn.set_nonblocking(false).expect("blocking");
    closed
}

#[test]
fn half_sent_headers_and_idle_keep_alives_are_cut_after_the_header_timeout() {
    let serve = start("header_timeout = \"1s\"");
    let started = Instant::now();
    let mut slow = half_header(&serve);
    let mut idle = idle_keep_alive(&serve);
    let (sent, closed) = read_until_closed(&mut slow, CLOSE_LIMIT);
    assert!(
        closed,
        "a half-sent header is still open after {CLOSE_LIMIT:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before the timeout: {:?}",
        started.elapsed()
    );
    assert_eq!(sent, "", "nothing is answered to half a request");
    let (sent, closed) = read_until_closed(&mut idle, CLOSE_LIMIT);
    assert!(
        closed,
        "an idle keep-alive connection is still open after {CLOSE_LIMIT:?}"
    );
    assert_eq!(sent, "");
    assert_eq!(serve.get("/healthz").0, 200, "new connections are served");
}

#[test]
fn a_body_that_never_finishes_is_cut_after_the_body_timeout() {
    let serve = start("body_timeout = \"1s\"");
    let mut stalled = half_body(&serve);
    let (sent, closed) = read_until_closed(&mut stalled, CLOSE_LIMIT);
    assert!(closed, "a stalled body is still open after {CLOSE_LIMIT:?}");
    assert!(sent.starts_with("HTTP/1.1 408"), "{sent}");

    // A body trickling in (a byte every 200 ms, which would take 200 s) is cut all the same:
    // the timeout bounds the whole body, not the gaps between bytes.
    let trickle = half_body(&serve);
    let mut writer = trickle.try_clone().expect("clone the stream");
    let stop = Arc::new(AtomicBool::new(false));
    let stop_writer = stop.clone();
    let dripping = std::thread::spawn(move || {
        for _ in 0..(CLOSE_LIMIT.as_millis() / 200) {
            if stop_writer.load(Ordering::Relaxed) || writer.write_all(b"x").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let mut reader = trickle;
    let (sent, closed) = read_until_closed(&mut reader, CLOSE_LIMIT);
    stop.store(true, Ordering::Relaxed);
    let _ = dripping.join();
    assert!(
        closed,
        "a trickling body is still open after {CLOSE_LIMIT:?}"
    );
    assert!(sent.starts_with("HTTP/1.1 408"), "{sent}");

    let (headers, body) = delivery("github", "refs/heads/main", SECRET);
    assert_eq!(
        serve.post("/hooks/app", &headers, &body).0,
        202,
        "a delivery that arrives in time is accepted"
    );
}

#[test]
fn webhooks_are_accepted_while_slow_clients_hold_connections_and_the_page_is_read() {
    // The slow clients stay within their header timeout for the whole test.
    let serve = start("header_timeout = \"5m\"");
    let slow: Vec<TcpStream> = (0..500).map(|_| half_header(&serve)).collect();
    let base = serve.base.clone();
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let (base, done) = (base.clone(), done.clone());
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(10))
                    .build();
                let started = Instant::now();
                let mut statuses = Vec::new();
                while !done.load(Ordering::Relaxed)
                    && statuses.len() < 2000
                    && started.elapsed() < Duration::from_secs(60)
                {
                    let status = match agent.get(&format!("{base}/")).call() {
                        Ok(r) => {
                            let status = r.status();
                            let _ = r.into_string();
                            status
                        }
                        Err(ureq::Error::Status(code, _)) => code,
                        Err(_) => 0,
                    };
                    statuses.push(status);
                }
                statuses
            })
        })
        .collect();
    let (headers, body) = delivery("github", "refs/heads/main", SECRET);
    let acks: Vec<u16> = (0..20)
        .map(|_| serve.post("/hooks/app", &headers, &body).0)
        .collect();
    done.store(true, Ordering::Relaxed);
    let pages: Vec<u16> = readers
        .into_iter()
        .flat_map(|r| r.join().expect("a page reader panicked"))
        .collect();
    assert!(acks.iter().all(|&s| s == 202), "webhook answers: {acks:?}");
    assert!(!pages.is_empty());
    assert!(
        pages.iter().all(|&s| s == 200),
        "page answers other than 200: {:?}",
        pages.iter().filter(|&&s| s != 200).collect::<Vec<_>>()
    );
    assert_eq!(
        slow.iter().filter(|c| closed_now(c)).count(),
        0,
        "the slow clients were within their header timeout and the cap"
    );
}

#[test]
fn beyond_the_connection_cap_new_connections_wait_for_a_free_slot() {
    let serve = start("max_connections = 20\nheader_timeout = \"2s\"");
    let held: Vec<TcpStream> = (0..20).map(|_| half_header(&serve)).collect();
    let (headers, body) = delivery("github", "refs/heads/main", SECRET);
    assert_eq!(serve.post("/hooks/app", &headers, &body).0, 202);
    assert!(
        held.iter().any(closed_now),
        "the delivery was answered while all {} slots were taken",
        held.len()
    );
}

#[test]
fn sigterm_exits_promptly_with_idle_and_half_sent_connections_open() {
    // Timeouts far beyond the bound below: only the shutdown itself may close these.
    let mut serve = start("header_timeout = \"5m\"\nbody_timeout = \"5m\"");
    let idle: Vec<TcpStream> = (0..100).map(|_| idle_keep_alive(&serve)).collect();
    let half_headers: Vec<TcpStream> = (0..10).map(|_| half_header(&serve)).collect();
    let half_bodies: Vec<TcpStream> = (0..10).map(|_| half_body(&serve)).collect();
    let exit = serve.terminate_within(Duration::from_secs(10));
    assert_eq!(
        exit,
        Some(Some(0)),
        "ferry serve did not exit cleanly within 10 s of SIGTERM ({} idle, {} half-sent \
         headers, {} half-sent bodies open); logs:\n{}",
        idle.len(),
        half_headers.len(),
        half_bodies.len(),
        serve.logs()
    );
}
