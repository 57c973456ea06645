//! Which local files an upload sends, and the path each gets in the transfer.
//!
//! The rules are scp's and rsync's: a relative path is kept as written (`.` sends the current
//! folder's contents); an absolute path, or one that climbs out of the current folder with
//! `..`, lands under its last component; `--prefix` puts everything under one folder.
//! Symbolic links are refused with their path unless `--follow-links`. Hostile names are not
//! judged here: the server has the one set of rules and answers with a message naming the file.

use anyhow::{anyhow, bail, Context};
use globset::{Glob, GlobSet, GlobSetBuilder};
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// A regular file to send.
#[derive(Debug, Clone)]
pub struct LocalFile {
    /// Where it is read from.
    pub local: PathBuf,
    /// Its path in the transfer.
    pub remote: String,
    pub size: u64,
    /// Modification time (seconds, nanoseconds): with the size, what says "unchanged".
    pub mtime: (i64, i64),
}

/// Something under the given paths that is not sent, and why (a link, a socket...).
#[derive(Debug, Clone)]
pub struct Refused {
    pub local: String,
    pub error: String,
}

#[derive(Debug, Default)]
pub struct Selection {
    /// Sorted by `remote`, each remote path once.
    pub files: Vec<LocalFile>,
    pub refused: Vec<Refused>,
    /// Files left out by `--exclude`.
    pub excluded: u64,
}

/// What to walk and how.
pub struct Options<'a> {
    pub prefix: Option<&'a str>,
    pub excludes: &'a [String],
    pub follow_links: bool,
}

/// The path in the transfer that `arg` itself gets (`None`: its contents go to the top).
pub fn base_of(arg: &Path, cwd: &Path) -> anyhow::Result<Option<String>> {
    let mut kept: Vec<String> = Vec::new();
    let mut climbs_out = arg.is_absolute();
    for c in arg.components() {
        match c {
            Component::Normal(s) => kept.push(utf8(s, arg)?.to_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                if kept.pop().is_none() {
                    climbs_out = true;
                }
            }
            Component::RootDir | Component::Prefix(_) => {}
        }
    }
    if !climbs_out {
        return Ok((!kept.is_empty()).then(|| kept.join("/")));
    }
    // Outside the current folder: only the last component is kept, of the path as the
    // filesystem resolves it (`..` has no name of its own).
    let abs = if arg.is_absolute() {
        arg.to_owned()
    } else {
        cwd.join(arg)
    };
    let resolved = abs
        .canonicalize()
        .with_context(|| format!("cannot read {}", arg.display()))?;
    let name = resolved.file_name().ok_or_else(|| {
        anyhow!(
            "{} has no last component to upload under; name a folder inside it",
            arg.display()
        )
    })?;
    Ok(Some(utf8(name, arg)?.to_owned()))
}

fn utf8<'a>(s: &'a std::ffi::OsStr, whole: &Path) -> anyhow::Result<&'a str> {
    s.to_str()
        .ok_or_else(|| anyhow!("{} is not a UTF-8 path", whole.display()))
}

/// Joins path parts, skipping empty ones.
fn join(parts: &[Option<&str>]) -> String {
    parts
        .iter()
        .flatten()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("/")
}

/// The exclude globs; `*` crosses folders, as in rsync's `**`-less patterns matched on names.
pub fn excludes(globs: &[String]) -> anyhow::Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for g in globs {
        b.add(Glob::new(g).with_context(|| format!("--exclude {g:?} is not a valid glob"))?);
    }
    Ok(b.build()?)
}

