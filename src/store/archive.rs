//! `docker save` archives (a tar file), legacy and OCI-based.
//!
//! ```text
//! legacy (Docker < 25)                          OCI-based (Docker ≥ 25, or any OCI tar)
//! manifest.json  [{"Config":"<id>.json",        manifest.json  (Layers: blobs/sha256/<hex>)
//!                  "RepoTags":["tiny:app"],     index.json, oci-layout
//!                  "Layers":["<v1id>/layer.tar",…]}]   blobs/sha256/<hex>
//! <id>.json      image config
//! <v1id>/layer.tar   (may be a symlink entry to another layer.tar)
//! ```
//! The tar is indexed once (names → offset and size, or symlink target) using seeks, so
//! a multi-gigabyte archive is not read to be listed. `manifest.json` is preferred; an
//! archive with only `index.json` is read as an OCI layout through the same index.
//!
//! Invariants: a name from the archive's JSON is only ever a key into the member index,
//! never a file system path; member names are normalised (`./` dropped) and symlink
//! members resolve only to members inside the archive (no `..` above its root, at most 8
//! hops); a blob named `blobs/<algo>/<hex>` must match its digest; a member is read for
//! exactly the size its header gives; the image id is the sha256 of the config bytes,
//! computed, never trusted; a manifest.json entry that cannot be read spoils only its
//! own names; the archive is never written.

use super::digest::Digest;
use super::json::{self, MAX_CONFIG};
use super::oci::{Blobs, LayerRef, OciStore};
use super::platform::Platform;
use super::{
    BrokenImage, ImageConfig, ImageRecord, Listing, MAX_JSON, ResolveCtx, ResolvedImage, StoreError, StoreKind, shown,
};
use crate::sys::beneath::SizedReader;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Most entries an archive may have.
pub const MAX_MEMBERS: usize = 1 << 20;

#[derive(Debug, Clone)]
enum Member {
    File { offset: u64, size: u64 },
    Link(String),
}

/// An indexed tar file; cheap to clone.
#[derive(Clone)]
pub struct ArchiveBlobs {
    path: Arc<PathBuf>,
    members: Arc<HashMap<String, Member>>,
}

fn norm(name: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

impl ArchiveBlobs {
    /// Index the tar at `path`.
    pub fn index(path: &Path) -> Result<ArchiveBlobs, StoreError> {
        let f = std::fs::File::open(path).map_err(|e| StoreError::io(path, e))?;
        let mut ar = tar::Archive::new(f);
        let bad = |e: std::io::Error| StoreError::corrupt(path, format!("bad tar: {}", shown::cause(&e.to_string())));
        let mut members = HashMap::new();
        for e in ar.entries_with_seek().map_err(bad)? {
            let e = e.map_err(bad)?;
            if members.len() >= MAX_MEMBERS {
                return Err(StoreError::corrupt(path, "too many entries"));
            }
            let Ok(name) = std::str::from_utf8(&e.path_bytes()).map(str::to_string) else { continue };
            let Some(name) = norm(&name) else { continue };
            match e.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    members.insert(name, Member::File { offset: e.raw_file_position(), size: e.size() });
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    if let Some(t) = e.link_name_bytes().and_then(|b| String::from_utf8(b.into_owned()).ok()) {
                        let t = if e.header().entry_type() == tar::EntryType::Link {
                            format!("/{t}") // hard links name a member from the root
                        } else {
                            t
                        };
                        members.insert(name, Member::Link(t));
                    }
                }
                _ => {}
            }
        }
        Ok(ArchiveBlobs { path: Arc::new(path.to_path_buf()), members: Arc::new(members) })
    }

    fn lookup(&self, rel: &Path) -> Option<(u64, u64)> {
        let mut name = norm(rel.to_str()?)?;
        for _ in 0..8 {
            match self.members.get(&name)? {
                Member::File { offset, size } => return Some((*offset, *size)),
                Member::Link(t) => {
                    let base = if t.starts_with('/') {
                        String::new()
                    } else {
                        name.rsplit_once('/').map(|(d, _)| d.to_string()).unwrap_or_default()
                    };
                    name = norm(&format!("{base}/{t}"))?;
                }
            }
        }
        None
    }

    fn member(&self, rel: &Path) -> Result<(u64, u64), StoreError> {
        self.lookup(rel)
            .ok_or_else(|| StoreError::Store { path: self.display(rel), detail: "no such member in the archive".into() })
    }

    fn open_at(&self, off: u64, size: u64) -> Result<Box<dyn Read + '_>, StoreError> {
        let mut f = std::fs::File::open(&*self.path).map_err(|e| StoreError::io(&self.path, e))?;
        f.seek(SeekFrom::Start(off)).map_err(|e| StoreError::io(&self.path, e))?;
        Ok(Box::new(SizedReader::new(f.take(size), size)))
    }
}

