//! Table tests of the id option parser; the mapping both ways; overflow ids; ACL values.

use super::*;
use std::os::fd::AsFd;

fn r(ondisk: u32, presented: u32, len: u32) -> IdRange {
    IdRange { ondisk, presented, len }
}

fn parse(v: &str) -> Result<Vec<IdRange>, IdMapError> {
    IdMap::parse("uidmapping", v).map(|m| m.ranges().to_vec()).map_err(|e| e.error)
}

#[test]
fn parser_table() {
    use IdMapError::*;
    let bad = |f: &str| Err(BadNumber { field: f.to_string() });
    let table: Vec<(&str, Result<Vec<IdRange>, IdMapError>)> = vec![
        // What containers/storage writes for `--userns=keep-id` (uid 1001): a leading ':'.
        (":0:1:1001:1001:0:1:1002:1002:64535", Ok(vec![r(0, 1, 1001), r(1001, 0, 1), r(1002, 1002, 64535)])),
        ("0:1:1001:1001:0:1:1002:1002:64535", Ok(vec![r(0, 1, 1001), r(1001, 0, 1), r(1002, 1002, 64535)])),
        // The man page's example.
        ("0:1000:1:1:110000:65536", Ok(vec![r(0, 1000, 1), r(1, 110000, 65536)])),
        ("0:0:1", Ok(vec![r(0, 0, 1)])),
        ("007:8:9", Ok(vec![r(7, 8, 9)])),
        // Empty: no ranges, the identity (as fuse-overlayfs reads it).
        ("", Ok(vec![])),
        (":", Ok(vec![])),
        // Ranges may touch, and the highest usable id is 4294967294.
        ("0:10:5:5:15:5", Ok(vec![r(0, 10, 5), r(5, 15, 5)])),
        ("4294967294:0:1", Ok(vec![r(4294967294, 0, 1)])),
        ("0:1:4294967294", Ok(vec![r(0, 1, 4294967294)])),
        // Malformed.
        ("0:1000", Err(NotTriples { numbers: 2 })),
        ("0:1000:1:2", Err(NotTriples { numbers: 4 })),
        ("0:1000:1:", bad("")),
        ("::0:1000:1", bad("")),
        ("0::1000:1", bad("")),
        ("0:1000:1:", bad("")),
        ("a:1000:1", bad("a")),
        ("0:+5:1", bad("+5")),
        ("0:-5:1", bad("-5")),
        (" 0:5:1", bad(" 0")),
        ("0:5:1 ", bad("1 ")),
        ("0,5,1", bad("0,5,1")),
        ("0:5:4294967296", bad("4294967296")),
        ("4294967295:0:1", bad("4294967295")),
        ("0:1:0", Err(Empty { range: r(0, 1, 0) })),
        ("4294967290:0:6", Err(TooHigh { range: r(4294967290, 0, 6) })),
        ("0:4294967290:5", Ok(vec![r(0, 4294967290, 5)])),
        ("0:4294967290:6", Err(TooHigh { range: r(0, 4294967290, 6) })),
        // Overlaps on either side: the map must be a bijection.
        ("0:100:10:5:200:10", Err(Overlap { a: r(0, 100, 10), b: r(5, 200, 10), side: "on disk" })),
        ("0:100:10:50:105:10", Err(Overlap { a: r(0, 100, 10), b: r(50, 105, 10), side: "as presented" })),
        ("50:0:10:0:100:51", Err(Overlap { a: r(0, 100, 51), b: r(50, 0, 10), side: "on disk" })),
        ("1:1:1:1:2:1", Err(Overlap { a: r(1, 1, 1), b: r(1, 2, 1), side: "on disk" })),
    ];
    for (input, want) in table {
        assert_eq!(parse(input), want, "input {input:?}");
    }
}

#[test]
fn parser_bounds_the_number_of_ranges() {
    let ok: Vec<String> = (0..MAX_RANGES as u32).map(|i| format!("{i}:{i}:1")).collect();
    assert_eq!(parse(&ok.join(":")).unwrap().len(), MAX_RANGES);
    let too_many: Vec<String> = (0..=MAX_RANGES as u32).map(|i| format!("{i}:{i}:1")).collect();
    assert_eq!(parse(&too_many.join(":")), Err(IdMapError::TooMany { ranges: MAX_RANGES + 1 }));
}

#[test]
fn errors_are_one_line_naming_the_option() {
    for (opt, v) in [
        ("uidmapping", "0:1000"),
        ("gidmapping", "0:x:1"),
        ("gidmapping", &"9".repeat(200)),
        ("uidmapping", "0:1:0"),
        ("uidmapping", "4294967290:0:6"),
        ("uidmapping", "0:100:10:5:200:10"),
    ] {
        let e = IdMap::parse(opt, v).unwrap_err().to_string();
        assert!(e.starts_with(&format!("option {opt}: ")), "{e}");
        assert!(!e.contains('\n') && e.len() < 120, "{e}");
    }
    assert_eq!(
        IdMap::parse("uidmapping", "0:100:10:5:200:10").unwrap_err().to_string(),
        "option uidmapping: ranges 0:100:10 and 5:200:10 overlap on disk"
    );
    assert_eq!(
        parse_id("squash_to_uid", "-1").unwrap_err().to_string(),
        "option squash_to_uid: \"-1\" is not an id (a decimal number below 4294967295)"
    );
}

