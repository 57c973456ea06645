//! Relative paths of uploaded files. Every rule that keeps a hostile name from escaping its
//! folder, hiding from a reviewer or colliding with another file lives here.

use serde::Serialize;
use std::fmt;
use unicode_normalization::UnicodeNormalization;

/// Longest allowed path segment in bytes (the usual filesystem limit).
pub const MAX_SEGMENT_BYTES: usize = 255;
/// Longest allowed path in bytes.
pub const MAX_PATH_BYTES: usize = 1024;
/// Deepest allowed nesting.
pub const MAX_DEPTH: usize = 32;

/// Why a path was refused. The message names the problem so the uploader can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is empty")]
    Empty,
    #[error("path `{0}` is absolute: send paths relative to the transfer's root")]
    Absolute(String),
    #[error("path `{0}` contains a `..` or `.` segment")]
    DotSegment(String),
    #[error("path `{0}` contains a backslash: use `/` between folders")]
    Backslash(String),
    #[error("path {0:?} contains a NUL or control character")]
    ControlCharacter(String),
    #[error("path `{0}` has an empty segment (`//` or a trailing `/`)")]
    EmptySegment(String),
    #[error("a segment of path `{path}` is {len} bytes long; the limit is {MAX_SEGMENT_BYTES}")]
    SegmentTooLong { path: String, len: usize },
    #[error("path is {0} bytes long; the limit is {MAX_PATH_BYTES}")]
    TooLong(usize),
    #[error("path `{0}` is nested deeper than {MAX_DEPTH} folders")]
    TooDeep(String),
    #[error("path `{0}` is not valid UTF-8")]
    NotUtf8(String),
    #[error("file name in `{0}` ends in `#` and digits, a form the storage layer reserves for partial writes")]
    Reserved(String),
    #[error("path {0:?} contains an invisible, direction-changing or slash-like character that could mislead a reviewer")]
    Deceptive(String),
}

/// A checked relative path: `/`-separated, non-empty UTF-8 segments, none of them `.` or `..`,
/// no control characters or backslashes, within the length limits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct RelPath(String);

