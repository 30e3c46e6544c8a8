//! Progress of layer downloads: a bar per layer (bytes, rate, ETA) on a terminal, one line
//! per finished layer otherwise (logs, CI).

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Instant;

/// All the bars of one pull.
pub struct Progress {
    multi: Option<MultiProgress>,
}

impl Progress {
    /// Bars when stderr is a terminal, lines otherwise.
    pub fn new() -> Progress {
        let tty = std::io::stderr().is_terminal();
        Progress { multi: tty.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())) }
    }

    /// A bar (or a quiet tracker) for one layer of `size` bytes.
    pub fn layer(&self, name: &str, size: u64) -> LayerBar {
        let bar = self.multi.as_ref().map(|m| {
            let b = m.add(ProgressBar::new(size));
            if let Ok(s) = ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}") {
                b.set_style(s.progress_chars("=> "));
            }
            b.set_message(format!("pulling {name}"));
            b
        });
        LayerBar { bar, name: name.to_string(), size, start: Instant::now(), resumed_at: 0 }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

/// The progress of one layer.
pub struct LayerBar {
    bar: Option<ProgressBar>,
    name: String,
    size: u64,
    start: Instant,
    resumed_at: u64,
}

/// `1.2 MiB` style.
pub fn human(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{n} B") } else { format!("{v:.1} {}", units[i]) }
}

impl LayerBar {
    /// The download starts (again) at byte `pos`.
    pub fn set_position(&mut self, pos: u64) {
        self.resumed_at = pos;
        if let Some(b) = &self.bar {
            b.set_position(pos);
            b.reset_eta();
        }
    }
    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }
    /// The layer is complete and verified.
    pub fn done(&self) {
        let secs = self.start.elapsed().as_secs_f64();
        let resumed = if self.resumed_at > 0 { format!(", resumed at {}", human(self.resumed_at)) } else { String::new() };
        match &self.bar {
            Some(b) => b.finish_with_message(format!("pulled {}", self.name)),
            None => eprintln!("{}: pulled {} in {secs:.1} s{resumed}", self.name, human(self.size)),
        }
    }
    /// The download stopped (error or Ctrl-C): remove the bar.
    pub fn abandon(&self) {
        if let Some(b) = &self.bar {
            b.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_sizes() {
        assert_eq!(super::human(0), "0 B");
        assert_eq!(super::human(1536), "1.5 KiB");
        assert_eq!(super::human(3 << 20), "3.0 MiB");
    }
}
