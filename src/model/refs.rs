//! Ref names, object ids and the include/exclude patterns that select which refs a mirror carries.

use std::collections::BTreeMap;
use std::fmt;

use super::mirror::short_hash_of_parts;

/// A full hex object id as git prints it (SHA-1 or SHA-256).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Oid(String);

impl Oid {
    /// Accepts 40 (SHA-1) or 64 (SHA-256) lowercase hex digits.
    pub fn parse(s: &str) -> Option<Oid> {
        Oid::valid(s).then(|| Oid(s.to_owned()))
    }

    fn valid(s: &str) -> bool {
        (s.len() == 40 || s.len() == 64)
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The abbreviation used in human output.
    pub fn short(&self) -> &str {
        &self.0[..10]
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Ref name -> object id, sorted by name so plans and reports are deterministic.
pub type RefMap = BTreeMap<String, Oid>;

/// A full ref name that is nothing but a name: no refspec, pattern or revision syntax, no
/// whitespace or control characters, so that `+name:name` fetches exactly that ref.
///
/// One pass over the bytes: every name of a local repository's ref files goes through here
/// (three tables of 10k refs in a no-op sync), where a check per rule cost a fifth of the run.
pub fn is_plain_ref_name(name: &str) -> bool {
    if !name.starts_with("refs/")
        || name.ends_with('/')
        || name.ends_with('.')
        || name.ends_with(".lock")
    {
        return false;
    }
    let mut previous = 0u8;
    for &byte in name.as_bytes() {
        let refused = match byte {
            // ASCII controls and whitespace.
            0..=b' ' | 0x7f => true,
            b':' | b'?' | b'*' | b'[' | b'\\' | b'^' | b'~' => true,
            b'.' | b'/' => previous == byte,
            b'{' => previous == b'@',
            _ => false,
        };
        if refused {
            return false;
        }
        previous = byte;
    }
    // Beyond ASCII: Unicode's controls and whitespace (a no-break space, say).
    name.is_ascii() || !name.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// Parses `<oid> SP|TAB <refname>` lines (for-each-ref and ls-remote output). Peeled tag lines
/// (`^{}`), `HEAD` and anything that is not a full ref under `refs/` are dropped: ferry never
/// pushes symbolic refs.
pub fn parse_ref_listing(text: &str) -> RefMap {
    ref_listing(text).collect()
}

/// The entries of a listing, in git's order (sorted by name, so collecting into a map is a
/// bulk build rather than one search per ref).
pub fn ref_listing(text: &str) -> impl Iterator<Item = (String, Oid)> + '_ {
    listing_lines(text).map(|(name, oid)| (name.to_owned(), Oid(oid.to_owned())))
}

/// [`ref_listing`]'s entries as `(name, oid)` slices of `text`, each oid valid.
fn listing_lines(text: &str) -> impl Iterator<Item = (&str, &str)> + '_ {
    text.lines().filter_map(|line| {
        let (oid, name) = line.split_once(['\t', ' '])?;
        let name = name.trim();
        let oid = oid.trim();
        let listed = name.starts_with("refs/") && !name.ends_with("^{}") && Oid::valid(oid);
        listed.then_some((name, oid))
    })
}

/// A digest of a ref table: equal digests, equal tables. The
/// [`short_hash`](super::mirror::short_hash) of its
/// [`format_ref_listing`], hashed line by line (10k refs would make a 700 kB string).
pub fn refs_digest(refs: &RefMap) -> String {
    table_digest(refs.iter().map(|(name, oid)| (name.as_str(), oid.as_str())))
}

fn table_digest<'a>(entries: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    short_hash_of_parts(entries.flat_map(|(name, oid)| [oid, " ", name, "\n"]))
}

/// Finds names in a ref table by one walk over it, for names asked in ascending order (as a
/// plan lists them): a lookup in a table of 10,000 refs compares about 14 names, and a sync
/// makes several per ref. A name asked out of order is looked up in the table (still right,
/// only slower).
pub struct SortedLookup<'t> {
    table: &'t RefMap,
    rest: std::iter::Peekable<std::collections::btree_map::Iter<'t, String, Oid>>,
    /// The greatest name walked past: every name asked after it must be greater.
    passed: Option<&'t str>,
}

