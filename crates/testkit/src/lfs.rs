//! A real Git LFS server for tests: giftless (PyPI) under gunicorn, on the unix socket the
//! testkit's nginx passes LFS requests to, so LFS has the git remotes' Basic auth and users:
//!
//! * `http(s)://127.0.0.1:PORT/git/<name>.git/info/lfs` — what git-lfs derives from the git
//!   URL; [`crate::WRITER`] may upload, [`crate::READER`] only download.
//! * `http://127.0.0.1:PORT/lfs-private/<name>.git/info/lfs` — only [`crate::LFS_USER`].
//!
//! nginx checks the password of a batch request and hands giftless a token with the user's
//! rights (HS256, signed with [`JWT_KEY`], which giftless is given); giftless checks the tokens
//! its transfer URLs carry. Every LFS request is logged ([`LfsServer::requests`]), batch
//! request bodies included, so tests can count what was asked and sent.
//!
//! giftless and gunicorn come from `scripts/test.sh` (pip, pinned, into target/test-tools).

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tempfile::TempDir;

use crate::process::{find_program, ServerProcess, Watchdog};
use crate::Servers;

/// The key of the tokens nginx hands giftless (loopback test servers only).
pub const JWT_KEY: &str = "ferry-testkit-lfs-jwt-key";

/// A JWT (HS256, signed with [`JWT_KEY`]) granting giftless `scopes`, valid until 2100.
pub(crate) fn token(scopes: &[&str]) -> String {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
    let scopes = scopes
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(",");
    let payload = b64(
        format!(r#"{{"sub":"ferry-testkit","exp":4102444800,"scopes":[{scopes}]}}"#).as_bytes(),
    );
    let signing_input = format!("{header}.{payload}");
    let mut mac = Hmac::<Sha256>::new_from_slice(JWT_KEY.as_bytes()).expect("HMAC takes any key");
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(&mac.finalize().into_bytes()))
}

/// One LFS request nginx saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LfsRequest {
    pub method: String,
    pub uri: String,
    pub status: u16,
    /// Bytes of the whole request (headers and body).
    pub length: u64,
    /// The request body as nginx read it (batch requests; empty for streamed uploads).
    pub body: String,
}

/// giftless behind the testkit's nginx; stopped on drop.
pub struct LfsServer {
    // Field order: the process stops before the watchdog is disarmed and the dir deleted.
    process: ServerProcess,
    _watchdog: Watchdog,
    store: PathBuf,
    log: PathBuf,
    _dir: TempDir,
}

impl LfsServer {
    /// Starts giftless on [`Servers::lfs_socket`] and returns once nginx reaches it.
    pub fn start(servers: &Servers) -> Result<LfsServer> {
        let gunicorn = find_program("gunicorn").context(
            "gunicorn and giftless are installed by scripts/test.sh (pip, into target/test-tools)",
        )?;
        let dir = tempfile::Builder::new()
            .prefix("ferry-testkit-lfs-")
            .tempdir()
            .context("failed to create the LFS server's temp dir")?;
        let base = dir.path().canonicalize()?;
        let store = base.join("store");
        fs::create_dir_all(&store)?;
        let config = base.join("giftless.yaml");
        let jwt = format!(
            "factory: giftless.auth.jwt:factory\n  options:\n    algorithm: HS256\n    private_key: {JWT_KEY}\n    default_lifetime: 3600"
        );
        fs::write(
            &config,
            format!(
                "AUTH_PROVIDERS:\n  - {jwt_item}\nPRE_AUTHORIZED_ACTION_PROVIDER:\n  {jwt}\nTRANSFER_ADAPTERS:\n  basic:\n    options:\n      storage_options:\n        path: {store}\n      action_lifetime: 3600\nLEGACY_ENDPOINTS: false\n",
                jwt_item = jwt.replace("\n  ", "\n    "),
                store = store.display()
            ),
        )?;
        let socket = servers.lfs_socket();
        let _ = fs::remove_file(&socket);
        let mut watchdog = Watchdog::start(&base)?;
        let log = base.join("gunicorn.log");
        let mut cmd = Command::new(&gunicorn);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LANG", "C.UTF-8")
            .env("GIFTLESS_CONFIG_FILE", &config)
            .current_dir(&base)
            .arg("--bind")
            .arg(format!("unix:{}", socket.display()))
            .args(["--workers", "2", "--threads", "4", "--timeout", "300"])
            .args(["--forwarded-allow-ips", "*"])
            .arg("giftless.wsgi_entrypoint:app");
        let mut process =
            ServerProcess::spawn("giftless", cmd, &log, vec![log.clone()], &mut watchdog)?;
        process.wait_for_path(&socket)?;
        let server = LfsServer {
            process,
            _watchdog: watchdog,
            store,
            log: servers.lfs_log(),
            _dir: dir,
        };
        server.probe(servers)?;
        Ok(server)
    }

