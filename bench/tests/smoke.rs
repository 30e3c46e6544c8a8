//! Smoke test of the benchmark machinery: `--quick`, one round, against kernel overlayfs
//! (default and `volatile`) and whichever FUSE targets are installed (fuse-overlayfs 1.x,
//! fuse-overlayfs 2.0 if an earlier run installed it, a built unionmount). It checks that
//! every output and section is written, that kernel and fuse-overlayfs samples succeed,
//! and that the page cache of N kernel mounts of one file is that file once; it asserts
//! nothing about timings. Then the micro-benchmarks, `--quick --micro`. Needs root
//! (skips otherwise).

use std::path::{Path, PathBuf};
use std::process::Command;

fn unionmount_bin() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    ["target/release/unionmount", "target/debug/unionmount"]
        .iter()
        .map(|p| root.join(p))
        .find(|p| p.exists())
}

/// fuse-overlayfs 2.0 where the bench installs it by default, if a run did already:
/// the smoke test never installs it (that takes minutes).
const FO2: &str = "/var/tmp/unionmount-bench/tools/fuse-overlayfs-2.0.0/bin/fuse-overlayfs";

#[test]
fn quick_run_writes_results() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let base = std::env::temp_dir().join(format!("unionmount-bench-smoke-{}", std::process::id()));
    let (work, out) = (base.join("work"), base.join("out"));
    let mut targets = vec!["kernel".to_string(), "kernel-volatile".to_string()];
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_unionmount-bench"));
    if Path::new("/usr/bin/fuse-overlayfs").exists() {
        targets.push("fuse-overlayfs-1".into());
    }
    if Path::new(FO2).exists() {
        targets.push("fuse-overlayfs-2".into());
        cmd.arg("--fuse-overlayfs-2").arg(FO2);
    }
    if let Some(um) = unionmount_bin() {
        targets.push("unionmount".into());
        targets.push("unionmount-volatile".into());
        cmd.arg("--unionmount").arg(um);
    }
    // Count FUSE requests too where the kernel has the tracepoint.
    let traced = Path::new("/sys/kernel/tracing/events/fuse/fuse_request_send").exists();
    if traced {
        cmd.arg("--fuse-requests");
    }
    let status = cmd
        .args(["--quick", "--rounds", "1", "--no-drop-caches"])
        .args(["--targets", &targets.join(",")])
        .arg("--work-dir")
        .arg(&work)
        .arg("--out")
        .arg(&out)
        .status()
        .expect("run unionmount-bench");
    assert!(status.success(), "unionmount-bench failed: {status}");

    let md = std::fs::read_to_string(out.join("results.md")).expect("results.md");
    for heading in [
        "stat walk, whole tree, cold",
        "## Reads and metadata",
        "## Writes, durable class",
        "## Writes, volatile class",
        "## Targets of issue 14",
    ] {
        assert!(md.contains(heading), "{heading} missing: {md}");
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).expect("results.json"))
            .expect("valid JSON");
    let samples = json["samples"].as_array().expect("samples");
    let on = |t: &str| -> Vec<&serde_json::Value> {
        samples.iter().filter(|s| s["target"] == t).collect()
    };
    // Every workload but daemon-rss runs on the kernel; its volatile twin runs the
    // writing ones only (copy-up, the creates, rm -rf, rename).
    let kernel = on("kernel");
    assert!(kernel.len() >= 19, "kernel ran {} workloads", kernel.len());
    let volatile = on("kernel-volatile");
    assert!(
        volatile.len() >= 5 && volatile.len() < kernel.len(),
        "kernel-volatile ran {} workloads",
        volatile.len()
    );
    for s in kernel.iter().chain(&volatile) {
        assert!(
            s["error"].is_null() && s["refused"].is_null(),
            "sample failed: {s}"
        );
    }
    for s in on("fuse-overlayfs-1").iter().chain(&on("fuse-overlayfs-2")) {
        assert!(s["error"].is_null(), "sample failed: {s}");
    }
    // The page cache of N kernel overlay mounts of one file is that file, once, when a
    // memory cgroup can account it (the measure itself is under test here, not speed).
    let memcg = json["machine"]["memcg"].as_str().unwrap_or("");
    if memcg.starts_with("cgroup v") {
        let size = json["scale"]["shared_bytes"]
            .as_f64()
            .expect("shared_bytes");
        for w in ["pagecache-rw", "pagecache-ro"] {
            let s = kernel.iter().find(|s| s["workload"] == w).expect(w);
            let v = s["value"].as_f64().expect("page cache measured");
            assert!(
                v > size * 0.5 && v < size * 2.0,
                "{w}: {v} bytes for a {size}-byte file"
            );
        }
    } else {
        eprintln!("no memory cgroup here ({memcg}): page cache not checked");
    }
    // Every file `xargs touch` creates is one CREATE request, on every FUSE target.
    if traced {
        let files = json["scale"]["create_files"]
            .as_u64()
            .expect("create_files");
        for s in samples
            .iter()
            .filter(|s| {
                s["workload"] == "create"
                    && s["target"] != "kernel"
                    && s["target"] != "kernel-volatile"
            })
            .filter(|s| s["error"].is_null())
        {
            assert_eq!(s["requests"]["CREATE"].as_u64(), Some(files), "{s}");
        }
        assert!(md.contains("## FUSE requests per sample"), "{md}");
    }
    // Bars are unionmount's and fuse-overlayfs 2.0's ratios.
    let bars = targets
        .iter()
        .any(|t| t == "unionmount" || t == "fuse-overlayfs-2");
    if bars && Path::new("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").exists() {
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
