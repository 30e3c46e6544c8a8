//! Raw samples → medians and ratios → console table, markdown, JSON.
//!
//! Ratios are target median ÷ reference median, measured in the same run: below 1 means
//! faster (or smaller, for RSS) than the reference.

use crate::layerset::Scale;
use crate::machine::Machine;
use crate::workloads::{self, Unit};
use serde::Serialize;
use std::fmt::Write;

#[derive(Clone, Debug, Serialize)]
pub struct SampleRec {
    pub workload: String,
    pub target: String,
    pub round: usize,
    /// Seconds, or bytes for RSS; absent when the run failed.
    pub value: Option<f64>,
    pub check: Option<u64>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TargetInfo {
    pub name: String,
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
}

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
    pub fn target_names(&self) -> Vec<String> {
        self.targets.iter().map(|t| t.name.clone()).collect()
    }

    /// Workload ids that have samples, in the canonical order.
    pub fn workload_ids(&self) -> Vec<&'static str> {
        workloads::ALL
            .iter()
            .map(|w| w.id)
            .filter(|id| self.samples.iter().any(|s| s.workload == *id))
            .collect()
    }

    pub fn cell(&self, workload: &str, target: &str) -> Option<Cell> {
        let mine = self
            .samples
            .iter()
            .filter(|s| s.workload == workload && s.target == target);
        let errors = mine.clone().filter(|s| s.value.is_none()).count();
        let mut v: Vec<f64> = mine.filter_map(|s| s.value).collect();
        if v.is_empty() {
            return None;
        }
        let med = median(&mut v);
        let mut dev: Vec<f64> = v.iter().map(|x| (x - med).abs()).collect();
        Some(Cell {
            median: med,
            mad: median(&mut dev),
            n: v.len(),
            errors,
        })
    }

    pub fn ratio(&self, workload: &str, target: &str, reference: &str) -> Option<f64> {
        let (a, b) = (
            self.cell(workload, target)?,
            self.cell(workload, reference)?,
        );
        (b.median > 0.0).then(|| a.median / b.median)
    }

    /// Check numbers that differ between targets for the same workload (a target that
    /// sees a different tree); one line per disagreement.
    pub fn check_mismatches(&self) -> Vec<String> {
        let mut out = Vec::new();
        for id in self.workload_ids() {
            let mut seen: Vec<(String, u64)> = Vec::new();
            for s in self.samples.iter().filter(|s| s.workload == id) {
                if let Some(c) = s.check
                    && !seen.iter().any(|(t, v)| *t == s.target && *v == c)
                {
                    seen.push((s.target.clone(), c));
                }
            }
            let first = seen.first().map(|x| x.1);
            if seen.iter().any(|x| Some(x.1) != first) {
                let list: Vec<String> = seen.iter().map(|(t, c)| format!("{t}={c}")).collect();
                out.push(format!("{id}: {}", list.join(", ")));
            }
        }
        out
    }

    /// The ratio columns: (label, target, reference), for the targets present.
    pub fn ratio_columns(&self) -> Vec<(String, String, String)> {
        let names = self.target_names();
        let has = |n: &str| names.iter().any(|x| x == n);
        let mut cols = Vec::new();
        for (t, r) in [
            ("fuse-overlayfs", "kernel"),
            ("unionmount", "kernel"),
            ("unionmount", "fuse-overlayfs"),
        ] {
            if has(t) && has(r) {
                cols.push((format!("{t} ÷ {r}"), t.to_string(), r.to_string()));
            }
        }
        cols
    }

    /// The markdown results table, with the machine and scale above it.
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
                format!(" (extra options: {})", t.extra_opts)
            };
            let _ = writeln!(s, "- {}: {}{opts}", t.name, t.version);
        }
        for (t, why) in &self.skipped_targets {
            let _ = writeln!(s, "- {t}: skipped ({why})");
        }
        let _ = writeln!(
            s,
            "\nTest set: base of {} files, {} small files, a {}-entry dir over 2 layers, a {} MiB file, \
             a {}-layer deep stack; copy-up of {}, create {}, {} random reads.\n",
            self.base_files,
            sc.small_files,
            sc.wide_entries,
            sc.big_bytes >> 20,
            sc.deep_layers,
            sc.copyup_files,
            sc.create_files,
            sc.rand_reads
        );
        let names = self.target_names();
        let cols = self.ratio_columns();
        let _ = write!(s, "| workload |");
        for n in &names {
            let _ = write!(s, " {n} |");
        }
        for (label, _, _) in &cols {
            let _ = write!(s, " {label} |");
        }
        let _ = write!(s, "\n|---|");
        for _ in 0..names.len() + cols.len() {
            let _ = write!(s, "---:|");
        }
        let _ = writeln!(s);
        for id in self.workload_ids() {
            let w = workloads::ALL
                .iter()
                .find(|w| w.id == id)
                .expect("known id");
            let title = if id == "daemon-rss" {
                format!(
                    "daemon peak RSS after walking >= {} entries",
                    sc.rss_min_entries
                )
            } else {
                w.title.to_string()
            };
            let _ = write!(s, "| {title} |");
            for n in &names {
                let _ = write!(
                    s,
                    " {} |",
                    self.cell(id, n)
                        .map(|c| fmt_cell(&c, w.unit))
                        .unwrap_or_else(|| "–".into())
                );
            }
            for (_, t, r) in &cols {
                let _ = write!(
                    s,
                    " {} |",
                    self.ratio(id, t, r)
                        .map(|x| format!("{x:.2}x"))
                        .unwrap_or_else(|| "–".into())
                );
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(
            s,
            "\nCells: median over rounds ± median absolute deviation relative to the median (noise)."
        );
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
    let mut s = fmt_value(c.median, unit);
    if c.n > 1 && c.median > 0.0 {
        let _ = write!(s, " ±{:.0}%", c.mad / c.median * 100.0);
    }
    if c.errors > 0 {
        let _ = write!(s, " ({} failed)", c.errors);
    }
    s
}
