//! What a node takes from the machine it runs on (L0): sockets, the wall clock, randomness and threads for
//! blocking work.
//!
//! Normally these are tokio's sockets, the system clock, the OS's randomness and tokio's blocking pool. Built with
//! the `sim` feature and running inside a turmoil simulation (`tests/sim.rs`), they are turmoil's simulated
//! network and clock, a generator seeded by the simulation, and the calling thread: every host of the simulation
//! then runs on one thread from one seed, so a run replays exactly. Outside a simulation the `sim` build behaves as
//! the normal one, except that sockets are always turmoil's.

use std::time::{SystemTime, UNIX_EPOCH};

#[cfg(not(feature = "sim"))]
pub use tokio::net::{TcpListener, TcpStream};
#[cfg(feature = "sim")]
pub use turmoil::net::{TcpListener, TcpStream};

/// Milliseconds since the Unix epoch by this host's wall clock (in a simulation: the simulated clock, moved by the
/// simulation's clock jumps). Never use it to measure durations: a wall clock jumps (tokio's `Instant` does not).
pub fn now_ms() -> u64 {
    #[cfg(feature = "sim")]
    if let Some(since) = turmoil::since_epoch() {
        return (since.as_millis() as u64).saturating_add_signed(sim::clock_offset_ms());
    }
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Nanoseconds since the Unix epoch by this host's wall clock (seeds, never causality).
pub fn now_nanos() -> u64 {
    #[cfg(feature = "sim")]
    if turmoil::in_simulation() {
        return now_ms().saturating_mul(1_000_000);
    }
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Fills `buf` with random bytes: the OS's, or in a simulation the simulation's seeded generator.
pub fn fill_random(buf: &mut [u8]) -> Result<(), getrandom::Error> {
    #[cfg(feature = "sim")]
    if turmoil::in_simulation() {
        sim::fill(buf);
        return Ok(());
    }
    getrandom::fill(buf)
}

/// A random 64-bit number (see [`fill_random`]).
pub fn random_u64() -> Result<u64, getrandom::Error> {
    let mut b = [0u8; 8];
    fill_random(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// Runs blocking work (disk I/O, a scan under every key lock) off the async threads; in a simulation, inline: a
/// second thread would make the run depend on the OS scheduler.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    #[cfg(feature = "sim")]
    if turmoil::in_simulation() {
        return f();
    }
    tokio::task::spawn_blocking(f).await.expect("blocking task panicked")
}

/// Starts blocking work in the background (see [`blocking`]); in a simulation it runs to completion at once.
pub fn spawn_blocking(f: impl FnOnce() + Send + 'static) {
    #[cfg(feature = "sim")]
    if turmoil::in_simulation() {
        f();
        return;
    }
    tokio::task::spawn_blocking(f);
}

/// The simulation's side of the seams: its seeded generator.
#[cfg(feature = "sim")]
pub mod sim {
    use std::cell::Cell;

    thread_local! {
        /// SplitMix64 state: every host of a simulation runs on the thread that runs the simulation.
        static RNG: Cell<u64> = const { Cell::new(0x9e37_79b9_7f4a_7c15) };
    }

    thread_local! {
        static MERGE_BUG: Cell<bool> = const { Cell::new(false) };
        /// How far the wall clock of every host has jumped from the simulated time (ms).
        static CLOCK_OFFSET: Cell<i64> = const { Cell::new(0) };
    }

    /// Seeds the generator and sets the wall clock back to the simulated time: call before building each
    /// simulation.
    pub fn reset(seed: u64) {
        RNG.with(|r| r.set(seed));
        CLOCK_OFFSET.with(|o| o.set(0));
    }

    /// Jumps the wall clock of every host by `ms` (forward, or backward when negative), as an NTP step or an
    /// operator's `date -s` would: `sys::now_ms` moves, the monotonic clock tokio's timers use does not. (turmoil
    /// runs every host on one thread with no per-host hook, so every host jumps together.)
    pub fn jump_clock(ms: i64) {
        CLOCK_OFFSET.with(|o| o.set(o.get().saturating_add(ms)));
    }

    /// How far the wall clock has jumped in total.
    pub fn clock_offset_ms() -> i64 {
        CLOCK_OFFSET.with(Cell::get)
    }

    /// Plants (or removes) a bug in the merge of sibling sets on this thread, so a test can show the simulator
    /// finds lost writes: a replica holding a version the other side has not seen drops the other side's new ones.
    pub fn plant_merge_bug(planted: bool) {
        MERGE_BUG.with(|b| b.set(planted));
    }

    /// Whether [`plant_merge_bug`] planted the bug.
    pub fn merge_bug_planted() -> bool {
        MERGE_BUG.with(Cell::get)
    }

    /// The next number of the simulation's generator.
    pub fn next_u64() -> u64 {
        RNG.with(|r| {
            let s = r.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
            r.set(s);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        })
    }

    pub(super) fn fill(buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let n = next_u64().to_le_bytes();
            chunk.copy_from_slice(&n[..chunk.len()]);
        }
    }
}
