//! Giving the heap a burst left behind back to the system.
//!
//! glibc's malloc keeps the memory the program frees in its arenas for reuse, and on its own
//! returns only a heap's free top. What a burst frees in the middle (the buffers of an HTTP/2
//! load, the state of 10,000 connections that closed) stays resident: the edge measured
//! 57 MiB at rest after the benchmark's loads, against 18 MiB before them.
//!
//! So the edge looks every [`CHECK_EVERY`] at how much freed memory malloc holds
//! (`mallinfo2`) and at its own resident size. When malloc holds at least [`TRIM_AT`] free,
//! and since the last trim either the process grew or malloc's free memory grew by at least
//! [`TRIM_AT`], it asks malloc to give the free pages back (`malloc_trim(0)`, on a blocking
//! thread). A trim walks the arenas under their locks, so it happens after a burst, not on
//! every check: memory that steady traffic reuses moves neither figure by that much.
//!
//! Both are needed. A trim during a load leaves the process at the load's size; when the
//! load ends, what it frees does not make the process grow, but it does make malloc's free
//! memory grow. And a trimmed chunk stays counted as free, so free memory alone would trim
//! again and again for nothing.
//!
//! Only glibc has these calls; elsewhere this is a no-op.

use std::time::Duration;

use tokio::sync::watch;

use crate::connection::{Stop, stopped};

/// How often the edge looks at its heap.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);
/// Freed memory held, and growth since the last trim, that make a trim worth its walk.
pub const TRIM_AT: usize = 8 << 20;

/// Whether to trim, from what the last trim left and what the heap holds now.
#[derive(Debug, Default)]
pub struct Policy {
    /// The resident size right after the last trim (0 before the first).
    resident_after_trim: usize,
    /// Malloc's free bytes right after the last trim (0 before the first).
    free_after_trim: usize,
}

impl Policy {
    /// Whether a heap holding `free` bytes freed, in a process of `resident` bytes, should be
    /// trimmed now.
    pub fn due(&self, free: usize, resident: usize) -> bool {
        free >= TRIM_AT
            && (resident >= self.resident_after_trim.saturating_add(TRIM_AT)
                || free >= self.free_after_trim.saturating_add(TRIM_AT))
    }

    /// Records a trim that left malloc holding `free` bytes and the process at `resident`.
    pub fn trimmed(&mut self, free: usize, resident: usize) {
        self.free_after_trim = free;
        self.resident_after_trim = resident;
    }
}

/// What one check saw and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trim {
    /// The resident size before, in bytes.
    pub before: usize,
    /// The resident size after, in bytes (the same as `before` when it did not trim).
    pub after: usize,
}

/// Looks at the heap once, and trims it when `policy` says so. `None` when this platform
/// cannot tell (not glibc, or no `/proc`).
pub fn check(policy: &mut Policy) -> Option<Trim> {
    let free = malloc_free_bytes()?;
    let before = resident_bytes()?;
    if !policy.due(free, before) {
        return Some(Trim {
            before,
            after: before,
        });
    }
    trim();
    let after = resident_bytes()?;
    policy.trimmed(malloc_free_bytes()?, after);
    Some(Trim { before, after })
}

/// Checks the heap every [`CHECK_EVERY`] until the edge stops.
pub(crate) async fn trim_after_bursts(mut stop: watch::Receiver<Stop>) {
    if malloc_free_bytes().is_none() {
        return;
    }
    let mut policy = Some(Policy::default());
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            () = tokio::time::sleep(CHECK_EVERY) => {}
        }
        let mut owned = policy
            .take()
            .expect("the policy is put back after every check");
        let Ok((trim, back)) = tokio::task::spawn_blocking(move || {
            let trim = check(&mut owned);
            (trim, owned)
        })
        .await
        else {
            return;
        };
        policy = Some(back);
        if let Some(Trim { before, after }) = trim
            && after != before
        {
            tracing::debug!(
                before_mib = before >> 20,
                after_mib = after >> 20,
                "gave the heap a burst freed back to the system"
            );
        }
    }
}

/// The bytes malloc holds freed, in every arena.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn malloc_free_bytes() -> Option<usize> {
    // SAFETY: mallinfo2 only reads malloc's own counters, under its locks.
    let info = unsafe { nix::libc::mallinfo2() };
    Some(info.fordblks)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn malloc_free_bytes() -> Option<usize> {
    None
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: malloc_trim only releases pages of free chunks back to the kernel.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

/// This process's resident size in bytes, from `/proc/self/statm`.
pub fn resident_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()?;
    Some(pages * usize::try_from(page).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn a_trim_is_due_when_much_is_free_and_the_process_or_the_free_memory_grew_since_the_last() {
        let mut policy = Policy::default();
        assert!(!policy.due(TRIM_AT - 1, 500 * MIB), "little free");
        assert!(policy.due(TRIM_AT, 500 * MIB));
        policy.trimmed(20 * MIB, 100 * MIB);
        // Trimmed chunks stay counted as free: no trim again for the same free memory.
        assert!(!policy.due(20 * MIB, 100 * MIB));
        assert!(!policy.due(20 * MIB + TRIM_AT - 1, 100 * MIB + TRIM_AT - 1));
        // The process grew (a burst under way)...
        assert!(policy.due(20 * MIB, 100 * MIB + TRIM_AT));
        // ...or a load ended and freed what it held, without the process growing.
        assert!(policy.due(20 * MIB + TRIM_AT, 90 * MIB));
        assert!(!policy.due(TRIM_AT - 1, 900 * MIB), "little free");
    }
}
