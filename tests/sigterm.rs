//! SIGTERM ends the daemon even when its mount was copied into another mount namespace
//! (as `unshare -m` or a container runtime does): our own unmount leaves that copy, and
//! with it the FUSE connection, alive; the daemon must abort the connection and exit,
//! and the copy must then fail (ENOTCONN) rather than be served.

mod common;

use common::overlay_harness::{daemon_pids, fuse_bin, run_bounded, should_skip, wait_gone};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A process holding a private copy of the mount table; killed on drop.
struct Holder(Child);
impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cat_in(pid: u32, file: &Path) -> (Option<i32>, String, String) {
    run_bounded(
        Command::new("nsenter").arg("-t").arg(pid.to_string()).arg("-m").arg("cat").arg(file),
        Duration::from_secs(30),
    )
}

#[test]
fn sigterm_ends_the_daemon_while_another_namespace_holds_the_mount() {
    if should_skip("sigterm_other_namespace") {
        return;
    }
    let t = tempfile::Builder::new().prefix("umsigterm").tempdir().unwrap();
    let d = |n: &str| {
        let p = t.path().join(n);
        std::fs::create_dir_all(&p).unwrap();
        p
    };
    let (l, u, w, m) = (d("l"), d("u"), d("w"), d("m"));
    std::fs::write(l.join("f"), "hello\n").unwrap();
    let opts = format!("lowerdir={},upperdir={},workdir={}", l.display(), u.display(), w.display());
    let (code, _, err) = run_bounded(Command::new(fuse_bin()).arg("-o").arg(&opts).arg(&m), Duration::from_secs(60));
    assert_eq!(code, Some(0), "mount failed: {err}");
    let pids = daemon_pids(&m);
    assert!(!pids.is_empty(), "no daemon found for {}", m.display());

    let holder = Holder(
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare"),
    );
    let hp = holder.0.id();
    // Wait (bounded) until the holder runs in its own namespace with the copy.
    let mut seen = false;
    for _ in 0..500 {
        let own = std::fs::read_link(format!("/proc/{hp}/ns/mnt")).ok();
        if own.is_some() && own != std::fs::read_link("/proc/self/ns/mnt").ok() {
            seen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(seen, "the holder never entered its own mount namespace");
    let (code, out, err) = cat_in(hp, &m.join("f"));
    assert_eq!((code, out.as_str()), (Some(0), "hello\n"), "the copy is served before SIGTERM: {err}");

    let kill = |sig: &str| {
        for p in &pids {
            let _ = Command::new("kill").arg(sig).arg(p.to_string()).status();
        }
    };
    kill("-TERM");
    if !wait_gone(&pids, &m, Duration::from_secs(60)) {
        kill("-KILL");
        panic!("the daemon still runs a minute after SIGTERM while another namespace holds its mount");
    }
    let (code, _, err) = cat_in(hp, &m.join("f"));
    assert_ne!(code, Some(0), "the copy is still served after the daemon exited");
    assert!(err.contains("not connected"), "expected ENOTCONN in the other namespace, got: {err}");
    assert!(!common::overlay_harness::is_mounted(&m), "still mounted here");
}