impl Blobs for ArchiveBlobs {
    fn root(&self) -> &Path {
        &self.path
    }
    fn display(&self, rel: &Path) -> PathBuf {
        let mut s = self.path.as_os_str().to_os_string();
        s.push(":");
        s.push(rel.as_os_str());
        PathBuf::from(s)
    }
    fn read(&self, rel: &Path, cap: u64) -> Result<Vec<u8>, StoreError> {
        let (off, size) = self.member(rel)?;
        if size > cap {
            return Err(StoreError::corrupt(&self.display(rel), format!("larger than {cap} bytes ({size})")));
        }
        let mut b = Vec::with_capacity(size as usize);
        self.open_at(off, size)?.read_to_end(&mut b).map_err(|e| StoreError::io(&self.display(rel), e))?;
        Ok(b)
    }
    fn open_sized(&self, rel: &Path, size: u64) -> Result<Box<dyn Read + '_>, StoreError> {
        let (off, have) = self.member(rel)?;
        if have != size {
            return Err(StoreError::corrupt(&self.display(rel), format!("holds {have} bytes, its descriptor says {size}")));
        }
        self.open_at(off, size)
    }
    fn exists(&self, rel: &Path) -> bool {
        self.lookup(rel).is_some()
    }
}

#[derive(Debug, serde::Deserialize)]
struct SaveEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

/// An entry of manifest.json: the names it shows, and the entry or why it does not parse.
type SaveItem = (Vec<String>, Result<SaveEntry, StoreError>);

/// A `docker save` archive.
pub struct ArchiveStore {
    oci: OciStore<ArchiveBlobs>,
    has_manifest: bool,
}

