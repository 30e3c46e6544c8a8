//! The performance targets of issue 14, checked against one run.
//!
//! Every ratio is a median over rounds of per-round ratios, taken within one section of
//! the report (`report::Class`): reads, or writes in one durability class. The targets:
//! - every workload at or below fuse-overlayfs 2.0 in the same class;
//! - small-file reads and `tar` of a tree within 1.3x of kernel overlayfs;
//! - the cold walk within 2x;
//! - create (`xargs touch`) and `rm -rf` within 3x, in both durability classes;
//! - copy-up within 1.2x, durable;
//! - the page cache of N mounts within 1.15x;
//! - renaming a lower directory within 3x of kernel overlayfs with `redirect_dir=on`.

use crate::report::{Class, Record};
use crate::targets::Role;
use std::fmt::Write;

/// Kernel-relative limits: (workloads, limit, sections it applies to).
const KERNEL_LIMITS: &[(&[&str], f64, &[Class])] = &[
    (
        &["small-read-cold", "small-read-warm", "tar-cold"],
        1.3,
        &[Class::Reads],
    ),
    (&["walk-cold"], 2.0, &[Class::Reads]),
    (
        &["create", "rm-rf"],
        3.0,
        &[Class::Durable, Class::Volatile],
    ),
    (&["copy-up"], 1.2, &[Class::Durable]),
    (&["pagecache-rw", "pagecache-ro"], 1.15, &[Class::Reads]),
    (&["rename-dir"], 3.0, &[Class::Durable, Class::Volatile]),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Met,
    NotMet,
    /// One side has no measurement in this run.
    Unknown,
}

/// One target checked: unionmount's ratio to the reference in one section.
#[derive(Clone, Debug)]
pub struct Goal {
    pub workload: &'static str,
    pub class: Class,
    /// The reference role: kernel overlayfs or fuse-overlayfs 2.0.
    pub against: Role,
    pub limit: f64,
    pub ratio: Option<f64>,
    pub status: Status,
    /// Why there is no ratio (a refusal), when there is none.
    pub note: String,
}

/// Check every target that the run has the workloads for.
pub fn evaluate(rec: &Record) -> Vec<Goal> {
    let mut out = Vec::new();
    for class in Class::ALL {
        for id in rec.section_workloads(class) {
            if let Some(g) = check(rec, id, class, Role::FuseOverlayfs2, 1.0) {
                out.push(g);
            }
        }
    }
    for &(ids, limit, classes) in KERNEL_LIMITS {
        for &class in classes {
            for &id in ids {
                if rec.section_workloads(class).contains(&id)
                    && let Some(g) = check(rec, id, class, Role::Kernel, limit)
                {
                    out.push(g);
                }
            }
        }
    }
    out
}

/// unionmount against `against` on `id` in `class`; None when either is not in the run.
fn check(rec: &Record, id: &'static str, class: Class, against: Role, limit: f64) -> Option<Goal> {
    let um = rec.member(class, Role::Unionmount)?;
    let other = rec.member(class, against)?;
    let (ucell, ocell) = (rec.cell(id, &um.id), rec.cell(id, &other.id));
    let ratio = rec.ratio(id, &um.id, &other.id);
    let (status, note) = match (ratio, &ucell, &ocell) {
        (Some(r), _, _) => (
            if r <= limit {
                Status::Met
            } else {
                Status::NotMet
            },
            String::new(),
        ),
        // unionmount refuses what the other does: not met.
        (None, Some(u), _) if u.refused.is_some() => (
            Status::NotMet,
            format!("{}: {}", um.label, u.refused.clone().unwrap_or_default()),
        ),
        // The other refuses what unionmount does: met.
        (None, Some(u), Some(o)) if u.n > 0 && o.refused.is_some() => (
            Status::Met,
            format!("{}: {}", other.label, o.refused.clone().unwrap_or_default()),
        ),
        _ => (Status::Unknown, "not measured on both".into()),
    };
    Some(Goal {
        workload: id,
        class,
        against,
        limit,
        ratio,
        status,
        note,
    })
}

/// The targets as a markdown section.
pub fn markdown(goals: &[Goal]) -> String {
    let mut s = String::new();
    if goals.is_empty() {
        return s;
    }
    let met = goals.iter().filter(|g| g.status == Status::Met).count();
    let _ = writeln!(
        s,
        "\n## Targets of issue 14: {met} of {} met\n\n\
         | workload | class | unionmount ÷ | ratio | limit | |\n|---|---|---|---:|---:|---|",
        goals.len()
    );
    for g in goals {
        let against = match g.against {
            Role::Kernel => "kernel",
            Role::FuseOverlayfs2 => "fuse-overlayfs 2.0",
            _ => "?",
        };
        let ratio = match g.ratio {
            Some(r) => format!("{r:.2}x"),
            None => g.note.clone(),
        };
        let status = match g.status {
            Status::Met => "met",
            Status::NotMet => "**not met**",
            Status::Unknown => "unknown",
        };
        let _ = writeln!(
            s,
            "| {} | {} | {against} | {ratio} | {:.2}x | {status} |",
            g.workload,
            g.class.short(),
            g.limit
        );
    }
    s
}
