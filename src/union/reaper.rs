//! Background removal of what deletes leave in the work directory.
//!
//! Removing a directory moves it (with the whiteouts it may hold) into the work
//! directory in one rename; deleting that subtree is then nobody's business but
//! ours, so a thread does it after the request has been answered. The thread starts
//! on first use, so it lives in the serving process (the daemon forks after the
//! file system is built). Invariant: only names this daemon moved into work are
//! sent here; anything still there after a crash is removed when the next mount
//! cleans work.

use crate::layers::remove_tree_at;
use parking_lot::Mutex;
use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::mpsc::{Sender, channel};
use std::thread::JoinHandle;

#[derive(Default)]
pub struct Reaper {
    /// A duplicate of the work directory fd, handed to the thread when it starts.
    work: Mutex<Option<OwnedFd>>,
    tx: Mutex<Option<Sender<CString>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Reaper {
    /// A reaper for the work directory `work` (a duplicate fd).
    pub fn new(work: OwnedFd) -> Reaper {
        Reaper { work: Mutex::new(Some(work)), tx: Mutex::new(None), thread: Mutex::new(None) }
    }

    fn start(&self) -> Option<Sender<CString>> {
        let mut tx = self.tx.lock();
        if tx.is_none() {
            let work = self.work.lock().take()?;
            let (s, rx) = channel::<CString>();
            let t = std::thread::Builder::new()
                .name("reaper".into())
                .spawn(move || {
                    for name in rx {
                        if let Err(e) = remove_tree_at(work.as_fd(), &name) {
                            log::warn!("could not remove {} from the work dir: {e}", name.to_string_lossy());
                        }
                    }
                })
                .ok()?;
            *self.thread.lock() = Some(t);
            *tx = Some(s);
        }
        tx.clone()
    }

    /// Remove `work/name` soon (now, if no thread could be started).
    pub fn reap(&self, work: BorrowedFd<'_>, name: CString) {
        let name = match self.start() {
            Some(tx) => match tx.send(name) {
                Ok(()) => return,
                Err(e) => e.0,
            },
            None => name,
        };
        let _ = remove_tree_at(work, &name);
    }
}

impl Drop for Reaper {
    /// Finish pending removals before the file system goes away.
    fn drop(&mut self) {
        self.tx.lock().take();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}
