//! Raw samples → medians and ratios → markdown tables and JSON.
//!
//! Targets fall into three sections: the read-only workloads (no write, so durability
//! does not apply; kernel, fuse-overlayfs 1.x and 2.0, unionmount), and the writing
//! workloads in each durability class (`targets::Durability`): durable (kernel and
//! unionmount defaults: copy-ups fsynced) and volatile (kernel and unionmount with
//! `volatile`, fuse-overlayfs, which never fsyncs a copy-up). Ratios are only taken
//! within a section, and are the median over rounds of the per-round ratio (the two
//! samples of a round ran minutes apart at most, so slow drifts of a shared machine
//! cancel): below 1 means faster (or smaller) than the reference.

use crate::goals;
use crate::layerset::Scale;
use crate::machine::Machine;
use crate::targets::{Durability, Role};
use crate::workloads::{self, Unit};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Clone, Debug, Serialize)]
pub struct SampleRec {
    pub workload: String,
    pub target: String,
    pub round: usize,
    /// Seconds, or bytes; absent when the sample failed or the operation was refused.
    pub value: Option<f64>,
    pub check: Option<u64>,
    /// The errno name of an operation the target refuses by design (e.g. EXDEV).
    pub refused: Option<String>,
    /// FUSE requests of the timed part by opcode (`--fuse-requests`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<BTreeMap<String, u64>>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TargetInfo {
    pub id: String,
    pub label: String,
    pub role: Role,
    pub durability: Durability,
    /// Measured on the read-only workloads too.
    pub reads: bool,
    pub version: String,
    pub binary: Option<String>,
    pub extra_opts: String,
}

/// Everything a run produced; serialised as results.json.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    pub machine: Machine,
    pub command: String,
    pub scale: Scale,
    pub rounds: usize,
    pub seed: u64,
    pub base_files: usize,
    pub drop_caches: bool,
    pub targets: Vec<TargetInfo>,
    pub skipped_targets: Vec<(String, String)>,
    pub samples: Vec<SampleRec>,
    pub total_secs: f64,
}

/// Median and spread of one (workload, target) cell.
#[derive(Clone, Debug)]
pub struct Cell {
    pub median: f64,
    /// Median absolute deviation from the median: a noise gauge robust to one outlier.
    pub mad: f64,
    pub n: usize,
    pub errors: usize,
    /// Set when every sample that did not fail was refused (and then n is 0).
    pub refused: Option<String>,
}

/// The sections of the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Read-only workloads: targets with `reads`.
    Reads,
    Durable,
    Volatile,
}

impl Class {
    pub const ALL: [Class; 3] = [Class::Reads, Class::Durable, Class::Volatile];

    pub fn title(self) -> &'static str {
        match self {
            Class::Reads => "Reads and metadata (nothing written: durability does not apply)",
            Class::Durable => {
                "Writes, durable class: copy-ups fsynced (kernel overlayfs's and unionmount's defaults)"
            }
            Class::Volatile => {
                "Writes, volatile class: nothing fsynced (kernel and unionmount with `volatile`; fuse-overlayfs never fsyncs a copy-up)"
            }
        }
    }

    /// A short name for charts and the targets table.
    pub fn short(self) -> &'static str {
        match self {
            Class::Reads => "reads",
            Class::Durable => "durable",
            Class::Volatile => "volatile",
        }
    }
}

/// The comparisons every section shows where both sides are present, as roles.
pub const COMPARISONS: &[(Role, Role)] = &[
    (Role::FuseOverlayfs1, Role::Kernel),
    (Role::FuseOverlayfs2, Role::Kernel),
    (Role::Unionmount, Role::Kernel),
    (Role::Unionmount, Role::FuseOverlayfs2),
    (Role::Unionmount, Role::Baseline),
];

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

impl Record {
    /// The targets of a section, in the order they were given.
    pub fn members(&self, class: Class) -> Vec<&TargetInfo> {
        self.targets
            .iter()
            .filter(|t| match class {
                Class::Reads => t.reads,
                Class::Durable => t.durability == Durability::Durable,
                Class::Volatile => t.durability == Durability::Volatile,
            })
            .collect()
    }

