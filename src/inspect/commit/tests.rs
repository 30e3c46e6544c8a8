//! Tar writing: parse what `write_layer` wrote back with the tar crate.

use super::super::layer::testutil::*;
use super::*;
use std::io::Read;
use std::process::Command;

struct Seen {
    path: Vec<u8>,
    ty: EntryType,
    mode: u32,
    uid: u64,
    link: Option<Vec<u8>>,
    data: Vec<u8>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    dev: (u32, u32),
}

fn read_tar(r: impl Read) -> Vec<Seen> {
    let mut ar = tar::Archive::new(r);
    let mut out = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let mut xattrs = Vec::new();
        if let Some(p) = e.pax_extensions().unwrap() {
            for x in p {
                let x = x.unwrap();
                if let Some(k) = x.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                    xattrs.push((k.to_vec(), x.value_bytes().to_vec()));
                }
            }
        }
        let h = e.header().clone();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push(Seen {
            path: e.path_bytes().into_owned(),
            ty: h.entry_type(),
            mode: h.mode().unwrap(),
            uid: h.uid().unwrap(),
            link: e.link_name_bytes().map(|l| l.into_owned()),
            data,
            xattrs,
            dev: (h.device_major().unwrap().unwrap_or(0), h.device_minor().unwrap().unwrap_or(0)),
        });
    }
    out
}

fn sha_file(p: &Path) -> Digest {
    Digest::sha256_of(&std::fs::read(p).unwrap())
}

fn find<'a>(v: &'a [Seen], p: &[u8]) -> &'a Seen {
    v.iter().find(|s| s.path == p).unwrap_or_else(|| panic!("no entry {}", String::from_utf8_lossy(p)))
}

/// An upper dir exercising everything that works without root.
fn build_upper(up: &Path) {
    write(up, "etc/passwd", "root:x:0:0\n");
    chmod(up, "etc/passwd", 0o4755);
    write(up, "etc/.wh.shadow", "");
    write(up, "var/.wh..wh..opq", "");
    write(up, "var/new", "n");
    write(up, "a/first", "linked");
    std::fs::hard_link(up.join("a/first"), up.join("z_second")).unwrap();
    std::os::unix::fs::symlink("../etc/passwd", up.join("a/link")).unwrap();
    std::os::unix::fs::symlink("t".repeat(150), up.join("longlink")).unwrap();
    write(up, &format!("{}/h1", "p".repeat(110)), "far link");
    std::fs::hard_link(up.join(format!("{}/h1", "p".repeat(110))), up.join(format!("{}/h2", "p".repeat(110)))).unwrap();
    let long = format!("{}/{}", "d".repeat(90), "f".repeat(60));
    write(up, &long, "long");
    std::fs::write(up.join(std::ffi::OsStr::from_bytes(b"bad\xffname")), "raw").unwrap();
    assert!(Command::new("mkfifo").arg(up.join("fifo")).status().unwrap().success());
    let _sock = std::os::unix::net::UnixListener::bind(up.join("sock")).unwrap();
    if xattr::set(up.join("etc/passwd"), "user.note", b"v\0bin").is_err() {
        eprintln!("note: user xattrs unsupported here");
    }
}

