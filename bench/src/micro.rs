//! Micro-benchmarks of unionmount's union core, without a mount or FUSE: the lookup
//! cache hit path, the lookup miss path (the layer walk), and the readdir merge.
//!
//! They drive `unionmount::union::UnionFs` directly over the layers of the built test
//! set (read-only, no upper), so the numbers are the daemon's own cost per operation,
//! with the kernel and the FUSE protocol taken out.
//!
//! | id | what one operation is |
//! |---|---|
//! | `lookup-hit` | `UnionFs::lookup` of a name already in the LRU (wide dir, 2 layers) |
//! | `lookup-miss-main` | the same with the cache disabled: a walk of the 6-layer main stack |
//! | `lookup-miss-deep` | cache disabled, names of the 100-layer deep stack's merged dir, half missing |
//! | `readdir-wide` | `UnionFs::list_dir` of the 20k-entry dir merged from 2 layers |
//! | `readdir-deep` | `UnionFs::list_dir` of the deep stack's dir, merged from 100 layers |

use crate::layerset::Manifest;
use std::ffi::OsString;
use std::path::Path;
use std::time::Instant;
use unionmount::layers::{LayerStack, StackSpec};
use unionmount::union::inode::ROOT_INO;
use unionmount::union::{Config, UnionFs};

/// One micro-benchmark result: median nanoseconds per operation over the repetitions.
pub struct Micro {
    pub id: &'static str,
    pub what: String,
    pub ns_per_op: f64,
}

fn open(set_dir: &Path, layers: &[String], cache_entries: usize) -> Result<UnionFs, String> {
    let spec = StackSpec {
        lowers: layers.iter().map(|l| set_dir.join(l)).collect(),
        ..Default::default()
    };
    let stack = LayerStack::open(&spec).map_err(|e| e.to_string())?;
    UnionFs::new(
        stack,
        Config {
            cache_entries,
            ..Default::default()
        },
    )
    .map_err(|e| format!("UnionFs::new: {e}"))
}

/// Inode of `path` (relative, '/'-separated) from the root.
fn walk_to(fs: &UnionFs, path: &str) -> Result<u64, String> {
    let mut ino = ROOT_INO;
    for c in path.split('/') {
        ino = fs
            .lookup(ino, c.as_ref())
            .map_err(|e| format!("lookup {c} in {path}: {e}"))?
            .ino;
    }
    Ok(ino)
}

/// Median ns per op of `reps` runs of `f`, each doing `ops` operations (one untimed).
fn measure(
    reps: usize,
    ops: usize,
    mut f: impl FnMut() -> Result<(), String>,
) -> Result<f64, String> {
    f()?;
    let mut v = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed().as_nanos() as f64 / ops as f64);
    }
    Ok(crate::report::median(&mut v))
}

/// Lookups of every name in `names` under `dir`, forgetting what was found so the node
/// table does not grow; returns (found, missing).
fn lookups(fs: &UnionFs, dir: u64, names: &[OsString]) -> (usize, usize) {
    let (mut found, mut missing) = (0, 0);
    for n in names {
        match fs.lookup(dir, n) {
            Ok(a) => {
                found += 1;
                fs.forget(a.ino, 1);
            }
            Err(_) => missing += 1,
        }
    }
    (found, missing)
}

pub fn run(set_dir: &Path, m: &Manifest, reps: usize) -> Result<Vec<Micro>, String> {
    let mut out = Vec::new();
    let wide: Vec<OsString> = (0..m.scale.wide_entries)
        .map(|i| format!("e{i:05}").into())
        .collect();
    let sample: Vec<OsString> = wide
        .iter()
        .step_by((wide.len() / 1000).max(1))
        .cloned()
        .collect();

    for (id, cache) in [("lookup-hit", 100_000), ("lookup-miss-main", 0)] {
        let fs = open(set_dir, &m.main_layers, cache)?;
        let dir = walk_to(&fs, &m.wide_dir)?;
        let ns = measure(reps, sample.len(), || {
            let (found, _) = lookups(&fs, dir, &sample);
            if found == sample.len() {
                Ok(())
            } else {
                Err(format!("{id}: {found} of {} found", sample.len()))
            }
        })?;
        out.push(Micro {
            id,
            what: format!(
                "lookup of {} names in the wide dir, cache {cache} entries",
                sample.len()
            ),
            ns_per_op: ns,
        });
    }

    let fs = open(set_dir, &m.deep_layers, 0)?;
    let dir = walk_to(&fs, &m.deep_dir)?;
    let mut names: Vec<OsString> = m.deep_names.iter().step_by(5).map(OsString::from).collect();
    let positive = names.len();
    names.extend(m.deep_missing.iter().take(positive).map(OsString::from));
    let ns = measure(reps, names.len(), || match lookups(&fs, dir, &names) {
        (f, _) if f == positive => Ok(()),
        (f, _) => Err(format!("lookup-miss-deep: {f} of {positive} found")),
    })?;
    out.push(Micro {
        id: "lookup-miss-deep",
        what: format!(
            "lookup of {} names (half missing) through {} layers, no cache",
            names.len(),
            m.deep_layers.len()
        ),
        ns_per_op: ns,
    });

    for (id, layers, path) in [
        ("readdir-wide", &m.main_layers, &m.wide_dir),
        ("readdir-deep", &m.deep_layers, &m.deep_dir),
    ] {
        let fs = open(set_dir, layers, 100_000)?;
        let dir = walk_to(&fs, path)?;
        let n = fs
            .list_dir(dir)
            .map_err(|e| format!("list_dir: {e}"))?
            .len();
        let ns = measure(reps, 1, || {
            fs.list_dir(dir)
                .map(|_| ())
                .map_err(|e| format!("list_dir: {e}"))
        })?;
        out.push(Micro {
            id,
            what: format!(
                "merged listing of {path} ({n} entries) in a {}-layer stack",
                layers.len()
            ),
            ns_per_op: ns,
        });
    }
    Ok(out)
}

/// The markdown table of micro results.
pub fn markdown(res: &[Micro]) -> String {
    let mut s = String::from("| micro-benchmark | what | time per op |\n|---|---|---:|\n");
    for r in res {
        let t = if r.ns_per_op >= 1e6 {
            format!("{:.2} ms", r.ns_per_op / 1e6)
        } else if r.ns_per_op >= 1e3 {
            format!("{:.2} µs", r.ns_per_op / 1e3)
        } else {
            format!("{:.0} ns", r.ns_per_op)
        };
        s.push_str(&format!("| {} | {} | {t} |\n", r.id, r.what));
    }
    s
}
