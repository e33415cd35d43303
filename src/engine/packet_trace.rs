//! The source's refs as a fetch's own ref listing gave them, read from git's packet trace
//! (`GIT_TRACE_PACKET`). A fetch lists the source (protocol v2 `ls-refs`, or the
//! advertisement a protocol v0 server sends first) before it negotiates and receives a pack;
//! with the listing in hand that early, a run knows whether anything changed, and which push it
//! will most likely make, while the fetch goes on: one git process and one round trip instead
//! of a listing followed by a fetch.
//!
//! The trace is git's, not a promised format: anything unexpected (a line that does not
//! parse; a ref name the trace escaped) yields no listing, and the run waits for the fetch as
//! it would without one. Over HTTP, a v0 advertisement is read by the fetch's transport helper
//! (`git<` lines), a v2 answer by the fetch itself.

use crate::model::refs::Oid;

/// Reads a fetch's packet trace, line by line, for the source's listing: the answer to its
/// `ls-refs` command (protocol v2), or the advertisement the server opened with (v0).
#[derive(Debug, Default)]
pub struct TracedListing {
    state: State,
    /// The listing so far, as `ls-remote` prints it (`<id> <ref>` lines).
    listing: String,
    /// Whether the listing is a v0 advertisement the transport helper read (HTTP): then only
    /// the helper's lines are read.
    via_helper: bool,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum State {
    /// Before the fetch sent `command=ls-refs`, or received a v0 advertisement.
    #[default]
    BeforeCommand,
    /// The fetch is sending the rest of its command.
    Asking,
    /// The server's answer is coming.
    Answering,
    /// The answer ended (or the trace was not what was expected): nothing more to read.
    Done,
}

/// What separates a v0 advertisement's first ref from the server's capabilities, as the trace
/// prints it (a NUL, escaped).
const V0_CAPABILITIES: &str = "\\0";

impl TracedListing {
    /// Reads one line of the trace; returns the listing once the answer has ended (once).
    pub fn line(&mut self, line: &str) -> Option<String> {
        if self.state == State::Done {
            return None;
        }
        // `<time> pkt-line.c:<n>  packet:  fetch< <payload>`; `git<`/`git>` lines are
        // the transport helper relaying the same packets.
        let packet = line.split_once(" packet: ")?.1.trim_start();
        if let Some(payload) = packet.strip_prefix("git< ") {
            return self.helper_line(payload);
        }
        if self.via_helper {
            return None;
        }
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
            // Protocol v0: the server opens with its refs, the first one carrying its
            // capabilities (a v2 server's capability lines never hold a NUL).
            (State::BeforeCommand, false) if payload.contains(V0_CAPABILITIES) => {
                self.state = State::Answering;
                let first = payload.split(V0_CAPABILITIES).next().unwrap_or_default();
                self.answer_line(first);
            }
            (State::BeforeCommand, _) => {}
            (State::Asking, true) => {}
            (State::Asking | State::Answering, false) => {
                self.state = State::Answering;
                if payload == "0000" {
                    self.state = State::Done;
                    return Some(std::mem::take(&mut self.listing));
                }
                self.answer_line(payload);
            }
            (State::Answering, true) | (State::Done, _) => self.state = State::Done,
        }
        None
    }

    /// Reads one packet the transport helper received. Over HTTP the helper reads a v0
    /// advertisement (the first ref carrying the capabilities, as the fetch would see it) and
    /// hands it on; its other lines (v2's capabilities, the requests it relays) hold no NUL
    /// and no listing.
    fn helper_line(&mut self, payload: &str) -> Option<String> {
        match self.state {
            State::BeforeCommand if payload.contains(V0_CAPABILITIES) => {
                self.via_helper = true;
                self.state = State::Answering;
                let first = payload.split(V0_CAPABILITIES).next().unwrap_or_default();
                self.answer_line(first);
            }
            State::Answering if self.via_helper => {
                if payload == "0000" {
                    self.state = State::Done;
                    return Some(std::mem::take(&mut self.listing));
                }
                self.answer_line(payload);
            }
            _ => {}
        }
        None
    }

