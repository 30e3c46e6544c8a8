//! `unionmount diff`: the changes an upper directory makes to its lower layers.
//!
//! Output follows `docker diff`: `A` added, `C` changed, `D` deleted, one path per
//! line, absolute within the mount. Rules:
//! - an upper entry whose name resolves in the lowers (overlay lookup: whiteouts,
//!   opaque dirs and non-dir-over-dir cut it) is `C`, otherwise `A`; everything
//!   inside an added directory is `A`;
//! - a directory present in both is `C` when its mode, owner or mtime differ or when
//!   anything inside it changed, so every ancestor of a change is listed as `C`.
//!   (Current moby lists every ancestor of an added or deleted entry the same way,
//!   but for a file that was only changed lists its directories only when their
//!   own metadata differs; we treat all three kinds alike.)
//! - a whiteout is `D` when it hides something in the lowers (a whiteout that hides
//!   nothing is not a change); with no lowers known at all, every whiteout is `D`
//!   and every other entry `A`;
//! - an opaque directory that replaced a lower directory is `C`, and each name the
//!   lowers had in it that the upper does not re-create is `D` (re-created ones
//!   are `C`, and a re-created directory is treated the same way, since it hides
//!   the lower one's contents). Docker (moby `OverlayChanges`) reports such a directory itself as
//!   `D` although it still exists; we report what a user sees instead.
//!
//! - a renamed directory (redirect xattr, `overlay` rule 8) is compared as the mount
//!   shows it (through the lowers, where the redirect points) with what the lowers
//!   had at its new name: a move is `A` with everything it holds, and its old name
//!   `D` (the whiteout there); without the lowers it is an error.
//!
//! The upper directory and the lowers are read through `union::view` (the mount's
//! lookup and listing, each layer with its declared whiteout forms), so a change is
//! reported exactly where the mounted tree differs from its lowers.
//!
//! Invariant: the list is sorted component-wise (a directory comes right before
//! its contents), and holds each path once.
//!
//! Text output writes paths as raw bytes (a name holding a newline is ambiguous
//! there); `--json` is exact: `path` is the path as a string (with U+FFFD for
//! invalid UTF-8) and, only when the path is not UTF-8, `path_bytes` holds its
//! bytes as an array of numbers.

use super::InspectError;
use super::layer::{Dir, Kind, StackView, What, open_view};
use crate::record::LayerRecord;
use crate::union::inode::DirLayer;
use crate::sys::Errno;
use crate::sys::fs::Stat;
use crate::union::resolve::{Found, Resolved};
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

/// `A`, `C` or `D`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Changed,
    Deleted,
}

impl ChangeKind {
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Added => 'A',
            ChangeKind::Changed => 'C',
            ChangeKind::Deleted => 'D',
        }
    }
}

/// One change: kind and absolute path (bytes, `/`-separated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    pub path: Vec<u8>,
}

/// Compute the changes `upper` makes over `lowers` (top first, each read with its
/// declared whiteout forms). With `lowers_known == false` the lowers are unknown
/// (see the module docs).
pub fn changes(upper: &Path, lowers: &[LayerRecord], lowers_known: bool) -> Result<Vec<Change>, InspectError> {
    let view = open_view(Some(upper), lowers)?;
    let root = Dir::root(&view, 0)?;
    let lower = view.merged_root(1).map_err(|e| root.err(OsStr::new(""), e))?;
    let mut out = Vec::new();
    let cut = root.is_opaque(&view);
    let w = Walk { view: &view, known: lowers_known };
    w.walk(&root, &lower, cut, &[], &mut out)?;
    if cut {
        w.deleted_under_opaque(&root, &lower, &[], &mut out)?;
    }
    out.sort_by_key(|c| sort_key(&c.path));
    Ok(out)
}

/// Do two directories differ in what `diff` compares of their own metadata?
fn meta_differs(a: &Stat, b: &Stat) -> bool {
    a.mode() != b.mode() || a.uid() != b.uid() || a.gid() != b.gid() || a.mtime() != b.mtime()
}