impl<'t> SortedLookup<'t> {
    pub fn new(table: &'t RefMap) -> SortedLookup<'t> {
        SortedLookup {
            table,
            rest: table.iter().peekable(),
            passed: None,
        }
    }

    pub fn get(&mut self, name: &str) -> Option<&'t Oid> {
        if self.passed.is_some_and(|passed| passed >= name) {
            return self.table.get(name);
        }
        while let Some(&(key, oid)) = self.rest.peek() {
            match key.as_str().cmp(name) {
                std::cmp::Ordering::Less => {
                    self.passed = Some(key);
                    self.rest.next();
                }
                std::cmp::Ordering::Equal => return Some(oid),
                std::cmp::Ordering::Greater => return None,
            }
        }
        None
    }
}

/// The inverse of [`parse_ref_listing`]: `<oid> SP <refname>` lines in name order (bytewise,
/// as git sorts), which is also the body of a `packed-refs` file.
pub fn format_ref_listing(refs: &RefMap) -> String {
    let mut text = String::with_capacity(refs.len() * 80);
    for (name, oid) in refs {
        text.push_str(oid.as_str());
        text.push(' ');
        text.push_str(name);
        text.push('\n');
    }
    text
}

/// A ref pattern in git refspec syntax: a full ref name under `refs/`, with at most one `*`
/// that matches any string, slashes included (as in `refs/heads/*` matching `refs/heads/a/b`).
/// Keeping to refspec syntax means the same pattern can be handed to `git fetch` unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefPattern {
    text: String,
}