    /// Takes one ref of the answer: `<id> <ref>[ <attribute>...]`. An unborn HEAD (`unborn
    /// HEAD ...`, v2) and an empty repository's `capabilities^{}` (v0) are no refs; peeled
    /// tags (`<ref>^{}`, v0) and HEAD are kept, as `ls-remote` prints them. A name with a
    /// backslash is one the trace escaped (a byte past ASCII): no ref name holds one, so the
    /// listing cannot be read from this trace.
    fn answer_line(&mut self, payload: &str) {
        let mut words = payload.split(' ');
        match (words.next(), words.next()) {
            (Some(_), Some("capabilities^{}")) | (Some("unborn"), _) => {}
            (Some(id), Some(name)) if Oid::parse(id).is_some() && !name.contains('\\') => {
                self.listing.push_str(id);
                self.listing.push(' ');
                self.listing.push_str(name);
                self.listing.push('\n');
            }
            _ => self.state = State::Done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(trace: &str) -> Option<String> {
        let mut answer = TracedListing::default();
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
    fn no_listing_from_a_trace_without_one_or_with_a_line_that_does_not_parse() {
        assert_eq!(read(&v2_fetch(&["what is this"])), None);
        assert_eq!(read("not a trace at all\n"), None);
        // What the helper hands `fetch-pack` is not read: the helper's own lines are.
        let handed = packet(
            "fetch-pack<",
            &format!("{A} refs/heads/main\\0multi_ack thin-pack"),
        ) + &packet("fetch-pack<", "0000");
        assert_eq!(read(&handed), None);
    }

    #[test]
    fn a_protocol_v0_advertisement_over_http_is_read_from_the_transport_helper() {
        // As git 2.47 traces `fetch -c protocol.version=0` over HTTP: the helper reads the
        // advertisement (after the `# service` line), hands the wanted refs and then the
        // whole advertisement to `fetch-pack`, and relays its request.
        let caps = "multi_ack thin-pack side-band side-band-64k ofs-delta shallow agent=git/2.47.3";
        let mut trace = packet("git<", "# service=git-upload-pack") + &packet("git<", "0000");
        trace += &packet("git<", &format!("{A} refs/heads/dev\\0{caps}"));
        trace += &packet("git<", &format!("{B} refs/pull/1/head"));
        trace += &packet("git<", &format!("{B} refs/tags/v1^{{}}"));
        trace += &packet("git<", "0000");
        trace += &packet("git>", &format!("{A} refs/heads/dev"));
        trace += &packet("git>", "0000");
        trace += &packet("fetch-pack<", &format!("{A} refs/heads/dev"));
        trace += &packet("fetch-pack<", "0000");
        trace += &packet("fetch-pack<", &format!("{A} refs/heads/dev\\0{caps}"));
        trace += &packet("fetch-pack>", &format!("want {A} multi_ack_detailed"));
        trace += &packet("git<", &format!("00b0want {A} multi_ack_detailed"));
        assert_eq!(
            read(&trace).as_deref(),
            Some(
                format!("{A} refs/heads/dev\n{B} refs/pull/1/head\n{B} refs/tags/v1^{{}}\n")
                    .as_str()
            )
        );
        // A v2 fetch's helper lines (capabilities, relayed requests) are no listing.
        assert_eq!(
            read(&v2_fetch(&[&format!("{A} refs/heads/main")])).as_deref(),
            Some(format!("{A} refs/heads/main\n").as_str())
        );
    }

    /// A protocol v0 fetch (over SSH or `git://`) as git 2.47 traces it: the server's
    /// advertisement, its first line carrying the capabilities after an escaped NUL.
    fn v0_fetch(refs: &[&str]) -> String {
        let caps = "multi_ack thin-pack side-band-64k ofs-delta agent=git/2.47.3";
        let mut trace = String::new();
        for (i, r) in refs.iter().enumerate() {
            let payload = match i {
                0 => format!("{r}\\0{caps}"),
                _ => r.to_string(),
            };
            trace += &packet("upload-pack>", &payload);
            trace += &packet("fetch<", &payload);
        }
        trace += &packet("fetch<", "0000");
        trace += &packet("fetch>", &format!("want {A} multi_ack_detailed"));
        trace += &packet("fetch>", "0000");
        trace += &packet("fetch>", "done");
        trace += &packet("fetch<", "NAK");
        trace
    }

    #[test]
    fn a_protocol_v0_advertisement_is_the_listing_as_ls_remote_prints_it() {
        let trace = v0_fetch(&[
            &format!("{A} HEAD"),
            &format!("{A} refs/heads/main"),
            &format!("{B} refs/tags/v1"),
            &format!("{A} refs/tags/v1^{{}}"),
        ]);
        assert_eq!(
            read(&trace).as_deref(),
            Some(
                format!("{A} HEAD\n{A} refs/heads/main\n{B} refs/tags/v1\n{A} refs/tags/v1^{{}}\n")
                    .as_str()
            )
        );
        // An empty repository advertises its capabilities alone.
        let zero = "0".repeat(40);
        assert_eq!(
            read(&v0_fetch(&[&format!("{zero} capabilities^{{}}")])).as_deref(),
            Some("")
        );
        // A v0 name the trace escaped.
        let escaped = format!("{A} refs/heads/caf\\37777777703\\37777777651");
        assert_eq!(read(&v0_fetch(&[&format!("{A} HEAD"), &escaped])), None);
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