/// The names a manifest.json entry still shows when it does not parse.
fn raw_tags(v: &serde_json::Value) -> Vec<String> {
    v.get("RepoTags")
        .and_then(|t| t.as_array())
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

impl ArchiveStore {
    pub fn open(path: &Path) -> Result<ArchiveStore, StoreError> {
        let blobs = ArchiveBlobs::index(path)?;
        let has_manifest = blobs.exists(Path::new("manifest.json"));
        if !has_manifest && !blobs.exists(Path::new("index.json")) {
            return Err(StoreError::Store {
                path: path.into(),
                detail: "tar has neither manifest.json nor index.json: not a docker save archive".into(),
            });
        }
        Ok(ArchiveStore { oci: OciStore::new(blobs), has_manifest })
    }
    pub fn path(&self) -> &Path {
        self.oci.blobs.root()
    }
    /// `--platform`: which entry of a multi-platform index to take (default: this machine).
    pub fn select_platform(&mut self, platform: Option<Platform>) {
        self.oci.platform = platform;
    }

    fn manifest_path(&self) -> PathBuf {
        self.oci.blobs.display(Path::new("manifest.json"))
    }

    /// The entries of manifest.json, each parsed on its own.
    fn entries(&self) -> Result<Vec<SaveItem>, StoreError> {
        let mp = self.manifest_path();
        let b = self.oci.blobs.read(Path::new("manifest.json"), MAX_JSON)?;
        let list: Vec<serde_json::Value> = json::parse(&b, &mp, "docker save's manifest.json (a list of images)")?;
        Ok(list
            .into_iter()
            .enumerate()
            .map(|(i, v)| (raw_tags(&v), json::from_value(v, &mp, &format!("entry {} to be an image", i + 1))))
            .collect())
    }

    /// The config of one entry: its bytes and the id they hash to.
    fn config(&self, e: &SaveEntry) -> Result<(Vec<u8>, Digest), StoreError> {
        let rel = Path::new(&e.config);
        let cb = self.oci.blobs.read(rel, MAX_CONFIG)?;
        // A config stored as a blob carries its digest in its name: it must match.
        if let Some(d) = blob_digest(&e.config)
            && d.same_algorithm_of(&cb) != d
        {
            return Err(StoreError::corrupt(&self.oci.blobs.display(rel), format!("content does not match its name {d}")));
        }
        let id = Digest::sha256_of(&cb);
        Ok((cb, id))
    }

    /// The config of the image whose id is `id` (verified: an archive's image id is the
    /// sha256 of its config); `None` when the archive holds no such image. An entry that
    /// cannot be read is passed over: it cannot be the image asked for.
    pub(crate) fn image_config(&self, id: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        if !self.has_manifest {
            return self.oci.config_blob(id);
        }
        for (_, e) in self.entries()? {
            if let Some((cb, cid)) = e.ok().and_then(|e| self.config(&e).ok())
                && cid == *id
            {
                return Ok(Some(cb));
            }
        }
        Ok(None)
    }

    pub fn images(&self) -> Result<Listing, StoreError> {
        if !self.has_manifest {
            return self.oci.images();
        }
        let mut out = Listing::default();
        for (i, (tags, e)) in self.entries()?.into_iter().enumerate() {
            let r = e.and_then(|e| self.config(&e).map(|c| (e, c)));
            let (e, (cb, id)) = match r {
                Ok(x) => x,
                Err(error) => {
                    out.broken.push(BrokenImage { names: tags, bare_tags: Vec::new(), digests: Vec::new(), error });
                    continue;
                }
            };
            let c: ImageConfig = serde_json::from_slice(&cb).unwrap_or_default();
            let mut rec = ImageRecord::new(id, i.to_string());
            rec.names = e.repo_tags.unwrap_or_default();
            rec.created = c.created.clone();
            rec.layer_count = Some(e.layers.len());
            rec.size = Some(e.layers.iter().filter_map(|l| self.oci.blobs.lookup(Path::new(l)).map(|x| x.1)).sum());
            out.images.push(rec);
        }
        Ok(out)
    }

    pub fn resolve(&self, rec: &ImageRecord, ctx: &ResolveCtx) -> Result<ResolvedImage, StoreError> {
        if !self.has_manifest {
            let mut r = self.oci.resolve(rec, ctx)?;
            r.kind = StoreKind::Archive;
            return Ok(r);
        }
        let mp = self.manifest_path();
        let i: usize = rec.key.parse().map_err(|_| StoreError::corrupt(&mp, "bad key"))?;
        let (_, e) = self.entries()?.into_iter().nth(i).ok_or_else(|| StoreError::corrupt(&mp, "entry vanished"))?;
        let e = e?;
        let cpath = self.oci.blobs.display(Path::new(&e.config));
        let (cb, id) = self.config(&e)?;
        if id != rec.id {
            return Err(StoreError::corrupt(&cpath, "config changed while reading"));
        }
        let cfg = ImageConfig::parse(&cb, &cpath)?;
        let mut refs = Vec::with_capacity(e.layers.len());
        for l in &e.layers {
            let rel = PathBuf::from(l);
            let (_, size) = self.oci.blobs.member(&rel).map_err(|_| StoreError::LayerMissing {
                image: rec.display_names().first().cloned().unwrap_or_else(|| rec.id.to_string()),
                layer: shown::name(l),
                file: self.oci.blobs.display(&rel),
            })?;
            // `blobs/<algo>/<hex>` members carry their digest; legacy `<v1id>/layer.tar` do not.
            refs.push(LayerRef { rel, size, digest: blob_digest(l) });
        }
        let layers = self.oci.unpack_layers(rec, &refs, cfg.diff_ids(), &cpath, ctx)?;
        let mut r = self.oci.finish(rec, cfg, layers);
        r.kind = StoreKind::Archive;
        Ok(r)
    }
}

/// The digest a `blobs/<algo>/<hex>` member name carries.
fn blob_digest(name: &str) -> Option<Digest> {
    let n = norm(name)?;
    let rest = n.strip_prefix("blobs/")?;
    let (algo, hex) = rest.split_once('/')?;
    Digest::parse(&format!("{algo}:{hex}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(norm("./a/b").as_deref(), Some("a/b"));
        assert_eq!(norm("a/../b").as_deref(), Some("b"));
        assert_eq!(norm("../b"), None);
        let h = "a".repeat(64);
        assert_eq!(blob_digest(&format!("blobs/sha256/{h}")).unwrap().hex(), h);
        assert_eq!(blob_digest(&format!("./blobs/sha256/{h}")).unwrap().hex(), h);
        assert!(blob_digest("abc/layer.tar").is_none());
        assert!(blob_digest("blobs/sha256/../x").is_none());
    }
}
