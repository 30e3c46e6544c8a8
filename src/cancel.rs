//! Cancellation of long work (downloads, unpacking) on Ctrl-C or SIGTERM.
//!
//! ```text
//! install() ── SIGINT/SIGTERM ──> SIGNAL = 2 or 15 ──> check(), Reader, sleep() fail with
//!                                                      Interrupted; the caller cleans up
//!                                                      and the front end exits 128 + signal
//! a second signal ─────────────> the default action (the process ends at once)
//! ```
//! Invariants:
//! - the handlers only store the signal number in an atomic (async-signal-safe); all the
//!   cleaning up happens in ordinary code that sees [`check`] fail, so whatever is half
//!   written is removed by the code that wrote it (temp dirs, partial files stay
//!   clearly named and never become cache entries);
//! - once a signal was seen it stays seen: every later [`check`] fails, so no later step
//!   (unpacking, mounting) starts;
//! - a second SIGINT or SIGTERM takes the default action, so a stuck clean-up never
//!   traps the user.
//!
//! The mount daemon itself does not use this module: it blocks the signals and waits for
//! them in a thread of its own (mount.rs).

use std::fmt;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The signal seen (0 = none).
static SIGNAL: AtomicUsize = AtomicUsize::new(0);
/// Set by the first signal: arms the default action for the next one.
static SEEN: AtomicBool = AtomicBool::new(false);
static INSTALLED: std::sync::Once = std::sync::Once::new();

/// Long work stopped because of a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupted {
    /// The signal number (2 = SIGINT, 15 = SIGTERM).
    pub signal: i32,
}

impl Interrupted {
    /// The conventional exit status: 128 + the signal number (130, 143).
    pub fn exit_code(self) -> i32 {
        128 + self.signal
    }
    /// `SIGINT`, `SIGTERM`.
    pub fn name(self) -> &'static str {
        match self.signal {
            libc::SIGINT => "SIGINT",
            libc::SIGTERM => "SIGTERM",
            _ => "a signal",
        }
    }
}

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "interrupted by {}", self.name())
    }
}
impl std::error::Error for Interrupted {}

/// Catch SIGINT and SIGTERM from now on (idempotent). Call it at the start of a command
/// that does long work; if it cannot install the handlers the signals keep their
/// default action (the process ends), which is logged.
pub fn install() {
    INSTALLED.call_once(|| {
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            // Registered first, so it runs first: only the second signal ends the process.
            let r = signal_hook::flag::register_conditional_default(sig, &SEEN)
                .and_then(|_| signal_hook::flag::register_usize(sig, &SIGNAL, sig as usize))
                .and_then(|_| signal_hook::flag::register(sig, &SEEN));
            if let Err(e) = r {
                log::warn!("cannot catch signal {sig}: {e}");
            }
        }
    });
}

/// The signal received, if any.
pub fn signal() -> Option<Interrupted> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(Interrupted { signal: s as i32 }),
    }
}

/// Fail if a signal was received.
pub fn check() -> Result<(), Interrupted> {
    match signal() {
        Some(i) => Err(i),
        None => Ok(()),
    }
}

/// Sleep for `d`, waking early (with an error) when a signal arrives.
pub fn sleep(d: Duration) -> Result<(), Interrupted> {
    let end = Instant::now() + d;
    loop {
        check()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// Is `e` the error a [`Reader`] returns once a signal arrived?
pub fn is_interrupted(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<Interrupted>())
}

/// A reader that fails (with an [`Interrupted`] inside an `io::Error`) once a signal has
/// been received, so any loop reading through it stops at its next read. The error kind
/// is `Other`, not `Interrupted`, which `std::io` would silently retry.
pub struct Reader<R>(pub R);

impl<R: Read> Read for Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        check().map_err(std::io::Error::other)?;
        self.0.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupted_names_and_codes() {
        let i = Interrupted { signal: libc::SIGINT };
        assert_eq!(i.exit_code(), 130);
        assert_eq!(i.to_string(), "interrupted by SIGINT");
        assert_eq!(Interrupted { signal: libc::SIGTERM }.exit_code(), 143);
        let e = std::io::Error::other(i);
        assert!(is_interrupted(&e));
        assert!(!is_interrupted(&std::io::Error::other("x")));
    }
}
