//! Whether this node's storage takes writes. Two things stop them, as Cassandra's `disk_failure_policy: stop` and
//! Redis's refusal of writes it cannot persist do:
//! * the disk's free space falls below `min_free_disk`, *before* it is full, so no write half-fails;
//! * a write to the engine fails anyway (the disk filled faster, an I/O error). fjall then refuses every later
//!   write until it is opened again.
//!
//! Reads go on either way. The gate decides from measurements ([`WriteGate::on_free_space`], fed every second by
//! the store's background task) and tells its driver when to reopen the engine; it never does I/O itself. Writes
//! resume only once free space is back above the floor plus a margin (so the state does not flap at the edge),
//! and a reopen that fails is retried with a growing pause.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::StorageError;

/// First pause after a failed reopen; doubled on each failure up to [`MAX_REOPEN_PAUSE`].
const FIRST_REOPEN_PAUSE: Duration = Duration::from_secs(1);
const MAX_REOPEN_PAUSE: Duration = Duration::from_secs(60);
/// Free space a reopen after a failed write waits for, whatever the floor (even 0): one memtable, which is what the
/// engine writes at once when it flushes. Without it a node with no floor would reopen onto a full disk every
/// second and fail the next write again.
const REOPEN_MIN_FREE: u64 = 16 << 20;

/// Why writes are stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteStop {
    /// Free space is below the floor.
    LowSpace {
        /// Bytes free at the last measure.
        free: u64,
        /// The floor (`min_free_disk`).
        min_free: u64,
    },
    /// A write to the engine failed.
    Failed {
        /// The engine's error.
        error: String,
    },
}

impl WriteStop {
    /// A short word for INFO and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            WriteStop::LowSpace { .. } => "low_space",
            WriteStop::Failed { .. } => "failed",
        }
    }

    /// What peers are told (stable while the stop lasts, unlike the free space it measures).
    pub fn summary(&self) -> String {
        match self {
            WriteStop::LowSpace { min_free, .. } => format!("disk below min_free_disk ({})", human(*min_free)),
            WriteStop::Failed { error } => format!("storage write failed: {error}"),
        }
    }
}

impl std::fmt::Display for WriteStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteStop::LowSpace { free, min_free } => write!(
                f,
                "the disk has {} free, below min_free_disk ({}); free space and writes resume by themselves",
                human(*free),
                human(*min_free)
            ),
            WriteStop::Failed { error } => write!(
                f,
                "a storage write failed ({error}); writes resume once the disk has room and the engine reopens"
            ),
        }
    }
}

/// What the driver must do after a measure.
#[derive(Debug, PartialEq, Eq)]
pub enum SpaceAction {
    /// Nothing changed.
    None,
    /// Writes just stopped for low space.
    Stopped,
    /// Writes just resumed.
    Resumed,
    /// Reopen the engine, then report with [`WriteGate::reopened`].
    Reopen,
}

#[derive(Debug)]
struct GateState {
    stop: Option<WriteStop>,
    /// No reopen before this instant (after a failed one).
    next_reopen: Option<Instant>,
    reopen_pause: Duration,
}

/// Whether writes are taken, shared by the store's writers and its background task.
#[derive(Debug)]
pub struct WriteGate {
    min_free: u64,
    /// Mirrors `state.stop.is_some()`: the writers' fast path reads only this.
    stopped: AtomicBool,
    state: Mutex<GateState>,
}

impl WriteGate {
    /// A gate that stops writes below `min_free` bytes free (0: only a failed write stops them).
    pub fn new(min_free: u64) -> Self {
        Self {
            min_free,
            stopped: AtomicBool::new(false),
            state: Mutex::new(GateState { stop: None, next_reopen: None, reopen_pause: FIRST_REOPEN_PAUSE }),
        }
    }

    /// The floor of free space.
    pub fn min_free(&self) -> u64 {
        self.min_free
    }

    /// Free space at which stopped writes resume: the floor and a quarter more.
    fn resume_at(&self) -> u64 {
        self.min_free.saturating_add(self.min_free / 4)
    }

    /// `Ok` when writes are taken, else the refusal to give the writer.
    pub fn check(&self) -> Result<(), StorageError> {
        if !self.stopped.load(Ordering::Acquire) {
            return Ok(());
        }
        match self.stop() {
            Some(stop) => Err(StorageError::WritesStopped { reason: stop.to_string() }),
            None => Ok(()),
        }
    }

    /// Why writes are stopped, if they are.
    pub fn stop(&self) -> Option<WriteStop> {
        self.state.lock().expect("gate lock").stop.clone()
    }

    /// Records the outcome of an engine write: a failure of the engine stops writes (other errors, such as a value
    /// that does not decode, say nothing about the disk). Returns the result unchanged.
    pub fn observe<T>(&self, result: Result<T, StorageError>) -> Result<T, StorageError> {
        if let Err(StorageError::Engine { message }) = &result {
            let mut s = self.state.lock().expect("gate lock");
            if !matches!(s.stop, Some(WriteStop::Failed { .. })) {
                tracing::error!(
                    error = %message,
                    "a storage write failed: this node stops taking writes (reads go on) and tells its peers, \
                     whose writes go to other replicas as hints. Free disk space or fix the disk; writes resume by \
                     themselves once the engine reopens"
                );
                s.stop = Some(WriteStop::Failed { error: message.clone() });
                s.next_reopen = None;
                s.reopen_pause = FIRST_REOPEN_PAUSE;
                self.stopped.store(true, Ordering::Release);
            }
        }
        result
    }

