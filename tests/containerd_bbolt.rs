//! The bbolt reader against real files written by a real containerd: the whole tree reads
//! and holds what `ctr` imported; reading while containerd writes gives a consistent
//! snapshot or a clean "changing"; and broken files (truncated, bad meta checksums, page ids
//! out of range, a cycle, a bucket value of the wrong size, non-UTF-8 names, random
//! mutations) give an error, never a panic, a hang or an out-of-bounds read.

mod containerd_harness;

use containerd_harness::Containerd;
use proptest::prelude::*;
use std::sync::OnceLock;
use unionmount::store::bbolt::{self, BoltError, Bucket, Value};

/// meta.db and the overlayfs metadata.db after importing the fixture into `moby` and
/// `k8s.io`, copied once containerd stopped; None when containerd cannot run here.
fn real_files() -> Option<&'static (Vec<u8>, Vec<u8>)> {
    static FILES: OnceLock<Option<(Vec<u8>, Vec<u8>)>> = OnceLock::new();
    FILES
        .get_or_init(|| {
            let mut c = Containerd::start()?;
            c.import("moby", &containerd_harness::fixture_save());
            c.import("k8s.io", &containerd_harness::fixture_save());
            c.stop();
            Some((std::fs::read(c.meta_db()).unwrap(), std::fs::read(c.snap_db()).unwrap()))
        })
        .as_ref()
}

/// Every key as a path of byte strings, with its value (None for a bucket).
type Entries = Vec<(Vec<Vec<u8>>, Option<Vec<u8>>)>;

/// Every key, as a path of byte strings, and the value for plain values.
/// Bucket nesting is bounded by the walker (the reader bounds each tree).
fn walk(b: &Bucket, path: &mut Vec<Vec<u8>>, out: &mut Entries) -> Result<(), BoltError> {
    if path.len() > 12 {
        return Err(BoltError::Corrupt("nested too deeply".into()));
    }
    for (k, v) in b.entries()? {
        path.push(k);
        match v {
            Value::Bucket(c) => {
                out.push((path.clone(), None));
                walk(&c, path, out)?;
            }
            Value::Data(d) => out.push((path.clone(), Some(d))),
        }
        path.pop();
    }
    Ok(())
}

fn walk_all(bytes: &[u8]) -> Result<Entries, BoltError> {
    bbolt::view(&bytes, |tx| {
        let mut out = Vec::new();
        walk(&tx.root(), &mut Vec::new(), &mut out)?;
        Ok(out)
    })
}

fn get_path(bytes: &[u8], path: &[&str]) -> Result<Option<Vec<u8>>, BoltError> {
    bbolt::view(&bytes, |tx| {
        let (last, dirs) = path.split_last().unwrap();
        let dirs: Vec<&[u8]> = dirs.iter().map(|s| s.as_bytes()).collect();
        match tx.bucket(&dirs)? {
            Some(b) => b.data(last.as_bytes()),
            None => Ok(None),
        }
    })
}

const APP: &str = "docker.io/library/tiny:app";
const APP_CONFIG: &str = "sha256:dadb3b6384b75c6e5f9e75745e2bb2d4b38b6d8c01dcfa56536d8081605b571a";

#[test]
fn real_files_read_whole() {
    let Some((meta, snap)) = real_files() else { return };
    let all = walk_all(meta).unwrap();
    let has = |p: &[&str]| all.iter().any(|(k, _)| k.len() == p.len() && k.iter().zip(p).all(|(a, b)| a == b.as_bytes()));
    for ns in ["moby", "k8s.io"] {
        assert!(has(&["v1", ns, "images", APP, "target", "digest"]), "{ns}: image target present");
        assert!(has(&["v1", ns, "images", "example.com/team/tiny:v1"]), "{ns}: second name present");
        assert!(has(&["v1", ns, "content", "blob", APP_CONFIG]), "{ns}: config blob recorded");
    }
    let d = get_path(meta, &["v1", "moby", "images", APP, "target", "digest"]).unwrap().unwrap();
    let d = String::from_utf8(d).unwrap();
    assert!(d.starts_with("sha256:") && d.len() == 71, "{d}");
    assert_eq!(
        get_path(meta, &["v1", "k8s.io", "images", APP, "target", "digest"]).unwrap().unwrap(),
        d.as_bytes(),
        "same target in both namespaces"
    );
    assert_eq!(get_path(meta, &["v1", "moby", "images", "nope", "target", "digest"]).unwrap(), None);
    // The snapshotter's file: 5 committed layers per namespace, numeric ids.
    let all = walk_all(snap).unwrap();
    let snaps: Vec<&Vec<Vec<u8>>> = all.iter().map(|(k, _)| k).filter(|k| k.len() == 3 && k[0] == b"v1" && k[1] == b"snapshots").collect();
    assert_eq!(snaps.len(), 10, "5 layers in each of 2 namespaces");
    for (k, v) in &all {
        if k.len() == 4 && k[1] == b"snapshots" && k[3] == b"kind" {
            assert_eq!(v.as_deref(), Some(&[3u8][..]), "committed");
        }
    }
}

