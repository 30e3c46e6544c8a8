//! Which kind of store a path is, and where to look when no `--store` is given.
//!
//! ```text
//! Docker data root              containers-storage root     OCI layout        archive file
//! ROOT/image/overlay2/          ROOT/overlay-images/        DIR/oci-layout    FILE (tar):
//!        repositories.json            images.json           DIR/index.json      manifest.json
//!        imagedb/ layerdb/      ROOT/overlay-layers/        DIR/blobs/sha256/   and/or index.json
//! ROOT/overlay2/<cache-id>/           layers.json
//!                               ROOT/overlay/<id>/diff
//! containerd root: ROOT/io.containerd.metadata.v1.bolt/meta.db (also found as
//! DOCKER_ROOT/containerd/daemon when a Docker root without image/overlay2 is given)
//! ```
//! Invariants: detection only stats and reads the first 512 bytes of a file; it never
//! writes. The default search order: the stores a running Docker daemon names (`GET /info`,
//! see containerd_discover.rs), /var/lib/docker, /var/lib/docker/containerd/daemon,
//! /var/lib/containerd, /var/lib/containers/storage, then `$XDG_DATA_HOME` (default
//! `~/.local/share`) `/containers/storage` and `/containerd` (rootless); no path twice.

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
    Containerd,
    /// A registry's images kept in the layer cache (`docker://`).
    Registry,
}

impl StoreKind {
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Docker => "docker",
            StoreKind::ContainersStorage => "containers-storage",
            StoreKind::OciLayout => "oci-layout",
            StoreKind::Archive => "docker-archive",
            StoreKind::Registry => "registry",
            StoreKind::Containerd => "containerd",
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
    if super::containerd::is_root(path) && !path.join("image/overlay2").exists() {
        return Ok(StoreKind::Containerd);
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
        // Docker keeps image/ 0700: as another user it is unreadable, not absent.
        for p in [path.join("image"), img.clone()] {
            if let Err(e) = std::fs::read_dir(&p)
                && e.kind() == std::io::ErrorKind::PermissionDenied
            {
                return Err(StoreError::io(&p, e));
            }
        }
        return Err(StoreError::Store {
            path: path.into(),
            detail: "Docker root without image/overlay2 (only the overlay2 driver is supported)"
                .into(),
        });
    }
    // A directory we may not look into (a root-only store as another user): say that.
    if let Err(e) = std::fs::read_dir(path) {
        return Err(StoreError::io(path, e));
    }
    Err(StoreError::Store {
        path: path.into(),
        detail: "not a Docker root, containerd root, containers-storage root, OCI layout or docker-save archive"
            .into(),
    })
}

/// The default stores, in search order (whether or not they exist): first where a running
/// Docker daemon says its images are, then the usual places.
pub fn default_stores() -> Vec<PathBuf> {
    let mut v = super::containerd_discover::docker_stores();
    v.extend(
        [
            "/var/lib/docker",
            "/var/lib/docker/containerd/daemon",
            "/var/lib/containerd",
            "/var/lib/containers/storage",
        ]
        .map(PathBuf::from),
    );
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|x| !x.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|x| !x.is_empty()).map(|h| PathBuf::from(h).join(".local/share")));
    if let Some(d) = data {
        v.push(d.join("containers/storage"));
        v.push(d.join("containerd"));
    }
    let mut seen = std::collections::HashSet::new();
    v.retain(|p| seen.insert(p.clone()));
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
        // containerd: its own root, or a Docker root whose containerd runs under it.
        let c = p.join("ctd");
        fs::create_dir_all(c.join("io.containerd.metadata.v1.bolt")).unwrap();
        fs::write(c.join("io.containerd.metadata.v1.bolt/meta.db"), "").unwrap();
        assert_eq!(detect(&c).unwrap(), StoreKind::Containerd);
        let dc = p.join("docker29");
        fs::create_dir_all(dc.join("containerd/daemon/io.containerd.metadata.v1.bolt")).unwrap();
        fs::write(dc.join("containerd/daemon/io.containerd.metadata.v1.bolt/meta.db"), "").unwrap();
        assert_eq!(detect(&dc).unwrap(), StoreKind::Containerd);
        assert_eq!(super::super::containerd::root_of(&dc), dc.join("containerd/daemon"));
        fs::create_dir_all(dc.join("image/overlay2/imagedb")).unwrap();
        assert_eq!(detect(&dc).unwrap(), StoreKind::Docker, "a legacy store given by path stays Docker");
        assert!(detect(&p.join("missing")).is_err());
    }
}
