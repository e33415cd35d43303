//! How the source and destinations are reached: file:// or smart HTTP
//! (testkit's nginx + git-http-backend, Basic auth as WRITER).

use std::fmt;

use ferry_testkit::{Servers, WRITER};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    File,
    Http,
}

/// Variables read by the credential helper of the git baselines.
const USER_VAR: &str = "FERRY_BENCH_GIT_USERNAME";
const PASSWORD_VAR: &str = "FERRY_BENCH_GIT_PASSWORD";

/// A credential helper that answers from the environment, so the password
/// is in neither URLs nor argv (it is passed as config through
/// `GIT_CONFIG_COUNT`, the same way ferry configures its own helper).
const CREDENTIAL_HELPER: &str = "!f() { test \"$1\" = get || exit 0; \
     echo \"username=$FERRY_BENCH_GIT_USERNAME\"; echo \"password=$FERRY_BENCH_GIT_PASSWORD\"; }; f";

impl Transport {
    pub const ALL: [Transport; 2] = [Transport::File, Transport::Http];

    pub fn url(self, servers: &Servers, repo: &str) -> String {
        match self {
            Transport::File => servers.file_url(repo),
            Transport::Http => servers.http_url(repo),
        }
    }

    /// Extra environment for a plain `git` baseline talking to this transport.
    pub fn git_env(self) -> Vec<(&'static str, &'static str)> {
        match self {
            Transport::File => vec![],
            Transport::Http => vec![
                ("GIT_CONFIG_COUNT", "1"),
                ("GIT_CONFIG_KEY_0", "credential.helper"),
                ("GIT_CONFIG_VALUE_0", CREDENTIAL_HELPER),
                (USER_VAR, WRITER.0),
                (PASSWORD_VAR, WRITER.1),
            ],
        }
    }

    /// Extra environment for `ferry sync` (its documented credential variables).
    pub fn ferry_env(self) -> Vec<(&'static str, &'static str)> {
        match self {
            Transport::File => vec![],
            Transport::Http => vec![
                ("FERRY_SOURCE_USERNAME", WRITER.0),
                ("FERRY_SOURCE_PASSWORD", WRITER.1),
                ("FERRY_DEST_USERNAME", WRITER.0),
                ("FERRY_DEST_PASSWORD", WRITER.1),
            ],
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::File => "file",
            Transport::Http => "http",
        })
    }
}
