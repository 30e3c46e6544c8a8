//! `unionmount which PATH`: which layer provides a path of a mount.
//!
//! The mount is the nearest ancestor of PATH that is a `fuse.unionmount`
//! mountpoint (PATH's last component is not followed, so a symlink is reported
//! itself); crossing another mount on the way up is an error. The path is then
//! resolved through the recorded layers (upper first, then lowers top first, each
//! read with the whiteout forms the record declares for it) with the mount's own
//! lookup (`union::view`), so the answer is what the mount serves.
//!
//! Reported: the providing layer (`upper`, or `layer N` counted from the bottom,
//! 1 = base, as in an image's `rootfs.diff_ids`), with its diff_id and directory;
//! for a directory the lower layers merged into it; and the layers below that hold
//! the same path but are hidden (by the provider, an opaque directory or a
//! whiteout). Invariant: the layers are only read, through `union::view`.

use super::InspectError;
use super::layer::{Kind, StackView, open_view};
use crate::layers::LayerIdx;
use crate::record::{LayerRecord, MountRecord};
use crate::sys::SysResult;
use crate::union::resolve::Resolved;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// How a path resolved; layer indices are positions in the stack (upper first
/// when the mount has one, then lowers top first).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resolution {
    pub provider: Option<usize>,
    pub kind: Option<Kind>,
    /// The layer whose whiteout deleted the path (when nothing provides it).
    pub deleted_by: Option<usize>,
    /// Directories merged under the provider (for a directory).
    pub merged: Vec<usize>,
    /// Layers below that hold the path but do not show it.
    pub hidden: Vec<usize>,
    /// The path is missing because a parent is not a directory.
    pub parent_not_dir: bool,
}

/// Resolve `rel` (components) through the layers of `view` (top first), with the
/// lookup the mount uses.
pub fn resolve(view: &StackView, rel: &[OsString]) -> Result<Resolution, InspectError> {
    let sys = |errno| InspectError::Sys { path: rel.iter().collect(), errno };
    let mut dirs = view.merged_root(0).map_err(sys)?;
    let mut res = Resolution::default();
    if rel.is_empty() {
        res.provider = dirs.first().map(|d| d.0 as usize);
        res.kind = Some(Kind::Dir);
        res.merged = dirs.iter().skip(1).map(|d| d.0 as usize).collect();
        return Ok(res);
    }
    for (i, name) in rel.iter().enumerate() {
        let last = i + 1 == rel.len();
        match view.lookup(&dirs, name).map_err(sys)? {
            Resolved::Found(f) if last => {
                res.provider = Some(f.layer as usize);
                res.kind = Some(Kind::of(&f.st));
                res.merged = f.dirs.iter().skip(1).map(|d| d.0 as usize).collect();
            }
            Resolved::Found(f) if f.st.is_dir() => dirs = f.dirs,
            Resolved::Found(_) => {
                res.parent_not_dir = true;
                return Ok(res);
            }
            Resolved::Deleted(l) => {
                res.deleted_by = Some(l as usize);
                break;
            }
            Resolved::Missing => break,
        }
    }
    let from = res.provider.or(res.deleted_by).map_or(0, |i| i + 1);
    for idx in from..view.len() {
        if !res.merged.contains(&idx) && holds(view, idx as LayerIdx, rel).map_err(sys)? {
            res.hidden.push(idx);
        }
    }
    Ok(res)
}

/// Does layer `layer` alone hold an entry (not a whiteout) at `rel`?
fn holds(view: &StackView, layer: LayerIdx, rel: &[OsString]) -> SysResult<bool> {
    let mut dirs = view.layer_root(layer)?;
    for (i, name) in rel.iter().enumerate() {
        match view.lookup(&dirs, name)? {
            Resolved::Found(_) if i + 1 == rel.len() => return Ok(true),
            // That layer's directory alone (a redirect would reach into the others).
            Resolved::Found(f) if f.st.is_dir() => dirs = f.dirs.into_iter().take(1).collect(),
            _ => return Ok(false),
        }
    }
    Ok(false)
}