#[test]
fn parse_id_accepts_decimal_ids_only() {
    assert_eq!(parse_id("squash_to_uid", "0"), Ok(0));
    assert_eq!(parse_id("squash_to_uid", "1001"), Ok(1001));
    assert_eq!(parse_id("squash_to_uid", "4294967294"), Ok(4294967294));
    for bad in ["", "-1", "4294967295", "4294967296", "+1", "1 ", "0x10", "1e3"] {
        assert!(parse_id("squash_to_uid", bad).is_err(), "{bad:?}");
    }
}

fn keep_id() -> IdMap {
    IdMap::parse("uidmapping", ":0:1:1001:1001:0:1:1002:1002:64535").unwrap()
}

#[test]
fn map_both_ways() {
    let m = keep_id();
    for (ondisk, presented) in [(0, 1), (1000, 1001), (1001, 0), (1002, 1002), (65536, 65536)] {
        assert_eq!(m.shown(ondisk), Some(presented), "shown({ondisk})");
        assert_eq!(m.stored(presented), Some(ondisk), "stored({presented})");
    }
    // Outside every range, in either direction.
    assert_eq!(m.shown(65537), None);
    assert_eq!(m.stored(65537), None);
    assert_eq!(m.shown(u32::MAX - 1), None);
    // The two directions are inverses over the whole domain.
    for id in 0..70000 {
        if let Some(p) = m.shown(id) {
            assert_eq!(m.stored(p), Some(id));
        }
        if let Some(d) = m.stored(id) {
            assert_eq!(m.shown(d), Some(id));
        }
    }
    // The empty map is the identity.
    let id = IdMap::default();
    assert_eq!((id.shown(12345), id.stored(u32::MAX - 1)), (Some(12345), Some(u32::MAX - 1)));
}

fn mapping() -> IdMapping {
    IdMapping {
        uids: keep_id(),
        gids: IdMap::parse("gidmapping", "0:100:10").unwrap(),
        overflow: Overflow { uid: 65534, gid: 65533 },
        ..Default::default()
    }
}

fn stat(uid: u32, gid: u32) -> Stat {
    let mut st = crate::sys::fs::stat_at(std::fs::File::open("/").unwrap().as_fd(), c".").unwrap();
    st.0.st_uid = uid;
    st.0.st_gid = gid;
    st
}

#[test]
fn stat_shows_mapped_ids_and_the_overflow_id_outside_ranges() {
    let m = mapping();
    let mut st = stat(0, 3);
    m.present(&mut st);
    assert_eq!((st.uid(), st.gid()), (1, 103));
    let mut st = stat(1001, 10);
    m.present(&mut st);
    assert_eq!((st.uid(), st.gid()), (0, 65533), "gid 10 is outside 0:100:10: the overflow gid");
    let mut st = stat(70000, 9);
    m.present(&mut st);
    assert_eq!((st.uid(), st.gid()), (65534, 109));
    // Writes map back, and refuse what no range covers.
    assert_eq!((m.uid_stored(0), m.uid_stored(1)), (Some(1001), Some(0)));
    assert_eq!((m.gid_stored(100), m.gid_stored(99), m.gid_stored(110)), (Some(0), None, None));
    assert_eq!(m.uid_stored(65534), Some(65534), "the overflow id is a plain id when a range covers it");
    assert_eq!(m.uid_stored(70000), None);
}

#[test]
fn squash_options_read_side_only() {
    let base = mapping();
    let root = IdMapping { squash_to_root: true, ..base.clone() };
    let uid = IdMapping { squash_to_uid: Some(42), ..root.clone() };
    let gid = IdMapping { squash_to_gid: Some(43), ..root.clone() };
    let both = IdMapping { squash_to_uid: Some(42), squash_to_gid: Some(43), squash_to_root: false, ..base.clone() };
    for (m, want) in [(&root, (0, 0)), (&uid, (42, 0)), (&gid, (0, 43)), (&both, (42, 43))] {
        for (u, g) in [(0, 0), (1001, 5), (70000, 70000)] {
            let mut st = stat(u, g);
            m.present(&mut st);
            assert_eq!((st.uid(), st.gid()), want, "{m:?} {u}:{g}");
        }
        assert!(m.squashes() && !m.is_identity());
        // Writing ignores squash: the map still applies backwards.
        assert_eq!((m.uid_stored(0), m.gid_stored(105)), (Some(1001), Some(5)));
    }
    // squash_to_uid alone leaves gids to the map.
    let only_uid = IdMapping { squash_to_uid: Some(7), ..base };
    let mut st = stat(3, 3);
    only_uid.present(&mut st);
    assert_eq!((st.uid(), st.gid()), (7, 103));
    // Squash without maps writes ids unchanged.
    let plain = IdMapping { squash_to_root: true, ..Default::default() };
    assert!(plain.writes_identity() && !plain.is_identity());
    assert_eq!(plain.uid_stored(1234), Some(1234));
}