impl RefPattern {
    pub fn parse(text: &str) -> Result<RefPattern, String> {
        if !text.starts_with("refs/") {
            return Err(format!(
                "ref pattern '{text}' must be a full ref name starting with refs/ (for example refs/heads/* or refs/tags/v*)"
            ));
        }
        if text.matches('*').count() > 1 {
            return Err(format!(
                "ref pattern '{text}' has more than one '*'; git refspecs allow one (for example refs/heads/release-*)"
            ));
        }
        let bad = |c: char| c.is_ascii_control() || " ~^:?[\\".contains(c);
        if text.contains(bad)
            || text.contains("..")
            || text.ends_with('/')
            || text.ends_with(".lock")
        {
            return Err(format!(
                "ref pattern '{text}' is not a valid git ref name (no spaces, ~ ^ : ? [ \\, '..', or trailing '/')"
            ));
        }
        Ok(RefPattern {
            text: text.to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn matches(&self, name: &str) -> bool {
        match self.text.split_once('*') {
            None => self.text == name,
            Some((prefix, suffix)) => {
                name.len() >= prefix.len() + suffix.len()
                    && name.starts_with(prefix)
                    && name.ends_with(suffix)
            }
        }
    }
}

impl fmt::Display for RefPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Which refs a mirror carries: included by any `include`, not matched by any `exclude`, and
/// never `refs/remotes/*` (another repository's remote-tracking state, not this repository's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefSelection {
    pub include: Vec<RefPattern>,
    pub exclude: Vec<RefPattern>,
}

impl Default for RefSelection {
    fn default() -> Self {
        RefSelection {
            include: DEFAULT_INCLUDE
                .iter()
                .map(|p| RefPattern {
                    text: (*p).to_owned(),
                })
                .collect(),
            exclude: Vec::new(),
        }
    }
}

pub const DEFAULT_INCLUDE: &[&str] = &["refs/heads/*", "refs/tags/*"];

impl RefSelection {
    /// A stable text naming this selection, for keying what is kept per selection: the
    /// include and exclude patterns in order.
    pub fn key(&self) -> String {
        let mut key = String::new();
        for p in &self.include {
            key.push_str(&format!("+{p}\n"));
        }
        for p in &self.exclude {
            key.push_str(&format!("^{p}\n"));
        }
        key
    }

    pub fn selects(&self, name: &str) -> bool {
        !name.starts_with("refs/remotes/")
            && self.include.iter().any(|p| p.matches(name))
            && !self.exclude.iter().any(|p| p.matches(name))
    }

    /// The selected refs of a listing (`<oid> <name>` lines).
    pub fn parse(&self, listing: &str) -> RefMap {
        listing_lines(listing)
            .filter(|(name, _)| self.selects(name))
            .map(|(name, oid)| (name.to_owned(), Oid(oid.to_owned())))
            .collect()
    }

    /// [`refs_digest`] of [`RefSelection::parse`] of `listing`, made without building the
    /// table (no allocation per ref), when the selected lines are in strictly ascending name
    /// order, as git lists them; `None` otherwise (then only the table tells).
    pub fn listing_digest(&self, listing: &str) -> Option<String> {
        let mut previous: Option<&str> = None;
        let mut ordered = true;
        let digest = table_digest(
            listing_lines(listing)
                .filter(|(name, _)| self.selects(name))
                .map_while(|(name, oid)| {
                    ordered = previous.is_none_or(|previous| previous < name);
                    previous = Some(name);
                    ordered.then_some((name, oid))
                }),
        );
        ordered.then_some(digest)
    }

    /// Refspecs that fetch exactly the selected namespaces into the same names in the cache,
    /// forced (the cache follows the source, force-pushes included), with negative refspecs
    /// for the excludes so excluded refs are not even transferred.
    pub fn fetch_refspecs(&self) -> Vec<String> {
        let mut specs: Vec<String> = self.include.iter().map(|p| format!("+{p}:{p}")).collect();
        specs.extend(self.exclude.iter().map(|p| format!("^{p}")));
        specs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(s: &str) -> RefPattern {
        RefPattern::parse(s).unwrap()
    }

    /// The rules of [`is_plain_ref_name`], one check each.
    fn plain_by_the_rules(name: &str) -> bool {
        name.starts_with("refs/")
            && !name.ends_with('/')
            && !name.ends_with('.')
            && !name.ends_with(".lock")
            && !name.contains("..")
            && !name.contains("@{")
            && !name.contains("//")
            && !name
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || ":?*[\\^~".contains(c))
    }

    proptest::proptest! {
        #[test]
        fn the_one_pass_plain_name_check_follows_the_rules(
            tail in "[a-z./@{}:?*\\[\\\\^~ \t\n\u{7f}\u{a0}\u{85}é-]{0,12}"
        ) {
            for name in [format!("refs/heads/{tail}"), tail.clone()] {
                proptest::prop_assert_eq!(is_plain_ref_name(&name), plain_by_the_rules(&name), "{:?}", name);
            }
        }
    }

    #[test]
    fn star_matches_across_slashes_like_git_refspecs() {
        assert!(pat("refs/heads/*").matches("refs/heads/main"));
        assert!(pat("refs/heads/*").matches("refs/heads/feature/x"));
        assert!(!pat("refs/heads/*").matches("refs/tags/v1"));
        assert!(pat("refs/tags/v*-rc").matches("refs/tags/v1.0-rc"));
        assert!(!pat("refs/tags/v*-rc").matches("refs/tags/v1.0"));
        assert!(pat("refs/notes/commits").matches("refs/notes/commits"));
        assert!(!pat("refs/notes/commits").matches("refs/notes/commitsx"));
    }

    #[test]
    fn rejects_patterns_git_would_not_accept() {
        for bad in [
            "heads/*",
            "refs/*/x/*",
            "refs/heads/a b",
            "refs/heads/x?",
            "refs/heads/",
            "refs/a..b",
        ] {
            assert!(RefPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn selection_excludes_and_never_takes_remote_tracking_refs() {
        let sel = RefSelection {
            include: vec![pat("refs/*")],
            exclude: vec![pat("refs/pull/*")],
        };
        assert!(sel.selects("refs/heads/main"));
        assert!(!sel.selects("refs/pull/1/head"));
        assert!(!sel.selects("refs/remotes/origin/main"));
        assert_eq!(sel.fetch_refspecs(), vec!["+refs/*:refs/*", "^refs/pull/*"]);
    }

    #[test]
    fn parses_listings_dropping_peeled_and_symbolic_entries() {
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        let text = format!("{a}\tHEAD\n{a}\trefs/heads/main\n{b}\trefs/tags/v1\n{a}\trefs/tags/v1^{{}}\n{b} refs/heads/x\nnonsense\n");
        let refs = parse_ref_listing(&text);
        assert_eq!(refs.len(), 3);
        assert_eq!(refs["refs/tags/v1"].as_str(), b);
        assert_eq!(refs["refs/heads/x"].as_str(), b);
        let text = format_ref_listing(&refs);
        assert_eq!(
            text,
            format!("{a} refs/heads/main\n{b} refs/heads/x\n{b} refs/tags/v1\n"),
            "one line per ref, sorted by name"
        );
        assert_eq!(parse_ref_listing(&text), refs);
    }

    #[test]
    fn a_sorted_lookup_finds_what_the_table_holds_in_any_order_of_asking() {
        let table: RefMap = ["b", "d", "f"]
            .iter()
            .map(|n| (format!("refs/heads/{n}"), Oid(n.repeat(40))))
            .collect();
        let names: Vec<String> = ["a", "b", "c", "d", "e", "f", "g"]
            .iter()
            .map(|n| format!("refs/heads/{n}"))
            .collect();
        let mut ascending = SortedLookup::new(&table);
        for name in &names {
            assert_eq!(ascending.get(name), table.get(name), "{name}");
        }
        // Out of order and asked twice: answered by the table.
        let mut any = SortedLookup::new(&table);
        for i in [3, 3, 5, 1, 6, 0, 3, 2, 4] {
            assert_eq!(any.get(&names[i]), table.get(&names[i]), "{}", names[i]);
        }
    }

    #[test]
    fn a_ref_table_s_digest_is_the_hash_of_its_listing() {
        // Pollers compare digests stored by earlier versions: the value must not change.
        let refs: RefMap = [
            ("refs/heads/main".to_owned(), Oid("a".repeat(40))),
            ("refs/tags/v1".to_owned(), Oid("b".repeat(40))),
        ]
        .into();
        assert_eq!(
            refs_digest(&refs),
            super::super::mirror::short_hash(format_ref_listing(&refs))
        );
        assert_eq!(
            refs_digest(&RefMap::new()),
            super::super::mirror::short_hash("")
        );
    }

    #[test]
    fn a_listing_s_digest_is_its_selected_table_s_digest_when_git_listed_it_in_order() {
        let (a, b) = ("a".repeat(40), "b".repeat(40));
        let sel = RefSelection {
            include: vec![pat("refs/heads/*"), pat("refs/tags/*")],
            exclude: vec![pat("refs/heads/wip/*")],
        };
        // What the table drops is skipped: HEAD, peeled tags, excluded and unselected refs,
        // lines that are no ref line.
        let text = format!(
            "{a}\tHEAD\n{a}\trefs/heads/main\n{b}\trefs/heads/wip/x\n{a}\trefs/notes/n\n\
             {b}\trefs/tags/v1\n{a}\trefs/tags/v1^{{}}\nnonsense\nzz refs/tags/v2\n{b} refs/tags/v3\n"
        );
        let table = sel.parse(&text);
        assert_eq!(table.len(), 3);
        assert_eq!(sel.listing_digest(&text), Some(refs_digest(&table)));
        assert_eq!(sel.listing_digest(""), Some(refs_digest(&RefMap::new())));
        // Out of order, or a name twice: only the table can tell.
        let unordered = format!("{a}\trefs/tags/v1\n{b}\trefs/heads/main\n");
        assert_eq!(sel.listing_digest(&unordered), None);
        let twice = format!("{a}\trefs/heads/main\n{b}\trefs/heads/main\n");
        assert_eq!(sel.listing_digest(&twice), None);
        // Another id, another digest.
        let moved = text.replace(
            &format!("{a}\trefs/heads/main"),
            &format!("{b}\trefs/heads/main"),
        );
        assert_ne!(sel.listing_digest(&moved), sel.listing_digest(&text));
    }
}