#[test]
fn tar_entries_whiteouts_links_and_digest() {
    let t = tempfile::tempdir().unwrap();
    let up = t.path().join("up");
    build_upper(&up);
    let out = t.path().join("layer.tar");
    let b = write_upper(&up, &[], &out, Compression::None).unwrap();
    assert_eq!(b.diff_id, sha_file(&out));
    assert_eq!(b.digest, b.diff_id);
    assert_eq!(b.size, std::fs::metadata(&out).unwrap().len());
    assert_eq!(b.size % 512, 0);

    let v = read_tar(File::open(&out).unwrap());
    let paths: Vec<String> = v.iter().map(|s| String::from_utf8_lossy(&s.path).into_owned()).collect();
    // Sorted walk order, root not included, socket skipped, opaque marker after its dir.
    let want_prefix = ["a", "a/first", "a/link", "bad\u{fffd}name"];
    assert_eq!(&paths[..4], &want_prefix);
    assert!(!paths.iter().any(|p| p.contains("sock")));
    let var = paths.iter().position(|p| p == "var").unwrap();
    assert_eq!(paths[var + 1], "var/.wh..wh..opq");
    assert_eq!(paths[var + 2], "var/new");

    let pw = find(&v, b"etc/passwd");
    assert_eq!(pw.ty, EntryType::Regular);
    assert_eq!(pw.mode, 0o4755);
    assert_eq!(pw.data, b"root:x:0:0\n");
    if xattr::get(up.join("etc/passwd"), "user.note").ok().flatten().is_some() {
        assert_eq!(pw.xattrs, vec![(b"user.note".to_vec(), b"v\0bin".to_vec())]);
    }
    let wh = find(&v, b"etc/.wh.shadow");
    assert_eq!((wh.ty, wh.data.len()), (EntryType::Regular, 0));
    let l2 = find(&v, b"z_second");
    assert_eq!(l2.ty, EntryType::Link);
    assert_eq!(l2.link.as_deref(), Some(&b"a/first"[..]));
    assert_eq!(find(&v, b"a/first").data, b"linked");
    let sl = find(&v, b"a/link");
    assert_eq!((sl.ty, sl.link.as_deref()), (EntryType::Symlink, Some(&b"../etc/passwd"[..])));
    assert_eq!(find(&v, b"fifo").ty, EntryType::Fifo);
    assert_eq!(find(&v, b"bad\xffname").data, b"raw");
    let long = format!("{}/{}", "d".repeat(90), "f".repeat(60));
    assert_eq!(find(&v, long.as_bytes()).data, b"long");
    assert_eq!(find(&v, b"longlink").link.as_deref(), Some("t".repeat(150).as_bytes()));
    let h2 = find(&v, format!("{}/h2", "p".repeat(110)).as_bytes());
    assert_eq!((h2.ty, h2.link.as_deref()), (EntryType::Link, Some(format!("{}/h1", "p".repeat(110)).as_bytes())));

    // Deterministic: the same tree gives the same bytes.
    let out2 = t.path().join("again.tar");
    assert_eq!(write_upper(&up, &[], &out2, Compression::None).unwrap().diff_id, b.diff_id);
}

#[test]
fn compressed_blobs_hash_both_streams() {
    let t = tempfile::tempdir().unwrap();
    let up = t.path().join("up");
    write(&up, "x/y", &"data ".repeat(10_000));
    let plain = write_upper(&up, &[], &t.path().join("p.tar"), Compression::None).unwrap();
    for (c, name) in [(Compression::Gzip, "l.tar.gz"), (Compression::Zstd, "l.tar.zst")] {
        let out = t.path().join(name);
        let b = write_upper(&up, &[], &out, c).unwrap();
        assert_eq!(b.diff_id, plain.diff_id, "{name}");
        assert_eq!(b.size, plain.size);
        assert_eq!(b.digest, sha_file(&out));
        assert_eq!(b.blob_size, std::fs::metadata(&out).unwrap().len());
        assert!(b.blob_size < b.size);
        let mut raw = Vec::new();
        match c {
            Compression::Gzip => flate2::read::GzDecoder::new(File::open(&out).unwrap()).read_to_end(&mut raw).unwrap(),
            _ => zstd::stream::read::Decoder::new(File::open(&out).unwrap()).unwrap().read_to_end(&mut raw).unwrap(),
        };
        assert_eq!(Digest::sha256_of(&raw), b.diff_id);
        assert_eq!(read_tar(raw.as_slice())[1].data.len(), 50_000);
    }
}

