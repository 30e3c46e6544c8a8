//! Smoke test of the benchmark machinery: `--quick`, one round, against kernel overlayfs
//! and whichever FUSE targets are installed (fuse-overlayfs, a built unionmount). It checks
//! that every output is written and that kernel and fuse-overlayfs samples succeed; it
//! asserts nothing about timings. Then the micro-benchmarks, `--quick --micro`. Needs
//! root (skips otherwise).

use std::path::{Path, PathBuf};
use std::process::Command;

fn unionmount_bin() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    ["target/release/unionmount", "target/debug/unionmount"]
        .iter()
        .map(|p| root.join(p))
        .find(|p| p.exists())
}

#[test]
fn quick_run_writes_results() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let base = std::env::temp_dir().join(format!("unionmount-bench-smoke-{}", std::process::id()));
    let (work, out) = (base.join("work"), base.join("out"));
    let mut targets = vec!["kernel".to_string()];
    if Path::new("/usr/bin/fuse-overlayfs").exists() {
        targets.push("fuse-overlayfs".into());
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_unionmount-bench"));
    if let Some(um) = unionmount_bin() {
        targets.push("unionmount".into());
        cmd.arg("--unionmount").arg(um);
    }
    let status = cmd
        .args(["--quick", "--rounds", "1", "--targets", &targets.join(",")])
        .arg("--work-dir")
        .arg(&work)
        .arg("--out")
        .arg(&out)
        .status()
        .expect("run unionmount-bench");
    assert!(status.success(), "unionmount-bench failed: {status}");

    let md = std::fs::read_to_string(out.join("results.md")).expect("results.md");
    assert!(md.contains("stat walk, whole tree, cold"), "{md}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).expect("results.json"))
            .expect("valid JSON");
    let samples = json["samples"].as_array().expect("samples");
    let kernel: Vec<_> = samples.iter().filter(|s| s["target"] == "kernel").collect();
    assert!(
        kernel.len() >= 14,
        "kernel ran every workload but daemon-rss: {}",
        kernel.len()
    );
    for s in samples
        .iter()
        .filter(|s| s["target"] == "kernel" || s["target"] == "fuse-overlayfs")
    {
        assert!(s["error"].is_null(), "sample failed: {s}");
    }
    let two_targets = json["targets"].as_array().is_some_and(|t| t.len() > 1);
    if two_targets && Path::new("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").exists() {
        assert!(out.join("ratios.png").exists(), "chart not drawn");
    }

    let status = Command::new(env!("CARGO_BIN_EXE_unionmount-bench"))
        .args(["--quick", "--micro"])
        .arg("--work-dir")
        .arg(&work)
        .arg("--out")
        .arg(&out)
        .status()
        .expect("run unionmount-bench --micro");
    assert!(
        status.success(),
        "unionmount-bench --micro failed: {status}"
    );
    let micro = std::fs::read_to_string(out.join("micro.md")).expect("micro.md");
    for id in [
        "lookup-hit",
        "lookup-miss-main",
        "lookup-miss-deep",
        "readdir-wide",
        "readdir-deep",
    ] {
        assert!(
            micro.contains(&format!("| {id} |")),
            "{id} missing: {micro}"
        );
    }
    std::fs::remove_dir_all(&base).expect("clean up");
}