    /// Waits until a batch request through nginx is answered by giftless (its workers import
    /// the app after the socket appears).
    fn probe(&self, servers: &Servers) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let last = match batch_status(servers.http_port()) {
                // Anything giftless itself answers (an empty batch is invalid to it) will do;
                // nginx says 502 while nothing listens on the socket.
                Ok(status) if status != 502 && status != 504 => return Ok(()),
                Ok(status) => format!("HTTP {status}"),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() > deadline {
                bail!(
                    "giftless did not answer through nginx (last: {last}); its log:{}",
                    self.process.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every LFS request nginx has logged so far (all tests', oldest first).
    pub fn requests(&self) -> Result<Vec<LfsRequest>> {
        let text = match fs::read(&self.log) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(e).with_context(|| format!("failed to read {}", self.log.display()))
            }
        };
        Ok(text.lines().filter_map(parse_log_line).collect())
    }

    /// The objects (sha256 ids) giftless stores for `<org>/<repo>` (org `git` for the `/git/`
    /// endpoints, `lfs-private` for the others).
    pub fn stored(&self, org: &str, repo: &str) -> Vec<String> {
        let mut oids = Vec::new();
        collect_files(&self.store.join(org).join(repo), &mut oids);
        oids.sort();
        oids
    }

    /// giftless's log, for a failing test's message.
    pub fn logs(&self) -> String {
        self.process.logs()
    }
}

/// The status of an empty batch request through nginx, as [`crate::WRITER`].
fn batch_status(port: u16) -> Result<u16> {
    let body = r#"{"operation":"download","objects":[]}"#;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        crate::WRITER.0,
        crate::WRITER.1
    ));
    let request = format!(
        "POST /git/testkit-lfs-probe.git/info/lfs/objects/batch HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Authorization: Basic {auth}\r\nContent-Type: application/vnd.git-lfs+json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(request.as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP answer: {answer:?}"))
}

fn collect_files(dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
            if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                out.push(name.to_owned());
            }
        }
    }
}

/// `METHOD URI STATUS LENGTH "BODY"` (see the `lfs` log format in servers.rs).
fn parse_log_line(line: &str) -> Option<LfsRequest> {
    let mut parts = line.splitn(5, ' ');
    let method = parts.next()?.to_owned();
    let uri = parts.next()?.to_owned();
    let status = parts.next()?.parse().ok()?;
    let length = parts.next()?.parse().ok()?;
    let body = parts
        .next()?
        .trim()
        .trim_start_matches('"')
        .trim_end_matches('"')
        .replace("\\\"", "\"");
    Some(LfsRequest {
        method,
        uri,
        status,
        length,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_read() {
        let r = parse_log_line(
            r#"POST /git/a.git/info/lfs/objects/batch 200 412 "{\"operation\":\"upload\"}""#,
        )
        .unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.status, 200);
        assert_eq!(r.length, 412);
        assert_eq!(r.body, r#"{"operation":"upload"}"#);
    }

    #[test]
    fn tokens_are_three_base64url_parts() {
        let t = token(&["obj:*"]);
        assert_eq!(t.split('.').count(), 3);
        assert!(!t.contains('='));
    }
}