#[test]
fn the_newest_valid_meta_wins_and_broken_metas_are_errors() {
    let Some((meta, _)) = real_files() else { return };
    let m = bbolt::read_meta(&&meta[..]).unwrap();
    let ps = m.page_size as usize;
    let newest = (m.txid % 2) as usize;
    // Bad checksum on the newest meta page: the other one (one transaction older) is used.
    let mut b = meta.clone();
    b[newest * ps + 16 + 56] ^= 0xff;
    let older = bbolt::read_meta(&&b[..]).unwrap();
    assert_eq!(older.txid + 1, m.txid);
    walk_all(&b).expect("the older tree still reads");
    // Bad on both: one clear error.
    b[(1 - newest) * ps + 16 + 56] ^= 0xff;
    let e = walk_all(&b).unwrap_err().to_string();
    assert!(e.contains("no valid meta page") && !e.contains('\n'), "{e}");
    // Wrong magic or version on both.
    let mut b = meta.clone();
    b[16] ^= 1;
    b[ps + 20] ^= 1;
    assert!(walk_all(&b).is_err());
    // Truncated: below the high-water mark, to one page, to nothing.
    for len in [meta.len() / 2, (m.high_water as usize - 1) * ps, ps, 100, 0] {
        let e = walk_all(&meta[..len]).unwrap_err();
        assert!(matches!(e, BoltError::Corrupt(_)), "{len}: {e}");
    }
}

/// Offset of the leaf element whose key is `key` in the page at `page_off` (test-side parse).
fn leaf_elem(b: &[u8], page_off: usize, key: &[u8]) -> usize {
    let count = u16::from_le_bytes([b[page_off + 10], b[page_off + 11]]) as usize;
    for i in 0..count {
        let e = page_off + 16 + i * 16;
        let pos = u32::from_le_bytes(b[e + 4..e + 8].try_into().unwrap()) as usize;
        let ks = u32::from_le_bytes(b[e + 8..e + 12].try_into().unwrap()) as usize;
        if &b[e + pos..e + pos + ks] == key {
            return e;
        }
    }
    panic!("key not in page");
}

#[test]
fn broken_pages_are_errors() {
    let Some((meta, _)) = real_files() else { return };
    let m = bbolt::read_meta(&&meta[..]).unwrap();
    let ps = m.page_size as usize;
    let root_off = m.root as usize * ps;
    assert_eq!(meta[root_off + 8], 0x02, "the root bucket of a small file is one leaf page");
    let v1 = leaf_elem(meta, root_off, b"v1");
    let v1_val = {
        let pos = u32::from_le_bytes(meta[v1 + 4..v1 + 8].try_into().unwrap()) as usize;
        v1 + pos + 2
    };
    let err = |b: &[u8]| walk_all(b).unwrap_err().to_string();
    // Page id out of range (beyond the high-water mark, a meta page, absurdly large).
    for id in [m.high_water, 1, 1u64 << 60] {
        let mut b = meta.clone();
        b[v1_val..v1_val + 8].copy_from_slice(&id.to_le_bytes());
        assert!(err(&b).contains("out of range"), "{id}: {}", err(&b));
    }
    // A bucket value of the wrong size.
    for vsize in [8u32, 20, 0xffff_fff0] {
        let mut b = meta.clone();
        b[v1 + 12..v1 + 16].copy_from_slice(&vsize.to_le_bytes());
        let e = err(&b);
        assert!(e.contains("bucket value") || e.contains("outside the page"), "{vsize}: {e}");
    }
    // A cycle: the root page becomes a branch page whose only child is itself.
    let mut b = meta.clone();
    b[root_off + 8..root_off + 10].copy_from_slice(&1u16.to_le_bytes());
    b[root_off + 10..root_off + 12].copy_from_slice(&1u16.to_le_bytes());
    b[root_off + 16..root_off + 20].copy_from_slice(&16u32.to_le_bytes());
    b[root_off + 20..root_off + 24].copy_from_slice(&0u32.to_le_bytes());
    b[root_off + 24..root_off + 32].copy_from_slice(&m.root.to_le_bytes());
    assert!(err(&b).contains("reached twice"), "{}", err(&b));
    let e = get_path(&b, &["v1", "moby"]).unwrap_err().to_string();
    assert!(e.contains("deeper than"), "{e}");
    // A bucket pointing at its own page: the walker's nesting bound stops it, the page
    // budget would stop any deeper one.
    let mut b = meta.clone();
    b[v1_val..v1_val + 8].copy_from_slice(&m.root.to_le_bytes());
    assert!(walk_all(&b).is_err());
}

