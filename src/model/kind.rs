//! Error kinds: the closed vocabulary ferry uses to say *why* something failed, with the hint a
//! user needs to fix it. Classification of git's stderr lives here too, so that every adapter
//! (fetch, list, push) speaks the same words.

use serde::Serialize;

/// Why a destination, a source or a single ref failed. Serialized in snake_case in `--json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    Auth,
    Permission,
    NotFound,
    HostKeyUnknown,
    HostKeyChanged,
    HiddenRef,
    Protected,
    NonFastForward,
    DeletionProhibited,
    TooLarge,
    Redirect,
    Timeout,
    Network,
    Lease,
    ShallowSource,
    Diverged,
    LfsMissing,
    Config,
    Other,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Auth => "auth",
            ErrorKind::Permission => "permission",
            ErrorKind::NotFound => "not_found",
            ErrorKind::HostKeyUnknown => "host_key_unknown",
            ErrorKind::HostKeyChanged => "host_key_changed",
            ErrorKind::HiddenRef => "hidden_ref",
            ErrorKind::Protected => "protected",
            ErrorKind::NonFastForward => "non_fast_forward",
            ErrorKind::DeletionProhibited => "deletion_prohibited",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Redirect => "redirect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Network => "network",
            ErrorKind::Lease => "lease",
            ErrorKind::ShallowSource => "shallow_source",
            ErrorKind::Diverged => "diverged",
            ErrorKind::LfsMissing => "lfs_missing",
            ErrorKind::Config => "config",
            ErrorKind::Other => "other",
        }
    }

    /// Transient kinds may succeed on a plain retry; the others need someone to change something.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorKind::Timeout | ErrorKind::Network | ErrorKind::Lease
        )
    }

    /// What a user should do about a failure of this kind. Written for the person reading the
    /// report, not for the developer.
    pub fn hint(self) -> &'static str {
        match self {
            ErrorKind::Auth => "the server refused the credentials: check the username and the password or token (password_env / password_file, or FERRY_*_USERNAME / FERRY_*_PASSWORD) and that the token has not expired",
            ErrorKind::Permission => "the credentials are valid but may not do this: give the user or token write access to the repository (for GitHub, a token with the repo / contents:write scope)",
            ErrorKind::NotFound => "check the URL; create the repository on the server first, or pass --create for a local destination path",
            ErrorKind::HostKeyUnknown => "the SSH host key is not in known_hosts: add it (ssh-keyscan -p PORT HOST >> known_hosts, then verify the fingerprint) and point known_hosts / FERRY_KNOWN_HOSTS at the file",
            ErrorKind::HostKeyChanged => "the SSH server presented a different host key than known_hosts records: this may be an attack; if the server's key really changed, verify the new fingerprint and replace the line in known_hosts",
            ErrorKind::HiddenRef => "the destination hides this ref namespace and refuses pushes to it (GitHub refuses refs/pull/*): exclude it, e.g. --exclude 'refs/pull/*'",
            ErrorKind::Protected => "a hook or branch protection rule on the destination refused this ref: allow ferry's user to push it, or exclude the ref",
            ErrorKind::NonFastForward => "the destination refuses non-fast-forward updates (receive.denyNonFastForwards or branch protection): allow force pushes for ferry's user, or exclude the ref",
            ErrorKind::DeletionProhibited => "the destination refuses ref deletions (receive.denyDeletes or branch protection): allow deletions, or use --prune never",
            ErrorKind::TooLarge => "the server refused the request as too large (HTTP 413): raise the server's request body limit (e.g. nginx client_max_body_size), or push over SSH",
            ErrorKind::Redirect => "the server answered with a redirect, which ferry does not follow for a remote with credentials (so the password cannot follow it to another host), nor after git's first request: use the URL it redirects to (the Location header of curl -sI 'URL/info/refs?service=git-upload-pack'), e.g. a renamed repository's new name",
            ErrorKind::Timeout => "git made no progress within the time limit: check that the server is reachable and healthy, or raise --timeout",
            ErrorKind::Network => "the connection failed or was cut: check the host, port, proxy and TLS settings (ca_file for a private CA); a rerun resumes where this one stopped",
            ErrorKind::Lease => "someone pushed to the destination while ferry was syncing; ferry re-planned once and it moved again: rerun to sync against the new state",
            ErrorKind::ShallowSource => "the source is a shallow clone and cannot serve a complete history: mirror from a full clone (git fetch --unshallow)",
            ErrorKind::Diverged => "the destination holds commits ferry never pushed (someone pushed there directly): move them to the source, or use --divergence overwrite to replace them",
            ErrorKind::LfsMissing => "the source's LFS server does not have an LFS object this ref points to, so a checkout of it would show a pointer file: upload the object to the source (git lfs push --object-id REMOTE OID from a clone that has it), or set lfs_missing = \"push\" to mirror the ref with a dangling pointer",
            ErrorKind::Config => "fix the configuration as the message says",
            ErrorKind::Other => "rerun with -v for git's full output",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Classifies a whole-operation failure (fetch, ls-remote, push) from git's stderr.
/// Ordered from the most specific signal to the least; `Other` when nothing matches.
pub fn classify_stderr(stderr: &str) -> ErrorKind {
    let s = stderr.to_ascii_lowercase();
    let has = |needle: &str| s.contains(needle);
    if has("remote host identification has changed") || has("host key for") && has("has changed") {
        ErrorKind::HostKeyChanged
    } else if has("host key verification failed") || has("no ") && has("host key is known") {
        ErrorKind::HostKeyUnknown
    } else if has("shallow update not allowed")
        || has("source repository is shallow")
        || has("shallow roots are not allowed")
    {
        ErrorKind::ShallowSource
    } else if has("http 413")
        || has("returned error: 413")
        || has("request entity too large")
        || has("413 request")
    {
        ErrorKind::TooLarge
    } else if ["301", "302", "303", "307", "308"]
        .iter()
        .any(|code| has(&format!("returned error: {code}")))
    {
        ErrorKind::Redirect
    } else if has("authentication failed")
        || has("could not read username")
        || has("could not read password")
        || has("http 401")
        || has("returned error: 401")
        || has("permission denied (publickey")
        || has("invalid username or password")
    {
        ErrorKind::Auth
    } else if has("no such repository") || has("repository not exported") {
        // git daemon's words for a missing repository (without --informative-errors it
        // cannot tell missing from not exported).
        ErrorKind::NotFound
    } else if has("http 403")
        || has("returned error: 403")
        || has("403 forbidden")
        || has("permission to ") && has("denied")
        || has("access denied")
        || has("service not enabled")
    {
        ErrorKind::Permission
    } else if has("repository not found")
        || has("does not appear to be a git repository")
        || has("http 404")
        || has("returned error: 404")
        || has("not found")
        || has("no such file or directory")
        || has("not a git repository")
        || has("invalid gitfile format")
    {
        ErrorKind::NotFound
    } else if has("could not resolve host")
        || has("connection refused")
        || has("failed to connect")
        || has("couldn't connect")
        || has("connection reset")
        || has("connection timed out")
        || has("unable to connect")
        || has("unexpected disconnect")
        || has("early eof")
        || has("the remote end hung up")
        || has("rpc failed")
        || has("broken pipe")
        || has("connection closed")
        || has("could not read from remote repository")
        || has("unable to access")
        || has("ssl")
        || has("tls")
        || has("protocol error")
        || has("http 5")
    {
        ErrorKind::Network
    } else {
        ErrorKind::Other
    }
}

/// Classifies one ref's rejection reason as `git push --porcelain` prints it, e.g.
/// `[remote rejected] (deny updating a hidden ref)` or `[rejected] (stale info)`.
pub fn classify_ref_rejection(summary: &str) -> ErrorKind {
    let s = summary.to_ascii_lowercase();
    let has = |needle: &str| s.contains(needle);
    if has("stale info") {
        ErrorKind::Lease
    } else if has("hidden ref") {
        ErrorKind::HiddenRef
    } else if has("deletion prohibited") || has("deletion of the current branch prohibited") {
        ErrorKind::DeletionProhibited
    } else if has("non-fast-forward") || has("fetch first") || has("needs force") {
        ErrorKind::NonFastForward
    } else if has("hook declined") || has("protected") || has("declined") {
        ErrorKind::Protected
    } else if has("shallow update not allowed") {
        ErrorKind::ShallowSource
    } else if has("permission") || has("denied") {
        ErrorKind::Permission
    } else {
        ErrorKind::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_whole_operation_failures() {
        let cases = [
            ("fatal: Authentication failed for 'https://h/r.git/'", ErrorKind::Auth),
            ("fatal: could not read Username for 'https://h': terminal prompts disabled", ErrorKind::Auth),
            ("git@h: Permission denied (publickey).", ErrorKind::Auth),
            ("fatal: unable to access 'https://h/r.git/': The requested URL returned error: 403", ErrorKind::Permission),
            ("error: RPC failed; HTTP 403 curl 22 The requested URL returned error: 403", ErrorKind::Permission),
            ("remote: Repository not found.\nfatal: repository 'https://h/r.git/' not found", ErrorKind::NotFound),
            ("fatal: '/x/y.git' does not appear to be a git repository", ErrorKind::NotFound),
            // A local path that is a plain file, not a repository: nothing a retry can fix.
            ("fatal: invalid gitfile format: /srv/x.git\nfatal: Could not read from remote repository.\n\nPlease make sure you have the correct access rights\nand the repository exists.", ErrorKind::NotFound),
            ("No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.\nHost key verification failed.", ErrorKind::HostKeyUnknown),
            ("@@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@@\nHost key verification failed.", ErrorKind::HostKeyChanged),
            ("error: RPC failed; HTTP 413 curl 22 The requested URL returned error: 413", ErrorKind::TooLarge),
            ("fatal: unable to access 'http://h/r.git/': The requested URL returned error: 302", ErrorKind::Redirect),
            ("error: RPC failed; HTTP 301 curl 22 The requested URL returned error: 301", ErrorKind::Redirect),
            ("fatal: unable to connect to 127.0.0.1:\n127.0.0.1[0: 127.0.0.1]: errno=Connection refused", ErrorKind::Network),
            ("fatal: early EOF\nfatal: fetch-pack: invalid index-pack output", ErrorKind::Network),
            ("! [rejected] main (shallow update not allowed)", ErrorKind::ShallowSource),
            ("fatal: remote error: no such repository: /nope.git", ErrorKind::NotFound),
            ("warning: rejected refs/heads/main because shallow roots are not allowed to be updated", ErrorKind::ShallowSource),
            ("fatal: something nobody has seen", ErrorKind::Other),
        ];
        for (stderr, want) in cases {
            assert_eq!(classify_stderr(stderr), want, "{stderr}");
        }
    }

    #[test]
    fn classifies_ref_rejections() {
        let cases = [
            ("[rejected] (stale info)", ErrorKind::Lease),
            (
                "[remote rejected] (deny updating a hidden ref)",
                ErrorKind::HiddenRef,
            ),
            (
                "[remote rejected] (deletion prohibited)",
                ErrorKind::DeletionProhibited,
            ),
            (
                "[remote rejected] (non-fast-forward)",
                ErrorKind::NonFastForward,
            ),
            ("[rejected] (non-fast-forward)", ErrorKind::NonFastForward),
            ("[remote rejected] (hook declined)", ErrorKind::Protected),
            (
                "[remote rejected] (protected branch hook declined)",
                ErrorKind::Protected,
            ),
            (
                "[remote failure] (remote failed to report status)",
                ErrorKind::Other,
            ),
        ];
        for (summary, want) in cases {
            assert_eq!(classify_ref_rejection(summary), want, "{summary}");
        }
    }
}