    /// The target playing `role` in a section.
    pub fn member(&self, class: Class, role: Role) -> Option<&TargetInfo> {
        self.members(class).into_iter().find(|t| t.role == role)
    }

    /// Workload ids of a section that have samples, in the canonical order.
    pub fn section_workloads(&self, class: Class) -> Vec<&'static str> {
        let ids: Vec<&str> = self.members(class).iter().map(|t| t.id.as_str()).collect();
        workloads::ALL
            .iter()
            .filter(|w| w.writes == (class != Class::Reads))
            .map(|w| w.id)
            .filter(|id| {
                self.samples
                    .iter()
                    .any(|s| s.workload == *id && ids.contains(&s.target.as_str()))
            })
            .collect()
    }

    /// The (target, reference) pairs of a section, as target ids.
    pub fn comparisons(&self, class: Class) -> Vec<(&TargetInfo, &TargetInfo)> {
        COMPARISONS
            .iter()
            .filter_map(|&(a, b)| Some((self.member(class, a)?, self.member(class, b)?)))
            .collect()
    }

    pub fn cell(&self, workload: &str, target: &str) -> Option<Cell> {
        let mine = self
            .samples
            .iter()
            .filter(|s| s.workload == workload && s.target == target);
        let errors = mine.clone().filter(|s| s.error.is_some()).count();
        let refused = mine.clone().find_map(|s| s.refused.clone());
        let mut v: Vec<f64> = mine.clone().filter_map(|s| s.value).collect();
        if v.is_empty() {
            if refused.is_none() && errors == 0 {
                return None;
            }
            return Some(Cell {
                median: 0.0,
                mad: 0.0,
                n: 0,
                errors,
                refused,
            });
        }
        let med = median(&mut v);
        let mut dev: Vec<f64> = v.iter().map(|x| (x - med).abs()).collect();
        Some(Cell {
            median: med,
            mad: median(&mut dev),
            n: v.len(),
            errors,
            refused: None,
        })
    }

    /// Median over rounds of target ÷ reference, from the rounds where both measured.
    pub fn ratio(&self, workload: &str, target: &str, reference: &str) -> Option<f64> {
        let value = |t: &str, round: usize| {
            self.samples
                .iter()
                .find(|s| s.workload == workload && s.target == t && s.round == round)
                .and_then(|s| s.value)
        };
        let mut r: Vec<f64> = (0..self.rounds)
            .filter_map(|round| {
                let (a, b) = (value(target, round)?, value(reference, round)?);
                (b > 0.0).then(|| a / b)
            })
            .collect();
        (!r.is_empty()).then(|| median(&mut r))
    }

    /// Check numbers that differ between targets for the same workload (a target that
    /// sees a different tree); one line per disagreement.
    pub fn check_mismatches(&self) -> Vec<String> {
        let mut out = Vec::new();
        for w in workloads::ALL {
            let mut seen: Vec<(String, u64)> = Vec::new();
            for s in self.samples.iter().filter(|s| s.workload == w.id) {
                if let Some(c) = s.check
                    && !seen.iter().any(|(t, v)| *t == s.target && *v == c)
                {
                    seen.push((s.target.clone(), c));
                }
            }
            let first = seen.first().map(|x| x.1);
            if seen.iter().any(|x| Some(x.1) != first) {
                let list: Vec<String> = seen.iter().map(|(t, c)| format!("{t}={c}")).collect();
                out.push(format!("{}: {}", w.id, list.join(", ")));
            }
        }
        out
    }

    /// The title of a workload as the report shows it.
    pub fn title(&self, id: &str) -> String {
        match id {
            "daemon-rss" => format!(
                "daemon peak RSS after walking >= {} entries",
                self.scale.rss_min_entries
            ),
            "pagecache-rw" => format!(
                "page cache: one {} MiB lower file read through {} writable mounts",
                self.scale.shared_bytes >> 20,
                self.scale.pagecache_rw_mounts
            ),
            "pagecache-ro" => format!(
                "page cache: one {} MiB lower file read through {} read-only mounts",
                self.scale.shared_bytes >> 20,
                self.scale.pagecache_ro_mounts
            ),
            _ => workloads::ALL
                .iter()
                .find(|w| w.id == id)
                .map_or(id.to_string(), |w| w.title.to_string()),
        }
    }

    /// The markdown report: machine and targets, one table per section, the issue's
    /// targets, disagreements and failures.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let sc = &self.scale;
        let _ = writeln!(s, "# unionmount-bench results\n");
        let _ = writeln!(
            s,
            "Run {} ({} scale, {} rounds, {:.0} s): `{}`\n",
            self.machine.date_utc, sc.name, self.rounds, self.total_secs, self.command
        );
        let _ = writeln!(s, "Machine: {}.\n", self.machine.one_line());
        for t in &self.targets {
            let opts = if t.extra_opts.is_empty() {
                String::new()
            } else {
                format!(", options `{}`", t.extra_opts)
            };
            let class = match t.durability {
                Durability::Durable => "durable",
                Durability::Volatile => "volatile",
            };
            let bin = match (&t.binary, t.role) {
                (Some(b), Role::Unionmount | Role::Baseline) => format!(" at `{b}`"),
                _ => String::new(),
            };
            let _ = writeln!(
                s,
                "- {} (`{}`): {}{bin}{opts}; {class} class",
                t.label, t.id, t.version
            );
        }
        for (t, why) in &self.skipped_targets {
            let _ = writeln!(s, "- {t}: skipped ({why})");
        }
        let _ = writeln!(
            s,
            "\nTest set: base of {} files, {} small files, a {}-entry dir over 2 layers, a {} MiB file, \
             a {}-layer deep stack; copy-up of {}, {} files created, {} random reads, a {}-file dir renamed.",
            self.base_files,
            sc.small_files,
            sc.wide_entries,
            sc.big_bytes >> 20,
            sc.deep_layers,
            sc.copyup_files,
            sc.create_files,
            sc.rand_reads,
            sc.rename_files
        );
        if !self.machine.memcg.is_empty() {
            let _ = writeln!(s, "Page cache measured with the {}.", self.machine.memcg);
        }
        for class in Class::ALL {
            let ids = self.section_workloads(class);
            if ids.is_empty() {
                continue;
            }
            let _ = writeln!(s, "\n## {}\n", class.title());
            let members = self.members(class);
            let cmps = self.comparisons(class);
            let _ = write!(s, "| workload |");
            for t in &members {
                let _ = write!(s, " {} |", t.label);
            }
            for (a, b) in &cmps {
                let _ = write!(s, " {} ÷ {} |", a.label, b.label);
            }
            let _ = write!(s, "\n|---|");
            for _ in 0..members.len() + cmps.len() {
                let _ = write!(s, "---:|");
            }
            let _ = writeln!(s);
            for id in ids {
                let w = workloads::ALL
                    .iter()
                    .find(|w| w.id == id)
                    .expect("known id");
                let _ = write!(s, "| {} |", self.title(id));
                for t in &members {
                    let _ = write!(
                        s,
                        " {} |",
                        self.cell(id, &t.id)
                            .map(|c| fmt_cell(&c, w.unit))
                            .unwrap_or_else(|| "–".into())
                    );
                }
                for (a, b) in &cmps {
                    let _ = write!(
                        s,
                        " {} |",
                        self.ratio(id, &a.id, &b.id)
                            .map(|x| format!("{x:.2}x"))
                            .unwrap_or_else(|| "–".into())
                    );
                }
                let _ = writeln!(s);
            }
        }
        let _ = writeln!(
            s,
            "\nCells: median over rounds ± median absolute deviation relative to the median (noise). \
             Ratios: median over rounds of the ratio within a round. EXDEV: the target refuses the \
             operation (no time)."
        );
        s.push_str(&goals::markdown(&goals::evaluate(self)));
        s.push_str(&self.requests_markdown());
        let mism = self.check_mismatches();
        if !mism.is_empty() {
            let _ = writeln!(
                s,
                "\nTargets disagreed on what they saw (entries/bytes): {}",
                mism.join("; ")
            );
        }
        let errs: Vec<&SampleRec> = self.samples.iter().filter(|x| x.error.is_some()).collect();
        if !errs.is_empty() {
            let _ = writeln!(s, "\nFailed samples ({}):", errs.len());
            for e in errs.iter().take(20) {
                let _ = writeln!(
                    s,
                    "- {} on {} round {}: {}",
                    e.workload,
                    e.target,
                    e.round,
                    e.error.as_deref().unwrap_or("")
                );
            }
        }
        s
    }
}

