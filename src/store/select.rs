//! What a store lists, and which listed image a query selects.
//!
//! Invariants:
//! - a listed [`ImageRecord`] has a valid id ([`Digest`]); an entry a store could not read
//!   is a [`BrokenImage`] carrying its error and whatever names it could still read, so it
//!   spoils only the references that select it (by name): others resolve as if it were
//!   absent;
//! - a name is tried before an id prefix; a prefix (or name) that selects two images is an
//!   error listing both.

use super::StoreError;
use super::digest::Digest;
use super::reference::{self, IdQuery, NamedRef, Query};

/// One image a store holds, as listed (cheap: no layer is opened).
#[derive(Debug, Clone)]
pub struct ImageRecord {
    /// Image id (the config digest).
    pub id: Digest,
    /// Names as stored (`tiny:app`, `localhost/tiny:app`, OCI ref names).
    pub names: Vec<String>,
    /// Manifest digests recorded for this image, for `name@digest`.
    pub digests: Vec<Digest>,
    /// OCI ref names that are only a tag (`app`): match any repository with that tag.
    pub bare_tags: Vec<String>,
    /// Store-internal key (file, index position) to find the image again.
    pub key: String,
    /// Creation time, when cheap to know.
    pub created: Option<String>,
    /// Number of layers, when cheap to know.
    pub layer_count: Option<usize>,
    /// Total size in bytes, when cheap to know.
    pub size: Option<u64>,
    /// The containerd namespace holding it (containerd stores only).
    pub namespace: Option<String>,
}

/// An entry a store lists but cannot read: selecting it by name gives `error`.
#[derive(Debug, Clone)]
pub struct BrokenImage {
    pub names: Vec<String>,
    pub bare_tags: Vec<String>,
    pub digests: Vec<Digest>,
    pub error: StoreError,
}

/// Everything a store lists.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub images: Vec<ImageRecord>,
    pub broken: Vec<BrokenImage>,
}

/// Split ref names into full names and bare tags (`app`, as OCI layouts often hold).
pub fn split_bare(names: Vec<String>) -> (Vec<String>, Vec<String>) {
    names.into_iter().partition(|n| n.contains('/') || n.contains(':') || n.contains('@'))
}

fn name_matches(names: &[String], bare_tags: &[String], digests: &[Digest], q: &NamedRef, raw: &str) -> bool {
    let names: Vec<NamedRef> = names.iter().filter_map(|n| reference::parse_name(n).ok()).collect();
    if let Some(d) = &q.digest {
        // Docker records `repo@digest` names; other stores record plain digests.
        if names.iter().any(|n| q.matches(n)) {
            return true;
        }
        if !digests.contains(d) {
            return false;
        }
        // The repository must match one of the image's names, unless it has none
        // (an OCI layout whose ref names are bare tags).
        let tagged: Vec<&NamedRef> = names.iter().filter(|n| n.digest.is_none()).collect();
        return tagged.is_empty() || tagged.iter().any(|n| q.same_repo(n));
    }
    names.iter().any(|n| q.matches(n))
        // A bare OCI tag matches when typed as is (`app`) or as the tag (`tiny:app`);
        // an implied `latest` does not count, so a short id is not taken for a tag.
        || bare_tags.iter().any(|t| t == raw || q.tag.as_deref() == Some(t.as_str()))
}

fn display_names(names: &[String], bare_tags: &[String]) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for n in names {
        match reference::parse_name(n) {
            Ok(r) if r.digest.is_some() => {}
            Ok(r) => v.push(r.familiar()),
            Err(_) => v.push(n.clone()),
        }
    }
    v.extend(bare_tags.iter().cloned());
    v
}

impl ImageRecord {
    /// A record with only its id and key.
    pub fn new(id: Digest, key: impl Into<String>) -> ImageRecord {
        ImageRecord {
            id,
            names: Vec::new(),
            digests: Vec::new(),
            bare_tags: Vec::new(),
            key: key.into(),
            created: None,
            layer_count: None,
            size: None,
            namespace: None,
        }
    }

    /// Does the name part of a query select this image?
    pub fn matches_name(&self, q: &NamedRef, raw: &str) -> bool {
        name_matches(&self.names, &self.bare_tags, &self.digests, q, raw)
    }

    /// `docker images`-style display names (`tiny:app`).
    pub fn display_names(&self) -> Vec<String> {
        display_names(&self.names, &self.bare_tags)
    }
}

impl BrokenImage {
    /// Does the name part of a query select this entry?
    pub fn matches_name(&self, q: &NamedRef, raw: &str) -> bool {
        name_matches(&self.names, &self.bare_tags, &self.digests, q, raw)
    }
    pub fn display_names(&self) -> Vec<String> {
        display_names(&self.names, &self.bare_tags)
    }
}

