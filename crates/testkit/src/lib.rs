//! Test infrastructure for ferry: real git servers on loopback, no mocks.
//!
//! Ferry's job is talking to git remotes over every transport, so its tests
//! need the real thing: [`Servers`] starts nginx + fcgiwrap +
//! git-http-backend (HTTP with Basic auth, HTTPS with a self-signed
//! certificate, and a body-size-limited location), sshd and git daemon in a
//! temp dir, all serving the same bare repositories. [`TcpProxy`] injects
//! network faults, [`WorkRepo`] makes commits to push, and [`generate_repo`]
//! builds large repositories for benchmarks in seconds. [`github::GitHubFake`]
//! serves GitHub's REST API for repositories backed by [`Servers`], checked
//! against GitHub's own OpenAPI description; [`gitlab::GitLabFake`] does the
//! same for GitLab, [`gitea::GiteaFake`] for Gitea and Forgejo and
//! [`bitbucket::BitbucketFake`] for Bitbucket Cloud (all on [`fakehost`], the
//! harness shared by these hosts). [`codecommit::CodeCommitFake`] serves AWS
//! CodeCommit's API, checked against botocore's service model.
//!
//! Everything is isolated from the host: configs, keys, logs and repos live
//! in a temp dir, `git` runs without system/global config, and all servers
//! (with their process groups) are killed on drop — or by a watchdog if the
//! test process dies without dropping them.
//!
//! Required Debian packages: git, nginx-light, fcgiwrap, openssh-server,
//! openssh-client, openssl, postgresql (scripts/test.sh installs them).
//! [`Postgres`] starts a PostgreSQL server for the store's tests.
//!
//! # Gotchas
//!
//! * `GIT_SSL_CAINFO` (set in some CI images) overrides `-c http.sslCAInfo`;
//!   [`git_command`] removes it, but code under test that spawns git with the
//!   inherited environment must do the same or HTTPS verification fails.
//! * A `Servers` kept in a `static` is never dropped; the watchdog then
//!   stops the servers and deletes the temp dir about a second after the test
//!   process exits.
//! * The reader's push is refused by git-http-backend itself (nginx passes an
//!   empty `REMOTE_USER` for everyone but [`WRITER`]), so the 403 comes after
//!   successful authentication, and a wrong password still gets 401.
//! * A push rejected with 413 makes git exit with status 1 and print
//!   "Everything up-to-date" after "error: RPC failed; HTTP 413".
//! * Set `FERRY_TESTKIT_VERBOSE=1` to log start-up and shutdown timings.

pub mod bitbucket;
pub mod codecommit;
pub mod fakehost;
mod git;
pub mod gitea;
pub mod github;
pub mod gitlab;
mod lfs;
mod postgres;
mod process;
mod proxy;
mod servers;

pub use git::{
    generate_repo, git, git_binary, git_command, git_with_env, run_git, test_bytes, WorkRepo,
    GIT_DATE, GIT_EMAIL, GIT_NAME,
};
pub use lfs::{LfsRequest, LfsServer, JWT_KEY};
pub use postgres::{Postgres, POSTGRES_USER};
pub use proxy::{ProxyMode, TcpProxy};
pub use servers::{
    Servers, ASKPASS_PASSWORD_VAR, ASKPASS_USER_VAR, LFS_USER, READER, SMALL_BODY_LIMIT, WRITER,
};

#[cfg(test)]
mod tests {
    /// `Servers` is meant to be shareable (e.g. in a `OnceLock`) across test
    /// threads; the proxy and work repos move between threads.
    #[test]
    fn public_types_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<crate::Servers>();
        assert_send_sync::<crate::TcpProxy>();
        assert_send_sync::<crate::WorkRepo>();
        assert_send_sync::<crate::github::GitHubFake>();
        assert_send_sync::<crate::gitlab::GitLabFake>();
        assert_send_sync::<crate::gitea::GiteaFake>();
        assert_send_sync::<crate::bitbucket::BitbucketFake>();
        assert_send_sync::<crate::codecommit::CodeCommitFake>();
    }
}
