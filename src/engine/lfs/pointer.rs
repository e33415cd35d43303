//! Git LFS pointer files (spec v1): the small blob git stores in place of a large file.
//!
//! ```text
//! version https://git-lfs.github.com/spec/v1
//! oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393
//! size 12345
//! ```
//!
//! Pure: the blob's bytes in, a pointer or nothing out. Public for the fuzz targets: the blobs
//! come from whoever pushed to the source.

/// git-lfs never writes a pointer larger than this, and reads no larger blob as one.
pub const MAX_POINTER_SIZE: u64 = 1024;

/// The spec's version URLs: the current one and the one of git-lfs's first releases.
const VERSIONS: [&str; 2] = [
    "https://git-lfs.github.com/spec/v1",
    "https://hawser.github.com/spec/v1",
];

/// One LFS object as a pointer names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pointer {
    /// sha256 of the content, 64 lower-case hex digits.
    pub oid: String,
    pub size: u64,
}

/// The pointer `blob` is, if it is one: a `version` line first, then `oid sha256:<hex>` and
/// `size <n>` among `key value` lines, each ending in a newline.
pub fn parse(blob: &[u8]) -> Option<Pointer> {
    if blob.len() as u64 > MAX_POINTER_SIZE || !blob.ends_with(b"\n") {
        return None;
    }
    let text = std::str::from_utf8(blob).ok()?;
    let mut lines = text.lines();
    let version = lines.next()?.strip_prefix("version ")?;
    if !VERSIONS.contains(&version) {
        return None;
    }
    let (mut oid, mut size) = (None, None);
    for line in lines {
        let (key, value) = line.split_once(' ')?;
        match key {
            "oid" => oid = Some(parse_oid(value)?),
            "size" => size = Some(parse_size(value)?),
            _ if key.starts_with("ext-") => {}
            _ => return None,
        }
    }
    Some(Pointer {
        oid: oid?,
        size: size?,
    })
}

/// An LFS object id: 64 lower-case hex digits (what a server and a local store are keyed by).
pub fn is_oid(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn parse_oid(value: &str) -> Option<String> {
    let hex = value.strip_prefix("sha256:")?;
    is_oid(hex).then(|| hex.to_owned())
}

fn parse_size(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OID: &str = "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393";

    fn pointer(text: &str) -> Option<Pointer> {
        parse(text.as_bytes())
    }

    #[test]
    fn a_pointer_written_by_git_lfs_is_read() {
        let text =
            format!("version https://git-lfs.github.com/spec/v1\noid sha256:{OID}\nsize 12345\n");
        assert_eq!(
            pointer(&text),
            Some(Pointer {
                oid: OID.into(),
                size: 12345
            })
        );
        let old = format!("version https://hawser.github.com/spec/v1\noid sha256:{OID}\nsize 0\n");
        assert_eq!(pointer(&old).map(|p| p.size), Some(0));
        let extended = format!("version https://git-lfs.github.com/spec/v1\next-0-foo sha256:{OID}\noid sha256:{OID}\nsize 7\n");
        assert_eq!(pointer(&extended).map(|p| p.size), Some(7));
    }

    #[test]
    fn anything_else_is_not_a_pointer() {
        let good =
            format!("version https://git-lfs.github.com/spec/v1\noid sha256:{OID}\nsize 12\n");
        for text in [
            String::new(),
            "hello\n".to_owned(),
            good.trim_end().to_owned(),
            good.replace("spec/v1", "spec/v2"),
            good.replace("sha256:", "sha1:"),
            good.replace(OID, &OID.to_uppercase()),
            good.replace(OID, &OID[1..]),
            good.replace("size 12", "size -1"),
            good.replace("size 12", "size 1.5"),
            good.replace("size 12", "size"),
            good.replace("size 12\n", ""),
            good.replace(&format!("oid sha256:{OID}\n"), ""),
            format!("oid sha256:{OID}\n{good}"),
            good.replace("size 12", "size 12\nbogus x"),
            format!("{good}{}\n", "x".repeat(1100)),
        ] {
            assert_eq!(pointer(&text), None, "{text:?}");
        }
        assert_eq!(parse(&[0xff, b'\n']), None);
    }
}