impl RelPath {
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        if raw.is_empty() {
            return Err(PathError::Empty);
        }
        if raw.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong(raw.len()));
        }
        if raw.chars().any(|c| c.is_control()) {
            return Err(PathError::ControlCharacter(raw.to_owned()));
        }
        if raw.contains('\\') {
            return Err(PathError::Backslash(raw.to_owned()));
        }
        if raw.chars().any(is_deceptive) {
            return Err(PathError::Deceptive(raw.to_owned()));
        }
        if raw.starts_with('/') || (raw.len() >= 2 && raw.as_bytes()[1] == b':') {
            return Err(PathError::Absolute(raw.to_owned()));
        }
        let segments: Vec<&str> = raw.split('/').collect();
        if segments.len() > MAX_DEPTH {
            return Err(PathError::TooDeep(raw.to_owned()));
        }
        for seg in &segments {
            if seg.is_empty() {
                return Err(PathError::EmptySegment(raw.to_owned()));
            }
            if *seg == "." || *seg == ".." {
                return Err(PathError::DotSegment(raw.to_owned()));
            }
            // A segment whose compatibility form is `..` or holds a slash (`．．`, `a／b`) would
            // read as a traversal to a person or a normalising tool.
            let folded: String = seg.nfkc().collect();
            if folded == "." || folded == ".." || folded.contains(['/', '\\']) {
                return Err(PathError::Deceptive(raw.to_owned()));
            }
            if seg.len() > MAX_SEGMENT_BYTES {
                return Err(PathError::SegmentTooLong {
                    path: raw.to_owned(),
                    len: seg.len(),
                });
            }
        }
        if let Some((_, suffix)) = segments[segments.len() - 1].rsplit_once('#') {
            if suffix.bytes().all(|b| b.is_ascii_digit()) && !suffix.is_empty() {
                return Err(PathError::Reserved(raw.to_owned()));
            }
        }
        Ok(RelPath(raw.to_owned()))
    }

    /// The object-store key of this path under `prefix`, keeping every character as the
    /// user wrote it (`PathPart::from` would percent-encode `[`, `%`, `~`… and the local
    /// backend would then write those encodings to disk as the file's name).
    pub fn object_path(
        &self,
        prefix: &object_store::path::Path,
    ) -> Result<object_store::path::Path, object_store::path::Error> {
        object_store::path::Path::parse(format!("{prefix}/{}", self.0))
    }

    /// Parses raw bytes (a URL-decoded path segment may not be UTF-8).
    pub fn parse_bytes(raw: &[u8]) -> Result<Self, PathError> {
        match std::str::from_utf8(raw) {
            Ok(s) => Self::parse(s),
            Err(_) => Err(PathError::NotUtf8(
                String::from_utf8_lossy(raw).into_owned(),
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key two paths collide on: Unicode compatibility normalisation (NFKC) and case folding,
    /// so `Data.csv`, `data.csv` and `ｄａｔａ.csv` cannot sit side by side and confuse a reviewer
    /// or a case-insensitive filesystem.
    pub fn collision_key(&self) -> String {
        self.0.nfkc().flat_map(char::to_lowercase).collect()
    }

    /// Collision keys of every folder above this path (`a`, `a/b` for `a/b/c`), so a file
    /// cannot share its name with a folder.
    pub fn parent_keys(&self) -> Vec<String> {
        let key = self.collision_key();
        key.match_indices('/')
            .map(|(i, _)| key[..i].to_owned())
            .collect()
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Format characters (zero-width, bidi controls, BOM, soft hyphen), line separators and
/// characters drawn like `/` or `\`.
fn is_deceptive(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        | '\u{FFA0}' | '\u{FFF0}'..='\u{FFFB}' | '\u{E0000}'..='\u{E0FFF}'
        | '\u{2044}' | '\u{2215}' | '\u{2216}' | '\u{29F5}' | '\u{29F8}' | '\u{29F9}'
        | '\u{FF0F}' | '\u{FF3C}' | '\u{1735}' | '\u{2571}' | '\u{2572}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_nested_paths_are_accepted() {
        for ok in [
            "a.csv",
            "dir/sub/file.tar.gz",
            "ünïcode/名前.txt",
            ".hidden",
        ] {
            assert_eq!(RelPath::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn every_hostile_name_is_refused_with_its_reason() {
        let long_seg = "x".repeat(256);
        let long_path = "a/".repeat(600);
        let deep = vec!["a"; 40].join("/");
        type Check = fn(&PathError) -> bool;
        let cases: Vec<(&str, Check)> = vec![
            ("", |e| matches!(e, PathError::Empty)),
            ("/etc/passwd", |e| matches!(e, PathError::Absolute(_))),
            ("C:/x", |e| matches!(e, PathError::Absolute(_))),
            ("../up", |e| matches!(e, PathError::DotSegment(_))),
            ("a/../../b", |e| matches!(e, PathError::DotSegment(_))),
            ("a/./b", |e| matches!(e, PathError::DotSegment(_))),
            ("a\\b", |e| matches!(e, PathError::Backslash(_))),
            ("a\0b", |e| matches!(e, PathError::ControlCharacter(_))),
            ("a\nb", |e| matches!(e, PathError::ControlCharacter(_))),
            ("a\u{7f}b", |e| matches!(e, PathError::ControlCharacter(_))),
            ("a//b", |e| matches!(e, PathError::EmptySegment(_))),
            ("a/", |e| matches!(e, PathError::EmptySegment(_))),
            (&long_seg, |e| matches!(e, PathError::SegmentTooLong { .. })),
            (&long_path, |e| matches!(e, PathError::TooLong(_))),
            (&deep, |e| matches!(e, PathError::TooDeep(_))),
            ("a/report#2", |e| matches!(e, PathError::Reserved(_))),
            ("report\u{202E}slx.exe", |e| {
                matches!(e, PathError::Deceptive(_))
            }),
            ("data\u{200B}.csv", |e| matches!(e, PathError::Deceptive(_))),
            ("a\u{2215}b", |e| matches!(e, PathError::Deceptive(_))),
            ("\u{FF0E}\u{FF0E}/x", |e| {
                matches!(e, PathError::Deceptive(_))
            }),
        ];
        for (raw, check) in cases {
            let err = RelPath::parse(raw).expect_err(raw);
            assert!(check(&err), "{raw:?} gave {err:?}");
        }
    }

    #[test]
    fn collision_keys_fold_case_and_width() {
        let a = RelPath::parse("Data/File.CSV").unwrap();
        let b = RelPath::parse("data/file.csv").unwrap();
        let c = RelPath::parse("ｄａｔａ/file.csv").unwrap();
        assert_eq!(a.collision_key(), b.collision_key());
        assert_eq!(b.collision_key(), c.collision_key());
        assert_eq!(a.parent_keys(), vec!["data".to_string()]);
    }
}