#[test]
fn root_only_entries_owners_devices_overlay_xattrs() {
    if !is_root() {
        eprintln!("skipped: needs root for mknod, chown and trusted.* xattrs");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let up = t.path().join("up");
    write(&up, "d/keep", "k");
    xattr::set(up.join("d"), "trusted.overlay.opaque", b"y").unwrap();
    xattr::set(up.join("d"), "trusted.overlay.origin", b"junk").unwrap();
    xattr::set(up.join("d"), "trusted.mine", b"1").unwrap();
    whiteout_dev(&up, "gone");
    assert!(Command::new("mknod").arg(up.join("null")).args(["c", "1", "3"]).status().unwrap().success());
    std::os::unix::fs::chown(up.join("d/keep"), Some(1234), Some(5678)).unwrap();
    let out = t.path().join("l.tar");
    write_upper(&up, &[], &out, Compression::None).unwrap();
    let v = read_tar(File::open(&out).unwrap());
    let paths: Vec<&[u8]> = v.iter().map(|s| s.path.as_slice()).collect();
    assert_eq!(paths, vec![&b"d"[..], b"d/.wh..wh..opq", b"d/keep", b".wh.gone", b"null"]);
    assert_eq!(find(&v, b"d").xattrs, vec![(b"trusted.mine".to_vec(), b"1".to_vec())]);
    assert_eq!(find(&v, b"d/keep").uid, 1234);
    let g = find(&v, b".wh.gone");
    assert_eq!((g.ty, g.mode), (EntryType::Regular, 0o600));
    let n = find(&v, b"null");
    assert_eq!((n.ty, n.dev), (EntryType::Char, (1, 3)));
}

#[test]
fn pax_record_lengths() {
    let mut v = Vec::new();
    pax_record(&mut v, b"k", b"v");
    assert_eq!(v, b"6 k=v\n");
    let mut v = Vec::new();
    pax_record(&mut v, b"key", &[b'x'; 92]); // 3+92+3 = 98, +2 digits = 100 -> 3 digits: 101
    assert_eq!(v.len(), 101);
    assert!(v.starts_with(b"101 "));
}

#[test]
fn refuses_metacopy() {
    if !is_root() {
        eprintln!("skipped: needs root for trusted.* xattrs");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let up = t.path().join("up");
    write(&up, "f", "");
    xattr::set(up.join("f"), "trusted.overlay.metacopy", b"").unwrap();
    let e = write_upper(&up, &[], &t.path().join("l.tar"), Compression::None).unwrap_err();
    assert!(e.to_string().contains("metacopy"), "{e}");
    assert!(!t.path().join("l.tar").exists());
}

/// A renamed directory (redirect xattr): written whole under its new name, opaque,
/// from the lower layers given; without them the commit fails and writes nothing.
#[test]
fn redirected_dir_is_written_whole_and_opaque() {
    if !is_root() {
        eprintln!("skipped: needs root for trusted.* xattrs and char 0/0 whiteouts");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (up, lo) = (t.path().join("up"), t.path().join("lo"));
    renamed_a_to_b(&up, &lo);
    write(&lo, "keep", "k");
    let out = t.path().join("l.tar");
    write_upper(&up, &records(std::slice::from_ref(&lo)), &out, Compression::None).unwrap();
    let seen = read_tar(File::open(&out).unwrap());
    let paths: Vec<String> = seen.iter().map(|s| String::from_utf8_lossy(&s.path).into_owned()).collect();
    assert_eq!(paths, [".wh.a", "b", "b/.wh..wh..opq", "b/new", "b/sub", "b/sub/z", "b/x"]);
    assert_eq!(seen[6].data, b"x");
    assert!(seen.iter().all(|s| s.xattrs.iter().all(|(k, _)| !k.starts_with(b"trusted.overlay"))));
    let e = write_upper(&up, &[], &t.path().join("m.tar"), Compression::None).unwrap_err();
    assert!(matches!(e, InspectError::NeedsLowers { .. }), "{e}");
    assert!(!t.path().join("m.tar").exists());
}
