//! Remotes: where a repository lives and how to authenticate to it. URLs handed to git never
//! carry credentials; credentials found in a URL are lifted out into [`Credentials`] and the
//! URL shown anywhere is the redacted one.

use std::fmt;
use std::path::{Path, PathBuf};

/// A secret string. Its `Debug` and `Display` never show the value, so it cannot leak through
/// a log line or an error by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// SSH private key file (absolute).
    pub ssh_key: Option<PathBuf>,
    /// SSH known_hosts file (absolute). Host keys are always checked strictly.
    pub known_hosts: Option<PathBuf>,
    /// PEM bundle of CAs to trust for HTTPS.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Http,
    Ssh,
    GitDaemon,
    Local,
}

/// A repository location ferry can fetch from or push to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// What is handed to git: never contains a password.
    git_url: String,
    /// What is shown to people: `git_url` minus any user name for HTTP(S).
    display: String,
    pub transport: Transport,
    pub credentials: Credentials,
    /// Where its Git LFS objects live, when set by the user (`lfs_url`).
    pub lfs: LfsAccess,
}

/// A remote's Git LFS endpoint when it is not the one derived from its URL, and the
/// credentials for it when they are not the remote's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LfsAccess {
    /// The LFS server's URL (the part before `/objects/batch`); no credentials in it.
    pub url: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

impl Remote {
    /// Parses a URL or path as git would: `https://`, `http://`, `ssh://`, `git://`, `file://`,
    /// scp-like `user@host:path`, or a local path (made absolute against `cwd`). A password
    /// embedded in an HTTP(S) URL is moved into the credentials.
    pub fn parse(input: &str, cwd: &Path) -> Result<Remote, String> {
        let input = input.trim();
        if input.is_empty() {
            return Err("empty repository URL".into());
        }
        if let Some((scheme, _)) = input.split_once("://") {
            return Self::parse_url(input, &scheme.to_ascii_lowercase());
        }
        if input.contains("::") {
            return Err(format!(
                "'{input}': remote helpers (transport::address) are not supported; use https://, ssh://, git://, file:// or a path"
            ));
        }
        if is_scp_like(input) {
            return Ok(Remote {
                git_url: input.to_owned(),
                display: input.to_owned(),
                transport: Transport::Ssh,
                credentials: Credentials::default(),
                lfs: LfsAccess::default(),
            });
        }
        let path = normalize(&cwd.join(input));
        let shown = path.display().to_string();
        Ok(Remote {
            git_url: shown.clone(),
            display: shown,
            transport: Transport::Local,
            credentials: Credentials::default(),
            lfs: LfsAccess::default(),
        })
    }

    fn parse_url(input: &str, scheme: &str) -> Result<Remote, String> {
        let transport = match scheme {
            "http" | "https" => Transport::Http,
            "ssh" | "git+ssh" | "ssh+git" => Transport::Ssh,
            "git" => Transport::GitDaemon,
            "file" => Transport::Local,
            other => {
                return Err(format!(
                    "'{}': unsupported scheme '{other}://'; use https://, http://, ssh://, git://, file:// or a path",
                    redact_text(input)
                ))
            }
        };
        let mut url = url::Url::parse(input)
            .map_err(|e| format!("'{}' is not a valid URL: {e}", redact_text(input)))?;
        let mut credentials = Credentials::default();
        if !url.username().is_empty() && transport == Transport::Http {
            let user = percent_decode(url.username());
            credentials.username = Some(user);
            let _ = url.set_username("");
        }
        if let Some(pw) = url.password() {
            credentials.password = Some(Secret::new(percent_decode(pw)));
            let _ = url.set_password(None);
        }
        let git_url = url.to_string();
        let display = match &credentials.username {
            Some(user) if transport == Transport::Http => {
                let mut shown = url.clone();
                let _ = shown.set_username(user);
                shown.to_string()
            }
            _ => git_url.clone(),
        };
        Ok(Remote {
            git_url,
            display,
            transport,
            credentials,
            lfs: LfsAccess::default(),
        })
    }

    /// The URL or path to hand to git. Contains no credentials.
    pub fn git_url(&self) -> &str {
        &self.git_url
    }

    /// The URL to show people and logs.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// `scheme://host[:port]` of an HTTP(S) remote, lower-cased and without a default port:
    /// the origin its credentials belong to.
    pub fn http_origin(&self) -> Option<String> {
        if self.transport != Transport::Http {
            return None;
        }
        let url = url::Url::parse(&self.git_url).ok()?;
        Some(url.origin().ascii_serialization())
    }

    /// The local filesystem path, for `file://` URLs and plain paths.
    pub fn local_path(&self) -> Option<PathBuf> {
        if self.transport != Transport::Local {
            return None;
        }
        match self.git_url.strip_prefix("file://") {
            Some(rest) => url::Url::parse(&self.git_url)
                .ok()
                .and_then(|u| u.to_file_path().ok())
                .or_else(|| Some(PathBuf::from(rest))),
            None => Some(PathBuf::from(&self.git_url)),
        }
    }

    /// A stable identity for caches and records: the credential-free URL.
    pub fn identity(&self) -> &str {
        &self.git_url
    }