/// The unionmount mountpoint containing `path`, and `path`'s components below it.
pub fn locate(path: &Path) -> Result<(PathBuf, Vec<OsString>), InspectError> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map_err(InspectError::io(Path::new(".")))?.join(path)
    };
    let full = match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) if !matches!(abs.components().next_back(), Some(Component::ParentDir)) => {
            std::fs::canonicalize(parent).map_err(InspectError::io(parent))?.join(name)
        }
        _ => std::fs::canonicalize(&abs).map_err(InspectError::io(&abs))?,
    };
    for a in full.ancestors() {
        match crate::record::mount_fstype(a).as_deref() {
            None => continue,
            Some("fuse.unionmount") => {
                let rel = full
                    .strip_prefix(a)
                    .expect("an ancestor is a prefix")
                    .components()
                    .map(|c| c.as_os_str().to_os_string())
                    .collect();
                return Ok((a.to_path_buf(), rel));
            }
            Some(t) => {
                return Err(InspectError::OtherMountAbove { path: full.clone(), fstype: t.to_string(), at: a.to_path_buf() });
            }
        }
    }
    Err(InspectError::NotInside(full))
}

/// One layer of a mount for display.
pub struct Shown {
    pub label: String,
    /// Layer number counted from the bottom (1 = base); None for the upper layer.
    pub index: Option<usize>,
    pub diff_id: Option<String>,
    pub dir: PathBuf,
}

/// Labels for the stack `resolve` saw: upper (if any) then lowers top first.
pub fn labels(upper: Option<&Path>, lowers: &[LayerRecord]) -> Vec<Shown> {
    let mut v = Vec::new();
    if let Some(u) = upper {
        v.push(Shown { label: "upper".into(), index: None, diff_id: None, dir: u.to_path_buf() });
    }
    let n = lowers.len();
    for (i, l) in lowers.iter().enumerate() {
        v.push(Shown { label: format!("layer {}", n - i), index: Some(n - i), diff_id: l.diff_id.clone(), dir: l.dir.clone() });
    }
    v
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Dir => "directory",
        Kind::File => "file",
        Kind::Symlink => "symlink",
        Kind::CharDev => "char device",
        Kind::BlockDev => "block device",
        Kind::Fifo => "fifo",
        Kind::Socket => "socket",
    }
}

fn line(s: &Shown) -> String {
    let mut out = s.label.clone();
    if let Some(d) = &s.diff_id {
        out.push(' ');
        out.push_str(d);
    }
    out.push(' ');
    out.push_str(&s.dir.to_string_lossy());
    out
}

fn json_layer(s: &Shown) -> serde_json::Value {
    serde_json::json!({"layer": s.label, "index": s.index, "diff_id": s.diff_id, "dir": s.dir.to_string_lossy()})
}

/// Render a resolution as text (`json == false`) or JSON. Paths in text are shown
/// with invalid UTF-8 replaced; JSON adds `path_bytes` when the path is not UTF-8.
pub fn render(path: &Path, r: &Resolution, shown: &[Shown], json: bool) -> String {
    let get = |i: usize| shown.get(i);
    if json {
        let mut v = serde_json::json!({
            "path": path.to_string_lossy(),
            "type": r.kind.map(kind_name),
            "provider": r.provider.and_then(get).map(json_layer),
            "deleted_by": r.deleted_by.and_then(get).map(json_layer),
            "merged": r.merged.iter().filter_map(|&i| get(i)).map(json_layer).collect::<Vec<_>>(),
            "hides": r.hidden.iter().filter_map(|&i| get(i)).map(json_layer).collect::<Vec<_>>(),
        });
        if std::str::from_utf8(path.as_os_str().as_bytes()).is_err() {
            v["path_bytes"] = path.as_os_str().as_bytes().iter().map(|&b| serde_json::Value::from(b)).collect();
        }
        return format!("{v:#}\n");
    }
    let mut out = format!("path      {}\n", path.to_string_lossy());
    match (r.provider.and_then(get), r.deleted_by.and_then(get)) {
        (Some(p), _) => {
            out += &format!("type      {}\n", r.kind.map_or("?", kind_name));
            out += &format!("provider  {}\n", line(p));
        }
        (None, Some(w)) => out += &format!("deleted   by a whiteout in {}\n", line(w)),
        (None, None) => out += "missing   no layer holds this path\n",
    }
    for &i in &r.merged {
        if let Some(s) = get(i) {
            out += &format!("merges    {}\n", line(s));
        }
    }
    for &i in &r.hidden {
        if let Some(s) = get(i) {
            out += &format!("hides     {}\n", line(s));
        }
    }
    out
}

