//! Which kind of store a path is, and where to look when no `--store` is given.
//!
//! ```text
//! Docker data root              containers-storage root     OCI layout        archive file
//! ROOT/image/overlay2/          ROOT/overlay-images/        DIR/oci-layout    FILE (tar):
//!        repositories.json            images.json           DIR/index.json      manifest.json
//!        imagedb/ layerdb/      ROOT/overlay-layers/        DIR/blobs/sha256/   and/or index.json
//! ROOT/overlay2/<cache-id>/           layers.json
//!                               ROOT/overlay/<id>/diff
//! ```
//! Invariants: detection only stats and reads the first 512 bytes of a file; it never
//! writes. The default search order is /var/lib/docker, /var/lib/containers/storage,
//! `$XDG_DATA_HOME/containers/storage` (default `~/.local/share/containers/storage`).

use super::StoreError;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A store format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreKind {
    Docker,
    ContainersStorage,
    OciLayout,
    Archive,
}

impl StoreKind {
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Docker => "docker",
            StoreKind::ContainersStorage => "containers-storage",
            StoreKind::OciLayout => "oci-layout",
            StoreKind::Archive => "docker-archive",
        }
    }
}

fn is_dir(p: &Path) -> bool {
    p.symlink_metadata().map(|m| m.is_dir()).unwrap_or(false) || p.is_dir()
}

/// Detect the format of the store at `path`.
pub fn detect(path: &Path) -> Result<StoreKind, StoreError> {
    let md = std::fs::metadata(path).map_err(|e| StoreError::io(path, e))?;
    if md.is_file() {
        let mut head = [0u8; 512];
        let mut f = std::fs::File::open(path).map_err(|e| StoreError::io(path, e))?;
        let mut n = 0;
        while n < head.len() {
            match f.read(&mut head[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => return Err(StoreError::io(path, e)),
            }
        }
        if n >= 2 && head[..2] == [0x1f, 0x8b] {
            return Err(StoreError::Store {
                path: path.into(),
                detail: "gzip-compressed archive: decompress it first (gunzip)".into(),
            });
        }
        if n == 512 && &head[257..262] == b"ustar" {
            return Ok(StoreKind::Archive);
        }
        return Err(StoreError::Store {
            path: path.into(),
            detail: "not a tar archive (expected a `docker save` file)".into(),
        });
    }
    if !md.is_dir() {
        return Err(StoreError::Store { path: path.into(), detail: "not a file or directory".into() });
    }
    let img = path.join("image/overlay2");
    if img.join("repositories.json").exists() || is_dir(&img.join("imagedb")) {
        return Ok(StoreKind::Docker);
    }
    if is_dir(&path.join("overlay-images")) || is_dir(&path.join("overlay-layers")) {
        return Ok(StoreKind::ContainersStorage);
    }
    if path.join("oci-layout").is_file() || path.join("index.json").is_file() {
        return Ok(StoreKind::OciLayout);
    }
    if is_dir(&path.join("image")) {
        return Err(StoreError::Store {
            path: path.into(),
            detail: "Docker root without image/overlay2 (only the overlay2 driver is supported)"
                .into(),
        });
    }
    Err(StoreError::Store {
        path: path.into(),
        detail: "not a Docker root, containers-storage root, OCI layout or docker-save archive"
            .into(),
    })
}

/// The default stores, in search order (whether or not they exist).
pub fn default_stores() -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from("/var/lib/docker"), PathBuf::from("/var/lib/containers/storage")];
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|x| !x.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|x| !x.is_empty()).map(|h| PathBuf::from(h).join(".local/share")));
    if let Some(d) = data {
        v.push(d.join("containers/storage"));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn detects_each_kind() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path();
        let d = p.join("docker");
        fs::create_dir_all(d.join("image/overlay2/imagedb")).unwrap();
        assert_eq!(detect(&d).unwrap(), StoreKind::Docker);
        let c = p.join("cs");
        fs::create_dir_all(c.join("overlay-images")).unwrap();
        assert_eq!(detect(&c).unwrap(), StoreKind::ContainersStorage);
        let o = p.join("oci");
        fs::create_dir_all(&o).unwrap();
        fs::write(o.join("oci-layout"), "{}").unwrap();
        assert_eq!(detect(&o).unwrap(), StoreKind::OciLayout);
        let a = p.join("a.tar");
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(2);
        h.set_mode(0o644);
        b.append_data(&mut h, "manifest.json", &b"[]"[..]).unwrap();
        fs::write(&a, b.into_inner().unwrap()).unwrap();
        assert_eq!(detect(&a).unwrap(), StoreKind::Archive);
        fs::write(p.join("gz"), [0x1f, 0x8b, 0]).unwrap();
        assert!(detect(&p.join("gz")).unwrap_err().to_string().contains("gunzip"));
        fs::write(p.join("junk"), "hello").unwrap();
        assert!(detect(&p.join("junk")).is_err());
        assert!(detect(p).unwrap_err().to_string().contains("not a Docker root"));
        assert!(detect(&p.join("missing")).is_err());
    }
}