/// Component-wise order: `/` sorts before every byte a name can hold.
fn sort_key(p: &[u8]) -> Vec<u8> {
    p.iter().map(|&b| if b == b'/' { 0 } else { b }).collect()
}

fn join(path: &[u8], name: &OsStr) -> Vec<u8> {
    let mut p = path.to_vec();
    p.push(b'/');
    p.extend_from_slice(name.as_bytes());
    p
}

/// The walk of an upper directory (layer 0 of `view`) against its lowers.
struct Walk<'a> {
    view: &'a StackView,
    /// The lowers are known (else every whiteout is `D` and every entry `A`).
    known: bool,
}

impl Walk<'_> {
    /// Walk upper dir `dir` (at `path`) against `lower`, the lower dirs merged at the
    /// same path. `cut`: `dir` is opaque, so `lower` only classifies its entries (A
    /// or C) and every subdirectory is effectively opaque too. Returns whether
    /// anything at or below it changed.
    fn walk(&self, dir: &Dir, lower: &[DirLayer], cut: bool, path: &[u8], out: &mut Vec<Change>) -> Result<bool, InspectError> {
        let mut changed = false;
        for e in dir.entries(self.view)? {
            let p = join(path, &e.name);
            let found = if lower.is_empty() {
                None
            } else {
                match self.view.lookup(lower, &e.name).map_err(|x| dir.err(&e.name, x))? {
                    Resolved::Found(f) => Some(f),
                    Resolved::Deleted(_) | Resolved::Missing => None,
                }
            };
            if e.what == What::Whiteout {
                // In an opaque dir, `deleted_under_opaque` reports what is gone.
                if (found.is_some() && !cut) || !self.known {
                    out.push(Change { kind: ChangeKind::Deleted, path: p });
                    changed = true;
                }
                continue;
            }
            if Kind::of(&e.st) != Kind::Socket {
                dir.xattrs(&e.name)?; // refuses metacopy
            }
            if let What::Dir { .. } = e.what {
                let child = dir.open_dir(self.view, &e.name)?;
                if child.is_redirected(self.view) {
                    changed |= self.redirected(dir, lower, cut, &e.name, found.as_ref(), &p, out)?;
                    continue;
                }
            }
            let Some(f) = found else {
                out.push(Change { kind: ChangeKind::Added, path: p.clone() });
                changed = true;
                if let What::Dir { .. } = e.what {
                    self.walk(&dir.open_dir(self.view, &e.name)?, &[], false, &p, out)?;
                }
                continue;
            };
            let What::Dir { opaque } = e.what else {
                out.push(Change { kind: ChangeKind::Changed, path: p });
                changed = true;
                continue;
            };
            let child = dir.open_dir(self.view, &e.name)?;
            let opaque = opaque || cut;
            let lower_dir = f.st.is_dir();
            let below: &[DirLayer] = if lower_dir { &f.dirs } else { &[] };
            let mut sub = self.walk(&child, below, opaque, &p, out)?;
            if opaque && lower_dir {
                sub |= self.deleted_under_opaque(&child, &f.dirs, &p, out)?;
            }
            let meta_changed = !lower_dir || meta_differs(&e.st, &f.st);
            if meta_changed || sub || opaque {
                out.push(Change { kind: ChangeKind::Changed, path: p });
                changed = true;
            }
        }
        Ok(changed)
    }

    /// Upper dir `name` of `dir` (at `path`) carries a redirect: its contents are the
    /// mount's lookup of it through the merged parent (`dir` over `lower`, unless
    /// `cut`), compared with what the lowers had at `path` (`found`). Like
    /// overlay-aware tools: a moved directory is `A` with all it holds, its old name
    /// `D` (the whiteout there). Returns whether anything changed.
    #[allow(clippy::too_many_arguments)]
    fn redirected(
        &self,
        dir: &Dir,
        lower: &[DirLayer],
        cut: bool,
        name: &OsStr,
        found: Option<&Found>,
        path: &[u8],
        out: &mut Vec<Change>,
    ) -> Result<bool, InspectError> {
        if !self.known {
            return Err(InspectError::NeedsLowers { path: dir.shown().join(name) });
        }
        let mut parent: Vec<DirLayer> = vec![(dir.layer, dir.held.clone())];
        if !cut {
            parent.extend(lower.iter().cloned());
        }
        let Resolved::Found(now) = self.view.lookup(&parent, name).map_err(|e| dir.err(name, e))? else {
            return Err(dir.err(name, Errno::ENOENT));
        };
        let before: &[DirLayer] = match found {
            Some(f) if f.st.is_dir() => &f.dirs,
            _ => &[],
        };
        let sub = self.compare(&now.dirs, before, path, out)?;
        let kind = match found {
            None => ChangeKind::Added,
            Some(f) if sub || !f.st.is_dir() || meta_differs(&now.st, &f.st) => ChangeKind::Changed,
            Some(_) => return Ok(false),
        };
        out.push(Change { kind, path: path.to_vec() });
        Ok(true)
    }

    /// Compare two merged directories as the mount shows them: `now` (at `path`)
    /// against `before` (empty: nothing was there). Everything only in `now` is `A`
    /// (with its contents), only in `before` `D`; a name in both is `C` when it is
    /// another object (or a directory whose metadata or contents changed).
    fn compare(&self, now: &[DirLayer], before: &[DirLayer], path: &[u8], out: &mut Vec<Change>) -> Result<bool, InspectError> {
        let err = |name: &OsStr| {
            let p = join(path, name);
            move |errno| InspectError::Sys { path: Path::new(OsStr::from_bytes(&p)).to_path_buf(), errno }
        };
        let old = if before.is_empty() { Vec::new() } else { self.view.list(before).map_err(err(OsStr::new("")))? };
        let old_names: BTreeSet<&[u8]> = old.iter().map(|l| l.name.as_bytes()).collect();
        let mut changed = false;
        let mut new_names = BTreeSet::new();
        for l in self.view.list(now).map_err(err(OsStr::new("")))? {
            let p = join(path, &l.name);
            let Resolved::Found(a) = self.view.lookup(now, &l.name).map_err(err(&l.name))? else { continue };
            let b = match old_names.contains(l.name.as_bytes()) {
                true => match self.view.lookup(before, &l.name).map_err(err(&l.name))? {
                    Resolved::Found(b) => Some(b),
                    _ => None,
                },
                false => None,
            };
            new_names.insert(l.name.into_vec());
            let kind = match &b {
                None => Some(ChangeKind::Added),
                Some(b) if a.st.is_dir() && b.st.is_dir() => {
                    let sub = self.compare(&a.dirs, &b.dirs, &p, out)?;
                    (sub || meta_differs(&a.st, &b.st)).then_some(ChangeKind::Changed)
                }
                Some(b) => ((a.st.dev(), a.st.ino()) != (b.st.dev(), b.st.ino())).then_some(ChangeKind::Changed),
            };
            let Some(kind) = kind else { continue };
            if a.st.is_dir() && !b.as_ref().is_some_and(|b| b.st.is_dir()) {
                self.compare(&a.dirs, &[], &p, out)?;
            }
            out.push(Change { kind, path: p });
            changed = true;
        }
        for o in old.iter().filter(|o| !new_names.contains(o.name.as_bytes())) {
            out.push(Change { kind: ChangeKind::Deleted, path: join(path, &o.name) });
            changed = true;
        }
        Ok(changed)
    }

    /// `D` for every name the lowers show in opaque upper dir `dir` (at `path`) that
    /// the upper does not re-create. Returns whether there was any.
    fn deleted_under_opaque(&self, dir: &Dir, lower: &[DirLayer], path: &[u8], out: &mut Vec<Change>) -> Result<bool, InspectError> {
        let upper_names: BTreeSet<Vec<u8>> = (dir.entries(self.view)?.into_iter())
            .filter(|c| c.what != What::Whiteout)
            .map(|c| c.name.into_vec())
            .collect();
        let mut any = false;
        for n in self.view.list(lower).map_err(|e| dir.err(OsStr::new(""), e))? {
            if !upper_names.contains(n.name.as_bytes()) {
                out.push(Change { kind: ChangeKind::Deleted, path: join(path, &n.name) });
                any = true;
            }
        }
        Ok(any)
    }
}

