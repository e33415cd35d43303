//! Credentials go only to the origin they were configured for, and a password given on the
//! command line, where other users can read it, earns a warning.

use crate::harness::{branches_and_tags, Ferry, Repo, Transport};
use base64::Engine;
use ferry_testkit::WRITER;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A canned HTTP server on a free loopback port: answers each request with what `respond`
/// returns for its request line, keeps every request's head, and stops when dropped.
struct Canned {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Canned {
    /// More requests than any test here makes; the server stops answering after that.
    const MAX_REQUESTS: usize = 100;

    fn start(respond: impl Fn(&str) -> Vec<u8> + Send + 'static) -> Canned {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (heads, stop) = (heads.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming().take(Self::MAX_REQUESTS) {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(mut stream) = stream else { continue };
                    let Some(head) = read_request(&mut stream) else {
                        continue;
                    };
                    let request_line = head.lines().next().unwrap_or("").to_owned();
                    heads.lock().unwrap().push(head);
                    let _ = stream.write_all(&respond(&request_line));
                }
            })
        };
        Canned {
            addr,
            heads,
            stop,
            thread: Some(thread),
        }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

impl Drop for Canned {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads one request (head and a `Content-Length` body, bounded) and returns its head.
fn read_request(stream: &mut TcpStream) -> Option<String> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        if bytes.len() > 64 * 1024 {
            return None;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body_read = bytes.len() - (end + 4);
    while body_read < length.min(1 << 20) {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => body_read += n,
        }
    }
    Some(head)
}

fn response(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// What `git http-backend` answers to `GET info/refs?service=git-upload-pack` for `repo`.
fn refs_advertisement(repo: &Repo) -> Vec<u8> {
    let out = std::process::Command::new("git")
        .args(["upload-pack", "--advertise-refs", "--stateless-rpc"])
        .arg(repo.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let announce = "# service=git-upload-pack\n";
    let mut body = format!("{:04x}{announce}0000", announce.len() + 4).into_bytes();
    body.extend_from_slice(&out.stdout);
    body
}

/// The passwords of the `Authorization: Basic` headers in a request head.
fn basic_passwords(head: &str) -> Vec<String> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        .filter_map(|(_, value)| value.trim().strip_prefix("Basic "))
        .filter_map(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .map(|pair| String::from_utf8_lossy(&pair).into_owned())
        .map(|pair| {
            pair.split_once(':')
                .map_or(pair.clone(), |(_, p)| p.to_owned())
        })
        .collect()
}

/// A source that redirects to another origin (another port on the same host) must not hand
/// that origin the password: not when it refuses everything, and not when it answers the
/// first request like a git server (git then sends it more requests).
#[test]
fn credentials_never_follow_a_redirect_to_another_origin() {
    let password = format!("pw-{}-stays-home", std::process::id());
    let advertisement = refs_advertisement(&Repo::source("redirect-bait"));
    for elsewhere_serves_refs in [true, false] {
        let advertisement = advertisement.clone();
        let elsewhere = Canned::start(move |request_line| {
            if elsewhere_serves_refs && request_line.starts_with("GET ") {
                response(
                    "200 OK",
                    &[(
                        "Content-Type",
                        "application/x-git-upload-pack-advertisement",
                    )],
                    &advertisement,
                )
            } else {
                response(
                    "401 Unauthorized",
                    &[("WWW-Authenticate", "Basic realm=x")],
                    b"",
                )
            }
        });
        let target = elsewhere.addr;
        let source = Canned::start(move |request_line| {
            let path = request_line.split_whitespace().nth(1).unwrap_or("/");
            let location = format!("http://{target}{path}");
            response("302 Found", &[("Location", &location)], b"")
        });
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("mirror.git").display().to_string();
        let run = Ferry::new()
            .env("FERRY_SOURCE_USERNAME", "bot")
            .env("FERRY_SOURCE_PASSWORD", &password)
            .sync(&[
                &format!("http://{}/repo.git", source.addr),
                &dest,
                "--create",
            ]);
        run.assert_code(1);
        assert!(
            !source.heads().is_empty(),
            "ferry never contacted the source; stderr:\n{}",
            run.stderr
        );
        for head in elsewhere.heads() {
            assert!(
                !head.contains(&password) && !basic_passwords(&head).contains(&password),
                "the other origin received the password (it serves refs: {elsewhere_serves_refs}):\n{head}"
            );
        }
        assert_eq!(
            run.source_error_kind().as_deref(),
            Some("redirect"),
            "{}",
            run.stdout
        );
        let error = &run.mirror()["source"]["error"];
        assert!(
            error["message"].as_str().unwrap_or("").contains("302")
                && error["hint"].as_str().unwrap_or("").contains("redirect"),
            "{error}"
        );
        assert!(!run.stdout.contains(&password) && !run.stderr.contains(&password));
    }
}

/// A password in a SOURCE or DEST URL on ferry's command line is readable by every user of the
/// machine (`ps`) and stays in shell history: `sync` and `plan` say so once, show no password,
/// and still do their job. The same credentials from the environment draw no warning.
#[test]
fn a_password_in_a_command_line_url_is_warned_about_once_and_never_shown() {
    const WARNING: &str = "visible to other users";
    let (src, dst) = (Repo::source("argpw-src"), Repo::empty("argpw-dst"));
    let with_password =
        |url: String| url.replacen("http://", &format!("http://{}:{}@", WRITER.0, WRITER.1), 1);
    let (src_url, dst_url) = (
        with_password(src.url(Transport::Http)),
        with_password(dst.url(Transport::Http)),
    );
    let ferry = Ferry::new();
    for run in [
        ferry.plan(&[&src_url, &dst_url]),
        ferry.sync(&[&src_url, &dst_url]),
    ] {
        run.assert_code(0);
        assert_eq!(run.stderr.matches(WARNING).count(), 1, "{}", run.stderr);
        assert!(
            run.stderr.contains("FERRY_SOURCE_PASSWORD")
                && run.stderr.contains("FERRY_DEST_PASSWORD")
                && run.stderr.contains("config file"),
            "the warning says how to pass passwords instead: {}",
            run.stderr
        );
        assert!(
            !run.stderr.contains(WRITER.1) && !run.stdout.contains(WRITER.1),
            "{}\n{}",
            run.stdout,
            run.stderr
        );
    }
    assert_eq!(
        branches_and_tags(&dst.path()),
        branches_and_tags(&src.path())
    );

    let from_env = Ferry::with_test_credentials().sync(&[
        &src.url(Transport::Http),
        &Repo::empty("argpw-env-dst").url(Transport::Http),
    ]);
    from_env.assert_code(0);
    assert!(!from_env.stderr.contains(WARNING), "{}", from_env.stderr);
}