/// Short (12 hex) form of an id.
pub fn short_id(id: &Digest) -> &str {
    id.short()
}

/// Find the image `q` selects in one store's listing: a broken entry that `q` names is
/// its error.
pub fn find<'a>(listing: &'a Listing, q: &Query) -> Result<Option<&'a ImageRecord>, StoreError> {
    if let Some(n) = &q.name
        && let Some(b) = listing.broken.iter().find(|b| b.matches_name(n, &q.raw))
    {
        return Err(b.error.clone());
    }
    find_record(&listing.images, q)
}

/// Find the image `q` selects among `records`.
pub fn find_record<'a>(records: &'a [ImageRecord], q: &Query) -> Result<Option<&'a ImageRecord>, StoreError> {
    let pick = |hits: Vec<&'a ImageRecord>| -> Result<Option<&'a ImageRecord>, StoreError> {
        let mut ids: Vec<&Digest> = hits.iter().map(|r| &r.id).collect();
        ids.sort();
        ids.dedup();
        match ids.len() {
            0 => Ok(None),
            1 => Ok(hits.first().copied()),
            _ => {
                let mut c: Vec<String> = Vec::new();
                for id in ids {
                    let names: Vec<String> =
                        hits.iter().filter(|r| r.id == *id).flat_map(|r| r.display_names()).collect();
                    c.push(if names.is_empty() {
                        short_id(id).to_string()
                    } else {
                        format!("{} ({})", short_id(id), names.join(" "))
                    });
                }
                Err(StoreError::Ambiguous { reference: q.raw.clone(), candidates: c })
            }
        }
    };
    if let Some(n) = &q.name {
        let hits: Vec<&ImageRecord> = records.iter().filter(|r| r.matches_name(n, &q.raw)).collect();
        if let Some(r) = pick(hits)? {
            return Ok(Some(r));
        }
    }
    match &q.id {
        Some(IdQuery::Full(id)) => Ok(records.iter().find(|r| &r.id == id)),
        Some(IdQuery::Prefix(p)) => pick(records.iter().filter(|r| r.id.hex().starts_with(p.as_str())).collect()),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: char, names: &[&str]) -> ImageRecord {
        let mut r = ImageRecord::new(Digest::from_sha256_hex(&id.to_string().repeat(64)).unwrap(), "");
        r.names = names.iter().map(|s| s.to_string()).collect();
        r
    }

    #[test]
    fn find_by_name_id_prefix() {
        let mut recs = vec![rec('a', &["tiny:app"]), rec('b', &["localhost/other:1"])];
        recs[1].id = Digest::from_sha256_hex(&format!("aaaa{}", "b".repeat(60))).unwrap();
        let q = |s: &str| reference::parse_query(s).unwrap();
        let f = |s: &str| find_record(&recs, &q(s)).map(|r| r.map(|r| r.id.clone()));
        assert_eq!(f("tiny:app").unwrap().unwrap(), recs[0].id);
        assert_eq!(f("docker.io/library/tiny:app").unwrap().unwrap(), recs[0].id);
        assert_eq!(f("other:1").unwrap().unwrap(), recs[1].id);
        assert_eq!(f("aaaab").unwrap().unwrap(), recs[1].id);
        assert_eq!(f(&"a".repeat(64)).unwrap().unwrap(), recs[0].id);
        let e = f("aaaa").unwrap_err();
        assert!(matches!(e, StoreError::Ambiguous { .. }));
        assert!(e.to_string().contains("tiny:app"), "{e}");
        assert!(f("tiny:nope").unwrap().is_none());
    }

    #[test]
    fn bare_oci_tags() {
        let mut r = rec('c', &[]);
        r.bare_tags = vec!["latest".into(), "app".into()];
        let recs = vec![r];
        let f = |s: &str| find_record(&recs, &reference::parse_query(s).unwrap()).unwrap().is_some();
        assert!(f("app") && f("tiny:app") && f("latest") && f("x:latest") && f("cccc"));
        assert!(!f("alpine"), "implied latest does not match");
        assert!(!f("dddd"), "a short id is not a bare tag");
    }

    #[test]
    fn broken_entries_spoil_only_their_names() {
        let listing = Listing {
            images: vec![rec('a', &["good:1"])],
            broken: vec![BrokenImage {
                names: vec!["bad:1".into()],
                bare_tags: vec![],
                digests: vec![],
                error: StoreError::Other("entry 2 is broken".into()),
            }],
        };
        let q = |s: &str| reference::parse_query(s).unwrap();
        assert!(find(&listing, &q("good:1")).unwrap().is_some());
        assert!(find(&listing, &q("aaaa")).unwrap().is_some());
        assert_eq!(find(&listing, &q("bad:1")).unwrap_err().to_string(), "entry 2 is broken");
        assert!(find(&listing, &q("other")).unwrap().is_none());
    }
}
