//! File-type sniffing: the type comes from the file's first bytes (the `infer` crate's magic
//! numbers, plus `#!` for scripts), never from its name, and is checked against the policy's
//! deny and allow lists for the transfer's kind.

use super::{Outcome, Scanner, Target, Versions};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
}

pub struct FileType {
    name: String,
    groups: BTreeMap<String, Vec<String>>,
}

/// Bytes read to sniff a type.
const HEAD: usize = 8192;

impl FileType {
    pub fn new(name: &str, c: Config) -> Self {
        Self {
            name: name.to_owned(),
            groups: c.groups,
        }
    }

    /// The MIME types a list entry stands for (a group's members, or itself).
    fn expand<'a>(&'a self, entry: &'a str) -> Vec<&'a str> {
        match self.groups.get(entry) {
            Some(g) => g.iter().map(String::as_str).collect(),
            None => vec![entry],
        }
    }
}

/// The content type of a file's first bytes.
pub fn sniff(head: &[u8]) -> &'static str {
    if let Some(t) = infer::get(head) {
        return t.mime_type();
    }
    if head.starts_with(b"#!") {
        return "text/x-shellscript";
    }
    // Valid UTF-8 (a multi-byte character cut at the end of the head is fine).
    match std::str::from_utf8(head) {
        Ok(_) => "text/plain",
        Err(e) if e.error_len().is_none() => "text/plain",
        Err(_) => "application/octet-stream",
    }
}

pub fn read_head(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = Vec::with_capacity(HEAD);
    f.by_ref().take(HEAD as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

#[async_trait::async_trait]
impl Scanner for FileType {
    fn name(&self) -> &str {
        &self.name
    }

    async fn versions(&self) -> Result<Versions, String> {
        Ok(Versions {
            scanner: "airlock-filetype (infer 0.22)".into(),
            database: String::new(),
        })
    }

    fn reads_memory(&self) -> bool {
        true
    }

    async fn scan(&self, target: &Target<'_>) -> Result<Outcome, String> {
        let head = match target.data {
            Some(data) => data.slice(..data.len().min(HEAD)).to_vec(),
            None => {
                let path = target.path.to_owned();
                tokio::task::spawn_blocking(move || read_head(&path))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("cannot read the file: {e}"))?
            }
        };
        if head.is_empty() {
            return Ok(Outcome::Clean);
        }
        let mime = sniff(&head);
        let Some(lists) = target.rules.filetype.get(target.kind.as_str()) else {
            return Ok(Outcome::Clean);
        };
        for entry in &lists.deny {
            if self.expand(entry).contains(&mime) {
                return Ok(Outcome::Infected(format!(
                    "Airlock.FileType.Denied: {mime} (denied: {entry})"
                )));
            }
        }
        if !lists.allow.is_empty()
            && !lists
                .allow
                .iter()
                .any(|entry| self.expand(entry).contains(&mime))
        {
            return Ok(Outcome::Infected(format!(
                "Airlock.FileType.NotAllowed: {mime} (allowed: {})",
                lists.allow.join(", ")
            )));
        }
        Ok(Outcome::Clean)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing_reads_content_not_names() {
        let mut elf = b"\x7fELF\x02\x01\x01\0".to_vec();
        elf.resize(64, 0);
        elf[16] = 2; // ET_EXEC
        assert_eq!(sniff(&elf), "application/x-executable");
        assert_eq!(
            sniff(b"MZ\x90\0"),
            "application/vnd.microsoft.portable-executable"
        );
        assert_eq!(sniff(b"#!/bin/sh\necho hi\n"), "text/x-shellscript");
        assert_eq!(sniff(b"id,age\n1,42\n"), "text/plain");
        assert_eq!(
            sniff(&[0xff, 0xfe, 0x00, 0x81, 0x00]),
            "application/octet-stream"
        );
    }
}