/// Walks every argument. Errors that concern the whole command (an argument that does not
/// exist, two files landing on one path) stop it; a link or a special file is refused alone.
pub fn select(args: &[PathBuf], opts: &Options<'_>) -> anyhow::Result<Selection> {
    let cwd = std::env::current_dir().context("cannot read the current folder")?;
    let globs = excludes(opts.excludes)?;
    let prefix = opts
        .prefix
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty());
    let mut sel = Selection::default();
    // Folders already walked (device, inode), so a followed link cannot loop.
    let mut seen_dirs: HashSet<(u64, u64)> = HashSet::new();
    for arg in args {
        let base = base_of(arg, &cwd)?;
        std::fs::symlink_metadata(arg).with_context(|| format!("cannot read {}", arg.display()))?;
        // (local path, path below the argument's base)
        let mut stack: Vec<(PathBuf, String)> = vec![(arg.clone(), String::new())];
        while let Some((local, rel)) = stack.pop() {
            let shown = local.display().to_string();
            let name = local
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let under_base = join(&[base.as_deref(), Some(&rel)]);
            if !under_base.is_empty() && (globs.is_match(&under_base) || globs.is_match(name)) {
                sel.excluded += 1;
                continue;
            }
            let lmeta = std::fs::symlink_metadata(&local)
                .with_context(|| format!("cannot read {shown}"))?;
            let meta = if lmeta.file_type().is_symlink() {
                if !opts.follow_links {
                    sel.refused.push(Refused {
                        local: shown.clone(),
                        error: format!(
                            "{shown} is a symbolic link; refused (use --follow-links to send what it points to)"
                        ),
                    });
                    continue;
                }
                match std::fs::metadata(&local) {
                    Ok(m) => m,
                    Err(e) => {
                        sel.refused.push(Refused {
                            local: shown.clone(),
                            error: format!(
                                "{shown} is a symbolic link that cannot be followed: {e}"
                            ),
                        });
                        continue;
                    }
                }
            } else {
                lmeta
            };
            if meta.is_dir() {
                if !seen_dirs.insert((meta.dev(), meta.ino())) {
                    continue;
                }
                let mut entries = Vec::new();
                for e in
                    std::fs::read_dir(&local).with_context(|| format!("cannot list {shown}"))?
                {
                    let e = e.with_context(|| format!("cannot list {shown}"))?;
                    let Some(n) = e.file_name().to_str().map(str::to_owned) else {
                        let p = e.path().display().to_string();
                        sel.refused.push(Refused {
                            error: format!("{p} is not a UTF-8 name; refused"),
                            local: p,
                        });
                        continue;
                    };
                    entries.push((e.path(), join(&[Some(&rel), Some(&n)])));
                }
                // Reverse order onto the stack: popped in name order.
                entries.sort_by(|a, b| b.1.cmp(&a.1));
                stack.extend(entries);
            } else if meta.is_file() {
                let remote = join(&[prefix, base.as_deref(), Some(&rel)]);
                if remote.is_empty() {
                    bail!("{shown} has no name to upload under");
                }
                sel.files.push(LocalFile {
                    local,
                    remote,
                    size: meta.len(),
                    mtime: (meta.mtime(), meta.mtime_nsec()),
                });
            } else {
                sel.refused.push(Refused {
                    local: shown.clone(),
                    error: format!("{shown} is not a regular file or folder; refused"),
                });
            }
        }
    }
    sel.files.sort_by(|a, b| a.remote.cmp(&b.remote));
    for w in sel.files.windows(2) {
        if w[0].remote == w[1].remote {
            bail!(
                "{} and {} would both be sent as `{}`; upload them separately or use --prefix",
                w[0].local.display(),
                w[1].local.display(),
                w[0].remote
            );
        }
    }
    Ok(sel)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(arg: &str, cwd: &Path) -> Option<String> {
        base_of(Path::new(arg), cwd).unwrap()
    }

    #[test]
    fn relative_paths_are_kept_and_dot_is_the_contents() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(base(".", d.path()), None);
        assert_eq!(base("./a/b", d.path()).as_deref(), Some("a/b"));
        assert_eq!(base("a/./c/../b", d.path()).as_deref(), Some("a/b"));
    }

    #[test]
    fn absolute_or_climbing_paths_land_under_their_last_component() {
        let d = tempfile::tempdir().unwrap();
        let inner = d.path().join("work/here");
        std::fs::create_dir_all(&inner).unwrap();
        std::fs::create_dir_all(d.path().join("data")).unwrap();
        assert_eq!(
            base(d.path().join("data").to_str().unwrap(), &inner).as_deref(),
            Some("data")
        );
        assert_eq!(base("../../data", &inner).as_deref(), Some("data"));
        assert_eq!(base("..", &inner).as_deref(), Some("work"));
        assert!(base_of(Path::new("/"), &inner).is_err());
    }

    #[test]
    fn join_skips_missing_parts() {
        assert_eq!(join(&[None, Some("a"), Some("")]), "a");
        assert_eq!(join(&[Some("p"), Some("a"), Some("b/c")]), "p/a/b/c");
    }

    #[test]
    fn excludes_match_names_and_paths() {
        let g = excludes(&["*.tmp".into(), "cache".into(), "a/b/**".into()]).unwrap();
        assert!(g.is_match("x/y.tmp"));
        assert!(g.is_match("cache"));
        assert!(g.is_match("a/b/c/d"));
        assert!(!g.is_match("a/c"));
        assert!(excludes(&["[".into()]).is_err());
    }
}