impl Record {
    /// Median FUSE requests per sample by opcode, per workload and target, when counted.
    pub fn requests(&self, workload: &str, target: &str) -> Option<BTreeMap<String, u64>> {
        let runs: Vec<&BTreeMap<String, u64>> = self
            .samples
            .iter()
            .filter(|s| s.workload == workload && s.target == target)
            .filter_map(|s| s.requests.as_ref())
            .collect();
        if runs.is_empty() {
            return None;
        }
        let ops: std::collections::BTreeSet<&String> = runs.iter().flat_map(|r| r.keys()).collect();
        Some(
            ops.into_iter()
                .map(|op| {
                    let mut v: Vec<f64> = runs
                        .iter()
                        .map(|r| r.get(op).copied().unwrap_or(0) as f64)
                        .collect();
                    (op.clone(), median(&mut v).round() as u64)
                })
                .filter(|(_, n)| *n > 0)
                .collect(),
        )
    }

    /// The FUSE request counts as a markdown section (empty when none were counted).
    fn requests_markdown(&self) -> String {
        let mut s = String::new();
        let mut rows = Vec::new();
        for w in workloads::ALL {
            for t in &self.targets {
                if let Some(r) = self.requests(w.id, &t.id) {
                    rows.push((w.id, &t.label, r));
                }
            }
        }
        if rows.is_empty() {
            return s;
        }
        let _ = writeln!(
            s,
            "\n## FUSE requests per sample (timed part, median over rounds)\n\n\
             | workload | target | requests | by opcode |\n|---|---|---:|---|"
        );
        for (id, label, r) in rows {
            let total: u64 = r.values().sum();
            let mut ops: Vec<(&String, &u64)> = r.iter().collect();
            ops.sort_by(|a, b| b.1.cmp(a.1));
            let list: Vec<String> = ops.iter().map(|(o, n)| format!("{o} {n}")).collect();
            let _ = writeln!(s, "| {id} | {label} | {total} | {} |", list.join(", "));
        }
        s
    }
}

pub fn fmt_value(v: f64, unit: Unit) -> String {
    match unit {
        Unit::Bytes => format!("{:.1} MiB", v / 1048576.0),
        Unit::Secs if v >= 10.0 => format!("{v:.1} s"),
        Unit::Secs if v >= 1.0 => format!("{v:.2} s"),
        Unit::Secs if v >= 0.01 => format!("{:.1} ms", v * 1e3),
        Unit::Secs => format!("{:.2} ms", v * 1e3),
    }
}

fn fmt_cell(c: &Cell, unit: Unit) -> String {
    if c.n == 0 {
        return match &c.refused {
            Some(e) => e.clone(),
            None => format!("failed ({})", c.errors),
        };
    }
    let mut s = fmt_value(c.median, unit);
    if c.n > 1 && c.median > 0.0 {
        let _ = write!(s, " ±{:.0}%", c.mad / c.median * 100.0);
    }
    if c.errors > 0 {
        let _ = write!(s, " ({} failed)", c.errors);
    }
    s
}