/// Write changes as `docker diff` text.
pub fn write_text(out: &mut dyn Write, changes: &[Change]) -> io::Result<()> {
    for c in changes {
        out.write_all(&[c.kind.letter() as u8, b' '])?;
        out.write_all(&c.path)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Write changes as a JSON array of `{"kind","path"[,"path_bytes"]}`.
pub fn write_json(out: &mut dyn Write, changes: &[Change]) -> io::Result<()> {
    let items: Vec<serde_json::Value> = changes
        .iter()
        .map(|c| {
            let mut m = serde_json::Map::new();
            m.insert("kind".into(), c.kind.letter().to_string().into());
            m.insert("path".into(), String::from_utf8_lossy(&c.path).into_owned().into());
            if std::str::from_utf8(&c.path).is_err() {
                m.insert("path_bytes".into(), c.path.iter().map(|&b| serde_json::Value::from(b)).collect());
            }
            serde_json::Value::Object(m)
        })
        .collect();
    serde_json::to_writer_pretty(&mut *out, &items).map_err(io::Error::other)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::super::layer::testutil::*;
    use super::*;

    fn render(c: &[Change]) -> Vec<String> {
        c.iter().map(|c| format!("{} {}", c.kind.letter(), String::from_utf8_lossy(&c.path))).collect()
    }

    #[test]
    fn added_changed_deleted_with_whfile_whiteouts() {
        let t = tempfile::tempdir().unwrap();
        let (up, lo) = (t.path().join("up"), t.path().join("lo"));
        write(&lo, "etc/passwd", "root");
        write(&lo, "etc/hosts", "h");
        write(&lo, "usr/bin/ls", "ls");
        write(&lo, "usr/bin/cat", "cat");
        write(&lo, "old/x", "x");
        write(&lo, "a-b", "sorts before a/");
        // upper: modify passwd, add etc/new, delete hosts, delete dir old,
        // add dir new with contents, a whiteout that hides nothing.
        write(&up, "etc/passwd", "root2");
        write(&up, "etc/new", "n");
        write(&up, "etc/.wh.hosts", "");
        write(&up, ".wh.old", "");
        write(&up, ".wh.never", "");
        write(&up, "new/sub/f", "f");
        // copied-up dir with unchanged metadata and nothing changed inside: silent.
        mkdir(&up, "usr");
        let m = std::fs::metadata(lo.join("usr")).unwrap();
        std::fs::File::open(up.join("usr")).unwrap().set_modified(m.modified().unwrap()).unwrap();
        let c = changes(&up, &records(std::slice::from_ref(&lo)), true).unwrap();
        assert_eq!(
            render(&c),
            vec!["C /etc", "A /etc/new", "C /etc/passwd", "D /etc/hosts", "A /new", "A /new/sub", "A /new/sub/f", "D /old"]
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>()
                .tap_sort()
        );
        // Without lowers: everything is A, every whiteout D.
        let c = changes(&up, &[], false).unwrap();
        assert!(c.iter().any(|c| c.path == b"/never" && c.kind == ChangeKind::Deleted));
        assert!(c.iter().all(|c| c.kind != ChangeKind::Changed));
    }

    trait TapSort {
        fn tap_sort(self) -> Self;
    }
    impl TapSort for Vec<String> {
        fn tap_sort(mut self) -> Self {
            self.sort_by(|a, b| sort_key(&a.as_bytes()[2..]).cmp(&sort_key(&b.as_bytes()[2..])));
            self
        }
    }

    #[test]
    fn opaque_dir_reports_hidden_lower_entries() {
        let t = tempfile::tempdir().unwrap();
        let (up, mid, lo) = (t.path().join("up"), t.path().join("mid"), t.path().join("lo"));
        write(&lo, "d/a", "a");
        write(&lo, "d/b", "b");
        write(&lo, "d/c", "c");
        write(&mid, "d/.wh.c", ""); // already deleted below: not reported again
        write(&up, "d/.wh..wh..opq", "");
        write(&up, "d/.wh.a", ""); // redundant in an opaque dir: still one D
        write(&up, "d/b", "new b");
        write(&up, "d/z", "z");
        let c = changes(&up, &records(&[mid, lo]), true).unwrap();
        assert_eq!(render(&c), vec!["C /d", "D /d/a", "C /d/b", "A /d/z"]);
    }

    #[test]
    fn opaque_root_deletes_everything_not_recreated() {
        let t = tempfile::tempdir().unwrap();
        let (up, lo) = (t.path().join("up"), t.path().join("lo"));
        write(&lo, "a", "a");
        write(&lo, "b/c", "c");
        write(&up, ".wh..wh..opq", "");
        write(&up, "b/d", "d");
        let c = changes(&up, &records(&[lo]), true).unwrap();
        assert_eq!(render(&c), vec!["D /a", "C /b", "D /b/c", "A /b/d"]);
    }

    #[test]
    fn type_changes_and_dir_metadata() {
        let t = tempfile::tempdir().unwrap();
        let (up, lo) = (t.path().join("up"), t.path().join("lo"));
        write(&lo, "f", "file");
        write(&lo, "d/x", "x");
        write(&lo, "m/x", "x");
        mkdir(&up, "f"); // dir over a lower file: C, contents A
        write(&up, "f/inner", "i");
        write(&up, "d", "now a file");
        mkdir(&up, "m");
        chmod(&lo, "m", 0o755);
        chmod(&up, "m", 0o700);
        let c = changes(&up, &records(&[lo]), true).unwrap();
        assert_eq!(render(&c), vec!["C /d", "C /f", "A /f/inner", "C /m"]);
    }

    /// A renamed directory (redirect xattr) is `A` with everything it shows, its old
    /// name `D`; without the lowers there is nothing to compare it with: an error.
    #[test]
    fn redirected_dir_is_added_with_its_contents() {
        if !is_root() {
            eprintln!("skipped: needs root for trusted.* xattrs and char 0/0 whiteouts");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (up, lo) = (t.path().join("up"), t.path().join("lo"));
        renamed_a_to_b(&up, &lo);
        write(&lo, "d/keep", "k");
        write(&lo, "d/gone", "g");
        // Onto an existing name: compared with what was there.
        mkdir(&up, "d");
        xattr::set(up.join("d"), "trusted.overlay.redirect", b"/a/sub").unwrap();
        let c = changes(&up, &records(std::slice::from_ref(&lo)), true).unwrap();
        assert_eq!(
            render(&c),
            ["D /a", "A /b", "A /b/new", "A /b/sub", "A /b/sub/z", "A /b/x", "C /d", "D /d/gone", "D /d/keep", "A /d/z"]
        );
        assert!(matches!(changes(&up, &[], false), Err(InspectError::NeedsLowers { .. })));
    }

    #[test]
    fn json_marks_non_utf8_paths() {
        let c = vec![
            Change { kind: ChangeKind::Added, path: b"/ok".to_vec() },
            Change { kind: ChangeKind::Deleted, path: b"/bad\xff".to_vec() },
        ];
        let mut out = Vec::new();
        write_json(&mut out, &c).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v[0]["path"], "/ok");
        assert!(v[0].get("path_bytes").is_none());
        assert_eq!(v[1]["kind"], "D");
        assert_eq!(v[1]["path_bytes"].as_array().unwrap().last().unwrap(), 255);
        let mut txt = Vec::new();
        write_text(&mut txt, &c).unwrap();
        assert_eq!(txt, b"A /ok\nD /bad\xff\n");
    }
}