/// Resolve `path` inside a live mount and render the answer.
pub fn which(path: &Path, json: bool) -> Result<(String, bool), InspectError> {
    let (mp, rel) = locate(path)?;
    let rec = MountRecord::find(&mp)?;
    let view = open_view(rec.upper.as_deref(), &rec.lowers)?;
    let r = resolve(&view, &rel)?;
    let mut shown_path = mp.clone();
    for c in &rel {
        shown_path.push(OsStr::from_bytes(c.as_bytes()));
    }
    let found = r.provider.is_some();
    Ok((render(&shown_path, &r, &labels(rec.upper.as_deref(), &rec.lowers), json), found))
}

#[cfg(test)]
mod tests {
    use super::super::layer::testutil::*;
    use super::*;

    fn comps(p: &str) -> Vec<OsString> {
        p.split('/').map(OsString::from).collect()
    }

    #[test]
    fn provider_hidden_and_merged() {
        let t = tempfile::tempdir().unwrap();
        let l: Vec<PathBuf> = ["up", "l2", "l1"].iter().map(|n| t.path().join(n)).collect();
        write(&l[2], "etc/passwd", "base");
        write(&l[2], "etc/group", "base");
        write(&l[2], "opt/a", "a");
        write(&l[2], "lnk/x", "x");
        write(&l[1], "etc/passwd", "mid");
        write(&l[1], "opt/.wh..wh..opq", "");
        write(&l[1], "opt/b", "b");
        write(&l[1], "lnk", "now a file");
        write(&l[0], "etc/.wh.group", "");
        mkdir(&l[0], "etc");

        let r = resolve(&view(&l), &comps("etc/passwd")).unwrap();
        assert_eq!((r.provider, r.hidden.clone()), (Some(1), vec![2]));
        assert_eq!(r.kind, Some(Kind::File));

        let r = resolve(&view(&l), &comps("etc/group")).unwrap();
        assert_eq!((r.provider, r.deleted_by, r.hidden.clone()), (None, Some(0), vec![2]));

        let r = resolve(&view(&l), &comps("etc")).unwrap();
        assert_eq!((r.provider, r.merged.clone(), r.hidden.clone()), (Some(0), vec![1, 2], vec![]));

        // opaque in l2: opt/a of the base is hidden, not merged.
        let r = resolve(&view(&l), &comps("opt")).unwrap();
        assert_eq!((r.provider, r.merged.clone(), r.hidden.clone()), (Some(1), vec![], vec![2]));
        let r = resolve(&view(&l), &comps("opt/a")).unwrap();
        assert_eq!((r.provider, r.hidden.clone()), (None, vec![2]));

        // a file over a dir: lnk/x does not exist, parent is not a dir.
        let r = resolve(&view(&l), &comps("lnk/x")).unwrap();
        assert!(r.parent_not_dir);
        let r = resolve(&view(&l), &comps("lnk")).unwrap();
        assert_eq!((r.provider, r.hidden.clone()), (Some(1), vec![2]));

        let mut lowers = records(&l[1..]);
        lowers[0].diff_id = Some("sha256:b".into());
        let shown = labels(Some(&l[0]), &lowers);
        let r = resolve(&view(&l), &comps("etc/passwd")).unwrap();
        let text = render(Path::new("/m/etc/passwd"), &r, &shown, false);
        assert!(text.contains("provider  layer 2 sha256:b"), "{text}");
        assert!(text.contains("hides     layer 1 "), "{text}");
        let j: serde_json::Value = serde_json::from_str(&render(Path::new("/m/x"), &r, &shown, true)).unwrap();
        assert_eq!(j["provider"]["layer"], "layer 2");
        assert_eq!((j["provider"]["index"].as_u64(), j["provider"]["diff_id"].as_str()), (Some(2), Some("sha256:b")));
        assert_eq!(j["hides"][0]["layer"], "layer 1");
    }

    #[test]
    fn locate_rejects_paths_outside_unionmounts() {
        let e = locate(Path::new("/proc/self")).unwrap_err().to_string();
        assert!(e.contains("type proc at /proc"), "{e}");
        let t = tempfile::tempdir().unwrap();
        let e = locate(&t.path().join("nope")).unwrap_err().to_string();
        assert!(e.contains("not inside a unionmount") || e.contains("mount at"), "{e}");
    }
}
