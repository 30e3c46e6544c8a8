//! Property tests ("fuzzing" with proptest) over the option parser, the reference
//! parser and every store's metadata parsers: arbitrary input never panics, errors
//! are one line, and the escaping of lowerdir round-trips.

use proptest::prelude::*;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use unionmount::{Parsed, parse_mount, split_lowerdir};
use unionmount::store::{StoreQuery, reference, resolve};

fn arg() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        prop::sample::select(vec![
            b"-o".to_vec(),
            b"-f".to_vec(),
            b"-d".to_vec(),
            b"--store".to_vec(),
            b"lowerdir=/a:/b".to_vec(),
            b"lowerdir=".to_vec(),
            b"upperdir=/u,workdir=/w".to_vec(),
            br#"context="a,b",,volatile"#.to_vec(),
            b"threads=0".to_vec(),
            b"/mnt".to_vec(),
        ]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn option_parser_never_panics(args in prop::collection::vec(arg(), 0..8)) {
        let argv: Vec<OsString> = args.into_iter().map(OsString::from_vec).collect();
        match parse_mount(&argv) {
            Ok(Parsed::Mount(m)) => prop_assert!(!m.mountpoint.as_os_str().is_empty()),
            Ok(_) => {}
            Err(e) => prop_assert!(!e.contains('\n'), "multi-line error: {e}"),
        }
    }

    #[test]
    fn lowerdir_escaping_round_trips(paths in prop::collection::vec(prop::collection::vec(1u8..=255, 1..12), 1..6)) {
        let mut joined = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            if i > 0 {
                joined.push(b':');
            }
            for &c in p {
                if c == b':' || c == b'\\' {
                    joined.push(b'\\');
                }
                joined.push(c);
            }
        }
        let got: Vec<Vec<u8>> = split_lowerdir(&joined)
            .into_iter()
            .map(|p| p.into_os_string().into_vec())
            .collect();
        prop_assert_eq!(got, paths);
    }

    #[test]
    fn reference_parser_never_panics(s in "\\PC{0,80}") {
        if let Ok(n) = reference::parse_name(&s) {
            // What was accepted prints back to something that parses the same.
            let again = reference::parse_name(&n.full()).expect("full() reparses");
            prop_assert_eq!(again.full(), n.full());
        }
        let _ = reference::parse_query(&s);
    }
}

/// One metadata file of each store format, replaced by arbitrary bytes.
fn store_case(kind: u8, bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let write = |rel: &str, data: &[u8]| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    };
    match kind % 4 {
        0 => {
            std::fs::create_dir_all(root.join("overlay2")).unwrap();
            write("image/overlay2/repositories.json", bytes);
            std::fs::create_dir_all(root.join("image/overlay2/imagedb/content/sha256")).unwrap();
        }
        1 => {
            write("overlay-images/images.json", bytes);
            write("overlay-layers/layers.json", b"[]");
            std::fs::create_dir_all(root.join("overlay")).unwrap();
        }
        2 => {
            write("overlay-images/images.json", br#"[{"id":"aaaa","names":["x:y"],"layer":"l1"}]"#);
            write("overlay-layers/layers.json", bytes);
            std::fs::create_dir_all(root.join("overlay")).unwrap();
        }
        _ => {
            write("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
            write("index.json", bytes);
            std::fs::create_dir_all(root.join("blobs/sha256")).unwrap();
        }
    }
    (dir, root)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn store_parsers_never_panic(kind in 0u8..4, bytes in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        "\\PC{0,200}".prop_map(String::into_bytes),
        Just(br#"{"Repositories":{"x":{"x:y":"sha256:zz"}}}"#.to_vec()),
        Just(br#"[{"id":"l1","parent":"l1"}]"#.to_vec()),
        Just(br#"{"manifests":[{"digest":"sha256:00","annotations":{"org.opencontainers.image.ref.name":"y"}}]}"#.to_vec()),
    ]) {
        let (_keep, root) = store_case(kind, &bytes);
        let cache = _keep.path().join("cache");
        for reference in ["x:y", "y", "aaaa", "sha256:00"] {
            let q = StoreQuery { reference: reference.into(), store: Some(root.clone()), cache: Some(cache.clone()), ..Default::default() };
            if let Err(e) = resolve(&q) {
                prop_assert!(!e.to_string().contains('\n'), "multi-line error: {e}");
            }
        }
    }
}
