//! The measured operations.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Method {
    /// `ferry sync` with a warm cache, one new commit on the source.
    Ferry,
    /// `git fetch --prune` into a warm bare repo + push of the changed ref.
    RawCached,
    /// Push of only the new commit from a repo that already has it.
    Floor,
    /// Fresh `git clone --mirror` + `git push --mirror` (the classic Lambda).
    Classic,
    /// `ferry sync --ref refs/heads/main=<new id>` with its own warm cache: what an event
    /// naming the ref (a webhook, a post-receive hook) runs.
    FerryEvent,
    /// `ferry sync` when nothing changed.
    FerryNoop,
    /// `ferry sync --ref refs/heads/main=<id>` when the destination has that id already (an
    /// event whose refs already match).
    FerryEventNoop,
    /// One `git ls-remote SOURCE`.
    LsRemote,
}

impl Method {
    /// The methods that propagate a new commit, each to its own destination.
    pub const PROPAGATING: [Method; 5] = [
        Method::Ferry,
        Method::FerryEvent,
        Method::RawCached,
        Method::Floor,
        Method::Classic,
    ];

    /// The destination repository this method pushes to (each no-op reuses
    /// its sync's, which is in sync right after that run).
    pub fn destination(self) -> Option<&'static str> {
        match self {
            Method::Ferry | Method::FerryNoop => Some("dest-ferry"),
            Method::FerryEvent | Method::FerryEventNoop => Some("dest-event"),
            Method::RawCached => Some("dest-raw"),
            Method::Floor => Some("dest-floor"),
            Method::Classic => Some("dest-classic"),
            Method::LsRemote => None,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Ferry => "ferry",
            Method::RawCached => "raw cached",
            Method::Floor => "floor",
            Method::Classic => "classic",
            Method::FerryEvent => "ferry event",
            Method::FerryNoop => "ferry no-op",
            Method::FerryEventNoop => "ferry event no-op",
            Method::LsRemote => "ls-remote",
        })
    }
}