#[test]
fn non_utf8_names_come_back_as_bytes() {
    let Some((meta, _)) = real_files() else { return };
    // `tiny:app` → `tiny:ap\xff` everywhere (still sorted before `tiny:base`).
    let mut b = meta.clone();
    let pat = b"tiny:app";
    let mut n = 0;
    for i in 0..b.len() - pat.len() {
        if &b[i..i + pat.len()] == pat {
            b[i + pat.len() - 1] = 0xff;
            n += 1;
        }
    }
    assert!(n >= 2);
    let all = walk_all(&b).unwrap();
    let want = b"docker.io/library/tiny:ap\xff";
    assert!(all.iter().any(|(k, _)| k.len() == 4 && k[3] == want));
}

#[test]
fn reads_while_containerd_writes_are_consistent() {
    let Some(c) = Containerd::start() else { return };
    c.import("moby", &containerd_harness::fixture_save());
    let path = c.meta_db();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let reader = std::thread::spawn(move || {
        let (mut ok, mut changing) = (0u32, 0u32);
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            let f = std::fs::File::open(&path).unwrap();
            let r = bbolt::view(&f, |tx| {
                let mut out = Vec::new();
                walk(&tx.root(), &mut Vec::new(), &mut out)?;
                Ok(out.len())
            });
            match r {
                Ok(_) => ok += 1,
                Err(BoltError::Changing) => changing += 1,
                Err(e) => panic!("a read during writes failed: {e}"),
            }
        }
        (ok, changing)
    });
    for ns in ["k8s.io", "default", "other"] {
        c.import(ns, &containerd_harness::fixture_save());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, changing) = reader.join().unwrap();
    eprintln!("reads during imports: {ok} consistent, {changing} gave up after a retry");
    assert!(ok > 0);
}

fn mutate(base: &[u8], edits: &[(usize, u8)], truncate: Option<usize>, hot: usize) -> Vec<u8> {
    let mut b = base.to_vec();
    for &(at, v) in edits {
        // Most edits land in the pages in use (page headers and elements most of all).
        let i = at % hot.max(1);
        b[i] = v;
    }
    if let Some(t) = truncate {
        b.truncate(t % (base.len() + 1));
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random byte edits and truncations of real files: Ok or Err, never a panic or hang.
    #[test]
    fn mutated_real_files_never_panic(
        which in 0usize..2,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..12),
        truncate in proptest::option::weighted(0.15, any::<usize>()),
        fix_checksums in any::<bool>(),
    ) {
        let Some((meta, snap)) = real_files() else { return Ok(()) };
        let base = if which == 0 { meta } else { snap };
        let m = bbolt::read_meta(&&base[..]).unwrap();
        let hot = (m.high_water * m.page_size) as usize;
        let mut b = mutate(base, &edits, truncate, hot);
        if fix_checksums && b.len() >= 2 * m.page_size as usize {
            // Re-sign both meta pages so that edits there reach the deeper checks.
            for p in 0..2 {
                let o = p * m.page_size as usize + 16;
                let sum = bbolt::fnv1a64(&b[o..o + 56]);
                b[o + 56..o + 64].copy_from_slice(&sum.to_le_bytes());
            }
        }
        let _ = walk_all(&b);
        let _ = get_path(&b, &["v1", "moby", "images", APP, "target", "digest"]);
    }
}