#[test]
fn identity_leaves_stat_alone() {
    let m = IdMapping::default();
    assert!(m.is_identity() && m.writes_identity() && !m.squashes());
    let mut st = stat(70000, 4294967294);
    m.present(&mut st);
    assert_eq!((st.uid(), st.gid()), (70000, 4294967294));
}

#[test]
fn overflow_file_contents() {
    assert_eq!(Overflow::parse(b"65534\n"), Some(65534));
    assert_eq!(Overflow::parse(b"1000"), Some(1000));
    for bad in [&b""[..], b"\n", b"-1\n", b"65534\n\n", b" 65534\n", b"4294967295\n", b"99999999999\n", b"abc\n"] {
        assert_eq!(Overflow::parse(bad), None, "{bad:?}");
    }
    // What this machine's kernel says (65534 unless someone changed it), read as the mount does.
    let want = |p: &str| std::fs::read(p).ok().and_then(|t| Overflow::parse(&t)).unwrap_or(65534);
    let o = Overflow::read();
    assert_eq!((o.uid, o.gid), (want("/proc/sys/kernel/overflowuid"), want("/proc/sys/kernel/overflowgid")));
    assert_eq!(Overflow::default(), Overflow { uid: 65534, gid: 65534 });
}

/// An ACL xattr value: version 2 then (tag, perm, id) entries, little-endian.
fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

const UNDEF: u32 = u32::MAX;

#[test]
fn acl_ids_translated_both_ways() {
    let m = mapping();
    let on_disk = acl(&[(1, 7, UNDEF), (2, 6, 1001), (2, 4, 0), (2, 4, 80000), (4, 5, UNDEF), (8, 5, 2), (8, 1, 50), (0x10, 7, UNDEF), (0x20, 0, UNDEF)]);
    let shown = acl(&[(1, 7, UNDEF), (2, 6, 0), (2, 4, 1), (2, 4, 65534), (4, 5, UNDEF), (8, 5, 102), (8, 1, 65533), (0x10, 7, UNDEF), (0x20, 0, UNDEF)]);
    assert_eq!(m.acl_shown(&on_disk), Ok(shown));

    let written = acl(&[(1, 7, UNDEF), (2, 6, 0), (2, 6, 1), (4, 5, UNDEF), (8, 5, 109), (0x10, 7, UNDEF), (0x20, 0, UNDEF)]);
    let stored = acl(&[(1, 7, UNDEF), (2, 6, 1001), (2, 6, 0), (4, 5, UNDEF), (8, 5, 9), (0x10, 7, UNDEF), (0x20, 0, UNDEF)]);
    assert_eq!(m.acl_stored(&written), Ok(stored.clone()));
    // Stored then shown is where we started.
    assert_eq!(m.acl_shown(&stored), Ok(written));
    // An entry no range covers cannot be stored.
    assert_eq!(m.acl_stored(&acl(&[(2, 6, 70000)])), Err(AclError::Unmappable));
    assert_eq!(m.acl_stored(&acl(&[(8, 6, 5)])), Err(AclError::Unmappable));
    // Squash does not touch ACL entries.
    let sq = IdMapping { squash_to_uid: Some(42), ..m.clone() };
    assert_eq!(sq.acl_shown(&acl(&[(2, 6, 1001)])), Ok(acl(&[(2, 6, 0)])));
    // An empty ACL (header only) is valid.
    assert_eq!(m.acl_shown(&acl(&[])), Ok(acl(&[])));
}

#[test]
fn acl_malformed_values_refused() {
    let m = mapping();
    let good = acl(&[(2, 6, 1001)]);
    let mut v1 = good.clone();
    v1[0] = 1; // version 1
    let mut bad_tag = good.clone();
    bad_tag[4] = 0x40;
    for bad in [vec![], vec![2, 0, 0], good[..good.len() - 1].to_vec(), [good.clone(), vec![0]].concat(), v1, bad_tag] {
        assert_eq!(m.acl_shown(&bad), Err(AclError::Malformed), "{bad:?}");
        assert_eq!(m.acl_stored(&bad), Err(AclError::Malformed), "{bad:?}");
    }
    assert!(is_acl_xattr(b"system.posix_acl_access") && is_acl_xattr(b"system.posix_acl_default"));
    assert!(!is_acl_xattr(b"user.posix_acl_access") && !is_acl_xattr(b"system.posix_acl"));
}
