//! The source's refs as a fetch's own ref listing gave them, read from git's packet trace
//! (`GIT_TRACE_PACKET`). A fetch lists the source (protocol v2 `ls-refs`) before it
//! negotiates and receives a pack; with the listing in hand that early, a run knows whether
//! anything changed, and which push it will most likely make, while the fetch goes on: one git
//! process and one round trip instead of a listing followed by a fetch.
//!
//! The trace is git's, not a promised format: anything unexpected (protocol v0, whose
//! advertisement is not an `ls-refs` answer; a line that does not parse; a ref name the trace
//! escaped) yields no listing, and the run waits for the fetch as it would without one.

use crate::model::refs::Oid;

/// Reads a fetch's packet trace, line by line, for the answer to its `ls-refs` command.
#[derive(Debug, Default)]
pub struct LsRefsAnswer {
    state: State,
    /// The listing so far, as `ls-remote` prints it (`<id> <ref>` lines).
    listing: String,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum State {
    /// Before the fetch sent `command=ls-refs`.
    #[default]
    BeforeCommand,
    /// The fetch is sending the rest of its command.
    Asking,
    /// The server's answer is coming.
    Answering,
    /// The answer ended (or the trace was not what was expected): nothing more to read.
    Done,
}

impl LsRefsAnswer {
    /// Reads one line of the trace; returns the listing once the answer has ended (once).
    pub fn line(&mut self, line: &str) -> Option<String> {
        if self.state == State::Done {
            return None;
        }
        // `<time> pkt-line.c:<n>  packet:  fetch< <payload>`; `git<`/`git>` lines are
        // the transport helper relaying the same packets.
        let packet = line.split_once(" packet: ")?.1.trim_start();
        let (sent, payload) = match (
            packet.strip_prefix("fetch> "),
            packet.strip_prefix("fetch< "),
        ) {
            (Some(payload), _) => (true, payload),
            (_, Some(payload)) => (false, payload),
            _ => return None,
        };
        match (&self.state, sent) {
            (State::BeforeCommand, true) if payload == "command=ls-refs" => {
                self.state = State::Asking;
            }
            (State::BeforeCommand, _) => {}
            (State::Asking, true) => {}
            (State::Asking | State::Answering, false) => {
                self.state = State::Answering;
                if payload == "0000" {
                    self.state = State::Done;
                    return Some(std::mem::take(&mut self.listing));
                }
                // `<id> <ref>[ <attribute>...]`; an unborn HEAD (`unborn HEAD ...`) is no ref.
                // A name with a backslash is one the trace escaped (a byte past ASCII): no
                // ref name holds one, so the listing cannot be read from this trace.
                let mut words = payload.split(' ');
                match (words.next(), words.next()) {
                    (Some(id), Some(name)) if Oid::parse(id).is_some() && !name.contains('\\') => {
                        self.listing.push_str(id);
                        self.listing.push(' ');
                        self.listing.push_str(name);
                        self.listing.push('\n');
                    }
                    (Some("unborn"), _) => {}
                    _ => self.state = State::Done,
                }
            }
            (State::Answering, true) | (State::Done, _) => self.state = State::Done,
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(trace: &str) -> Option<String> {
        let mut answer = LsRefsAnswer::default();
        let mut got = None;
        for line in trace.lines() {
            if let Some(listing) = answer.line(line) {
                assert!(got.is_none(), "the listing comes once");
                got = Some(listing);
            }
        }
        got
    }

    fn packet(who: &str, payload: &str) -> String {
        format!("06:32:45.622395 pkt-line.c:86           packet:        {who} {payload}\n")
    }

    const A: &str = "a0699256b1ae2924612d5f4b8db30b3b84c16365";
    const B: &str = "c76f61f35dbe6f38aba4599dbdd63c892c354cb3";

    /// A protocol v2 fetch over HTTP as git 2.47 traces it (capabilities, `ls-refs`, fetch).
    fn v2_fetch(answer: &[&str]) -> String {
        let mut trace: String = ["version 2", "agent=git/2.47.3", "ls-refs=unborn", "0000"]
            .iter()
            .map(|p| packet("git<", p) + &packet("fetch<", p))
            .collect();
        for p in [
            "command=ls-refs",
            "agent=git/2.47.3",
            "0001",
            "peel",
            "symrefs",
            "ref-prefix refs/heads/",
            "ref-prefix refs/tags/",
            "0000",
        ] {
            trace += &packet("fetch>", p);
            trace += &packet("git<", p);
        }
        trace += &packet("git>", "0002");
        for p in answer {
            trace += &packet("fetch<", p);
        }
        trace += &packet("fetch<", "0000");
        for p in ["command=fetch", "0001", &format!("want {A}"), "0000"] {
            trace += &packet("fetch>", p);
        }
        trace += &packet("fetch<", "packfile");
        trace += &packet("sideband<", "PACK ...");
        trace
    }

    #[test]
    fn the_ls_refs_answer_is_the_listing_as_ls_remote_prints_it() {
        let trace = v2_fetch(&[
            &format!("{A} refs/heads/main"),
            &format!("{B} refs/tags/v1 peeled:{A}"),
            "unborn HEAD symref-target:refs/heads/main",
        ]);
        assert_eq!(
            read(&trace).as_deref(),
            Some(format!("{A} refs/heads/main\n{B} refs/tags/v1\n").as_str())
        );
    }

    #[test]
    fn an_empty_answer_is_an_empty_listing() {
        assert_eq!(read(&v2_fetch(&[])).as_deref(), Some(""));
    }

    #[test]
    fn no_listing_from_a_trace_without_an_ls_refs_command_or_with_a_line_that_does_not_parse() {
        // Protocol v0: the advertisement comes unasked, with capabilities after a NUL.
        let v0 = packet(
            "fetch<",
            &format!("{A} refs/heads/main\0multi_ack thin-pack"),
        ) + &packet("fetch<", "0000")
            + &packet("fetch>", &format!("want {A} multi_ack"));
        assert_eq!(read(&v0), None);
        assert_eq!(read(&v2_fetch(&["what is this"])), None);
        assert_eq!(read("not a trace at all\n"), None);
    }

    #[test]
    fn no_listing_when_the_trace_escaped_a_ref_name() {
        // git's trace prints a byte past ASCII as an octal escape (here `refs/heads/café`); a
        // ref name never holds a backslash, so the name as traced is not the ref's.
        let escaped = format!("{A} refs/heads/caf\\37777777703\\37777777651");
        assert_eq!(
            read(&v2_fetch(&[&format!("{B} refs/heads/main"), &escaped])),
            None
        );
    }
}