    /// A short, filesystem-safe name for this remote (last path component, sanitized).
    pub fn slug(&self) -> String {
        let last = self
            .git_url
            .trim_end_matches('/')
            .rsplit(['/', ':'])
            .next()
            .unwrap_or("repo")
            .trim_end_matches(".git");
        let slug: String = last
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        if slug.is_empty() {
            "repo".into()
        } else {
            slug
        }
    }
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

/// Whether `input` is a URL with a password in it (`scheme://user:password@host/...`), as
/// [`Remote::parse`] would lift it out.
pub fn url_has_password(input: &str) -> bool {
    let input = input.trim();
    input.contains("://") && url::Url::parse(input).is_ok_and(|u| u.password().is_some())
}

/// Resolves `.` and `..` lexically, so `.` becomes the directory's own name (and slug).
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// git's rule for scp-like syntax: a colon before any slash, and not a Windows drive letter.
fn is_scp_like(s: &str) -> bool {
    match (s.find(':'), s.find('/')) {
        (Some(colon), slash) => colon > 1 && slash.is_none_or(|sl| colon < sl),
        _ => false,
    }
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let (b'%', Some(Some(hi)), Some(Some(lo))) = (
            bytes[i],
            bytes.get(i + 1).map(|b| hex(*b)),
            bytes.get(i + 2).map(|b| hex(*b)),
        ) {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Removes `user:password@` from anything that looks like a URL in free text (git's messages,
/// user input echoed in errors). Defense in depth: ferry never puts credentials in URLs itself.
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '/' || c == '\'' || c == '"')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) if authority[..at].contains(':') => {
                let user = &authority[..authority.find(':').unwrap_or(at)];
                out.push_str(user);
                out.push_str(":***");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Remote {
        Remote::parse(s, Path::new("/work")).unwrap()
    }

    #[test]
    fn lifts_credentials_out_of_https_urls() {
        let r = parse("https://bot:p%40ss@git.example.com/org/app.git");
        assert_eq!(r.git_url(), "https://git.example.com/org/app.git");
        assert_eq!(r.display(), "https://bot@git.example.com/org/app.git");
        assert_eq!(r.credentials.username.as_deref(), Some("bot"));
        assert_eq!(
            r.credentials.password.as_ref().map(Secret::expose),
            Some("p@ss")
        );
        assert_eq!(r.transport, Transport::Http);
        assert!(
            !format!("{r:?}").contains("p@ss"),
            "Debug must not show the secret"
        );
    }

    #[test]
    fn the_origin_of_an_http_remote_is_scheme_host_and_port() {
        assert_eq!(
            parse("https://bot:pw@Git.Example.com:8443/org/app.git").http_origin(),
            Some("https://git.example.com:8443".into())
        );
        assert_eq!(
            parse("https://git.example.com:443/app.git").http_origin(),
            Some("https://git.example.com".into())
        );
        assert_eq!(
            parse("http://[::1]:8080/app.git").http_origin(),
            Some("http://[::1]:8080".into())
        );
        assert_eq!(parse("ssh://git@h/r.git").http_origin(), None);
    }

    #[test]
    fn tells_urls_with_a_password_from_the_rest() {
        assert!(url_has_password("https://bot:tok@h/r.git"));
        assert!(url_has_password("ssh://git:pw@h/r.git"));
        assert!(!url_has_password("https://bot@h/r.git"));
        assert!(!url_has_password("https://h/r.git"));
        assert!(!url_has_password("git@h:org/r.git"));
        assert!(!url_has_password("./user:pw@dir/r.git"));
    }

    #[test]
    fn recognises_every_transport() {
        assert_eq!(parse("ssh://git@h:2222/r.git").transport, Transport::Ssh);
        assert_eq!(parse("git@github.com:org/r.git").transport, Transport::Ssh);
        assert_eq!(parse("git://h/r.git").transport, Transport::GitDaemon);
        assert_eq!(parse("file:///srv/r.git").transport, Transport::Local);
        let local = parse("backups/r.git");
        assert_eq!(local.transport, Transport::Local);
        assert_eq!(local.git_url(), "/work/backups/r.git");
        assert_eq!(
            local.local_path(),
            Some(PathBuf::from("/work/backups/r.git"))
        );
        assert_eq!(
            parse("file:///srv/r.git").local_path(),
            Some(PathBuf::from("/srv/r.git"))
        );
        assert_eq!(parse("./a:b/r.git").transport, Transport::Local);
        assert_eq!(parse(".").git_url(), "/work");
        assert_eq!(parse("../x/./r.git").git_url(), "/x/r.git");
    }

    #[test]
    fn rejects_helpers_and_unknown_schemes_without_echoing_secrets() {
        let e = Remote::parse("ftp://u:hunter2@h/r", Path::new("/")).unwrap_err();
        assert!(
            e.contains("unsupported scheme") && !e.contains("hunter2"),
            "{e}"
        );
        assert!(Remote::parse("ext::sh -c evil", Path::new("/")).is_err());
        assert!(Remote::parse("  ", Path::new("/")).is_err());
    }

    #[test]
    fn redacts_passwords_in_free_text() {
        assert_eq!(
            redact_text("fatal: unable to access 'https://u:tok@h/r.git/': 403"),
            "fatal: unable to access 'https://u:***@h/r.git/': 403"
        );
        assert_eq!(
            redact_text("https://h/x and ssh://git@h/y"),
            "https://h/x and ssh://git@h/y"
        );
    }

    #[test]
    fn slugs_are_filesystem_safe() {
        assert_eq!(parse("https://h/org/my.app.git").slug(), "my_app");
        assert_eq!(parse("git@h:org/r.git").slug(), "r");
    }
}