    /// Takes a measure of free space at `now`; says what the driver must do.
    pub fn on_free_space(&self, free: u64, now: Instant) -> SpaceAction {
        let resume_at = self.resume_at();
        let mut s = self.state.lock().expect("gate lock");
        let may_reopen = s.next_reopen.is_none_or(|t| now >= t);
        match &mut s.stop {
            None if free < self.min_free => {
                tracing::error!(
                    free = %human(free),
                    min_free_disk = %human(self.min_free),
                    "disk space is low: this node stops taking writes (reads go on) and tells its peers, whose \
                     writes go to other replicas as hints. Free space (or raise the volume); writes resume by \
                     themselves above {}",
                    human(resume_at)
                );
                s.stop = Some(WriteStop::LowSpace { free, min_free: self.min_free });
                self.stopped.store(true, Ordering::Release);
                SpaceAction::Stopped
            }
            None => SpaceAction::None,
            Some(WriteStop::LowSpace { .. }) if free >= resume_at => {
                tracing::info!(free = %human(free), "disk space is back: taking writes again");
                s.stop = None;
                self.stopped.store(false, Ordering::Release);
                SpaceAction::Resumed
            }
            Some(WriteStop::LowSpace { free: last, .. }) => {
                *last = free;
                SpaceAction::None
            }
            Some(WriteStop::Failed { .. }) if free >= resume_at.max(REOPEN_MIN_FREE) && may_reopen => {
                SpaceAction::Reopen
            }
            Some(WriteStop::Failed { .. }) => SpaceAction::None,
        }
    }

    /// Reports the reopen that [`on_free_space`](Self::on_free_space) asked for: writes resume after a success;
    /// after a failure the next attempt waits longer.
    pub fn reopened(&self, result: &Result<(), StorageError>, now: Instant) {
        let mut s = self.state.lock().expect("gate lock");
        match result {
            Ok(()) => {
                tracing::info!("storage engine reopened: taking writes again");
                s.stop = None;
                s.next_reopen = None;
                s.reopen_pause = FIRST_REOPEN_PAUSE;
                self.stopped.store(false, Ordering::Release);
            }
            Err(e) => {
                tracing::error!(error = %e, retry_in = ?s.reopen_pause, "reopening the storage engine failed");
                s.next_reopen = Some(now + s.reopen_pause);
                s.reopen_pause = (s.reopen_pause * 2).min(MAX_REOPEN_PAUSE);
            }
        }
    }
}

/// Bytes in the largest binary unit that keeps them above 1.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn engine_error() -> Result<(), StorageError> {
        Err(StorageError::Engine { message: "No space left on device".into() })
    }

    #[test]
    fn low_space_stops_writes_and_resumes_above_the_margin() {
        let gate = WriteGate::new(8 * MIB);
        let now = Instant::now();
        assert_eq!(gate.on_free_space(20 * MIB, now), SpaceAction::None);
        assert!(gate.check().is_ok());
        assert_eq!(gate.on_free_space(7 * MIB, now), SpaceAction::Stopped);
        let err = gate.check().unwrap_err();
        assert!(err.to_string().contains("below min_free_disk (8.0 MiB)"), "{err}");
        // Just above the floor is not enough: the margin keeps it from flapping.
        assert_eq!(gate.on_free_space(9 * MIB, now), SpaceAction::None);
        assert!(gate.check().is_err());
        assert_eq!(gate.on_free_space(10 * MIB, now), SpaceAction::Resumed);
        assert!(gate.check().is_ok());
    }

    #[test]
    fn a_failed_write_stops_writes_until_a_reopen_succeeds() {
        let gate = WriteGate::new(8 * MIB);
        let now = Instant::now();
        assert!(gate.observe(engine_error()).is_err());
        assert!(matches!(gate.stop(), Some(WriteStop::Failed { .. })));
        assert!(gate.check().unwrap_err().to_string().contains("No space left on device"));
        // No reopen while the disk is still short.
        assert_eq!(gate.on_free_space(MIB, now), SpaceAction::None);
        assert_eq!(gate.on_free_space(20 * MIB, now), SpaceAction::Reopen);
        gate.reopened(&Err(StorageError::Engine { message: "still broken".into() }), now);
        // A failed reopen waits before the next attempt, longer each time.
        assert_eq!(gate.on_free_space(20 * MIB, now), SpaceAction::None);
        assert_eq!(gate.on_free_space(20 * MIB, now + FIRST_REOPEN_PAUSE), SpaceAction::Reopen);
        gate.reopened(&Err(StorageError::Engine { message: "still broken".into() }), now + FIRST_REOPEN_PAUSE);
        assert_eq!(gate.on_free_space(20 * MIB, now + FIRST_REOPEN_PAUSE * 2), SpaceAction::None);
        assert_eq!(gate.on_free_space(20 * MIB, now + FIRST_REOPEN_PAUSE * 3), SpaceAction::Reopen);
        gate.reopened(&Ok(()), now);
        assert!(gate.check().is_ok());
        assert_eq!(gate.stop(), None);
    }

    #[test]
    fn errors_that_are_not_the_engines_do_not_stop_writes() {
        let gate = WriteGate::new(0);
        let corrupt: Result<(), StorageError> = Err(StorageError::Corrupt { reason: "bad".into() });
        assert!(gate.observe(corrupt).is_err());
        assert!(gate.check().is_ok());
        // A floor of 0 never stops writes for space.
        assert_eq!(gate.on_free_space(0, Instant::now()), SpaceAction::None);
        // After a failed write it still waits for room before reopening.
        assert!(gate.observe(engine_error()).is_err());
        assert_eq!(gate.on_free_space(MIB, Instant::now()), SpaceAction::None);
        assert_eq!(gate.on_free_space(REOPEN_MIN_FREE, Instant::now()), SpaceAction::Reopen);
    }
}
