//! Send times, cheaply: [`now`] is the wall-clock time (as `SystemTime::now()`), read from the
//! CPU's time-stamp counter between re-anchorings to the system clock.
//!
//! Why: every envelope carries its send time, and `SystemTime::now()` is a vDSO call that cost
//! 24–37 ns on the reference VM (20 % of the CPU samples of a 1 → 1 event; the kernel reads the
//! TSC with ordering fences and then applies the hypervisor's clock parameters). Reading the TSC
//! alone costs about 10 ns, and [`now`] 12–16 ns.
//!
//! How: each thread keeps an *anchor*: a TSC reading taken together with `SystemTime::now()`
//! and the TSC rate measured between its last two anchors. Within a millisecond of its anchor a
//! thread interpolates (`wall + ticks × ns_per_tick`); then it reads the system clock again
//! and re-anchors, so interpolation never runs ahead of the system clock by more than the rate
//! error over one millisecond (tens of nanoseconds), and NTP adjustments are followed within a
//! millisecond. Nothing is shared between threads: no atomics beyond a one-time CPU check, no
//! lock.
//!
//! Invariants (per thread):
//! - The TSC is used only if the CPU says it is invariant (constant rate, runs in every power
//!   state: CPUID leaf `0x8000_0007`, EDX bit 8) — on other CPUs and other architectures
//!   `now` is `SystemTime::now()`.
//! - An anchor's TSC reading is the midpoint of two readings around the system-clock read, and
//!   is kept only if they are less than [`MAX_READ_NS`] apart (a thread preempted during the
//!   read would otherwise pair a TSC value with a wall time far from it).
//! - Interpolation needs a rate measured over at least [`MIN_SPAN_NS`], between 0.05 and 20 ns
//!   per tick (50 MHz – 20 GHz); anything else (a stepped system clock, a TSC that went
//!   backwards after the thread moved) discards the rate, and the thread reads the system clock
//!   until it has measured a sane one again.
//!
//! `unsafe`: one call to the `_rdtsc` intrinsic, which reads a register and touches no memory;
//! it exists on every x86_64 CPU. That is the whole argument.

use std::time::SystemTime;

/// The wall-clock time now.
#[inline]
pub(crate) fn now() -> SystemTime {
    #[cfg(target_arch = "x86_64")]
    if let Some(time) = tsc::now() {
        return time;
    }
    SystemTime::now()
}

// The TSC clock's parts (used on x86_64, unit-tested everywhere).
/// Re-anchor after this long (in nanoseconds of interpolated time).
#[cfg(any(target_arch = "x86_64", test))]
const REFRESH_NS: f64 = 1_000_000.0;
/// Measure the TSC rate over at least this long.
#[cfg(any(target_arch = "x86_64", test))]
const MIN_SPAN_NS: u128 = 500_000;
/// Two TSC readings around a system-clock read further apart than this: the thread was
/// interrupted, the pair is not kept.
#[cfg(any(target_arch = "x86_64", test))]
const MAX_READ_NS: f64 = 20_000.0;

/// One thread's anchor: a TSC reading, the wall time at that reading, and the TSC rate.
#[cfg(any(target_arch = "x86_64", test))]
#[derive(Clone, Copy, Debug, PartialEq)]
struct Anchor {
    tsc: u64,
    wall: SystemTime,
    /// Nanoseconds per tick; 0 while unknown.
    ns_per_tick: f64,
    /// Interpolate while fewer ticks than this have passed since `tsc` (0: never).
    refresh_ticks: u64,
}

#[cfg(any(target_arch = "x86_64", test))]
impl Anchor {
    /// No anchor yet: every read goes to the system clock.
    const NONE: Anchor = Anchor {
        tsc: 0,
        wall: SystemTime::UNIX_EPOCH,
        ns_per_tick: 0.0,
        refresh_ticks: 0,
    };

    /// The wall time at TSC reading `tsc`, if it is within the anchor's interpolation window.
    #[inline]
    fn interpolate(&self, tsc: u64) -> Option<SystemTime> {
        // A TSC behind the anchor wraps to a huge distance: re-anchor.
        let ticks = tsc.wrapping_sub(self.tsc);
        if ticks >= self.refresh_ticks {
            return None;
        }
        let ns = (ticks as f64 * self.ns_per_tick) as u64;
        Some(self.wall + std::time::Duration::from_nanos(ns))
    }

    /// The anchor after reading the system clock (`wall`) between TSC readings `before` and
    /// `after`.
    fn next(self, before: u64, wall: SystemTime, after: u64) -> Anchor {
        let fresh = Anchor {
            tsc: before / 2 + after / 2 + (before % 2 + after % 2) / 2,
            wall,
            ns_per_tick: 0.0,
            refresh_ticks: 0,
        };
        let read_ticks = after.wrapping_sub(before);
        if self.ns_per_tick > 0.0 && read_ticks as f64 * self.ns_per_tick > MAX_READ_NS {
            // Interrupted during the read: keep measuring from the old anchor, which stays
            // valid as a base, but interpolate from nothing until a clean read.
            return Anchor {
                refresh_ticks: 0,
                ..self
            };
        }
        if self == Anchor::NONE {
            return fresh;
        }
        let ticks = fresh.tsc.wrapping_sub(self.tsc);
        let Ok(span) = wall.duration_since(self.wall) else {
            return fresh; // the system clock stepped back
        };
        let span = span.as_nanos();
        if ticks == 0 || ticks > u64::MAX / 2 {
            return fresh; // the TSC did not move or went backwards
        }
        if span < MIN_SPAN_NS {
            // Too short to measure a rate: keep the older base, read the clock meanwhile.
            return Anchor {
                refresh_ticks: 0,
                ..self
            };
        }
        let ns_per_tick = span as f64 / ticks as f64;
        if !(0.05..=20.0).contains(&ns_per_tick) {
            return fresh;
        }
        Anchor {
            ns_per_tick,
            refresh_ticks: (REFRESH_NS / ns_per_tick) as u64,
            ..fresh
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod tsc {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU8, Ordering};
    use std::time::SystemTime;

    use super::Anchor;

    const UNKNOWN: u8 = 0;
    const INVARIANT: u8 = 1;
    const UNUSABLE: u8 = 2;

    /// Whether this CPU's TSC is invariant (checked once).
    static TSC: AtomicU8 = AtomicU8::new(UNKNOWN);

    thread_local! {
        static ANCHOR: Cell<Anchor> = const { Cell::new(Anchor::NONE) };
    }

    #[inline]
    #[allow(unsafe_code)]
    fn read() -> u64 {
        // SAFETY: `rdtsc` reads the time-stamp counter into registers; it has no memory
        // effects and is part of every x86_64 CPU.
        unsafe { std::arch::x86_64::_rdtsc() }
    }

    fn invariant() -> bool {
        match TSC.load(Ordering::Relaxed) {
            INVARIANT => true,
            UNUSABLE => false,
            _ => {
                let max_leaf = std::arch::x86_64::__cpuid(0x8000_0000).eax;
                let invariant = max_leaf >= 0x8000_0007
                    && std::arch::x86_64::__cpuid(0x8000_0007).edx & (1 << 8) != 0;
                let state = if invariant { INVARIANT } else { UNUSABLE };
                TSC.store(state, Ordering::Relaxed);
                invariant
            }
        }
    }

    /// The wall time from the TSC, or `None` if the TSC is not usable here (or the thread is
    /// being torn down).
    #[inline]
    pub(super) fn now() -> Option<SystemTime> {
        if !invariant() {
            return None;
        }
        let tsc = read();
        ANCHOR
            .try_with(|cell| {
                let anchor = cell.get();
                if let Some(time) = anchor.interpolate(tsc) {
                    return time;
                }
                let wall = SystemTime::now();
                cell.set(anchor.next(tsc, wall, read()));
                wall
            })
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::{Anchor, now};

    const GHZ: f64 = 1.0; // 1 ns per tick in these cases

    fn at(ns: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_nanos(ns)
    }

    /// Two clean anchors 1 ms apart at 1 tick per ns.
    fn calibrated() -> Anchor {
        let first = Anchor::NONE.next(1_000, at(0), 1_000);
        first.next(1_001_000, at(1_000_000), 1_001_000)
    }

    #[test]
    fn the_rate_is_measured_between_two_anchors_and_then_interpolated() {
        let first = Anchor::NONE.next(1_000, at(0), 1_000);
        assert_eq!(
            first.interpolate(1_001),
            None,
            "no rate yet: read the clock"
        );
        let anchor = calibrated();
        assert!((anchor.ns_per_tick - GHZ).abs() < 1e-9);
        assert_eq!(anchor.interpolate(1_001_500), Some(at(1_000_500)));
        assert_eq!(anchor.interpolate(1_001_000 + 999_999), Some(at(1_999_999)));
        assert_eq!(anchor.interpolate(1_001_000 + 1_000_000), None, "refresh");
    }

    #[test]
    fn a_tsc_behind_the_anchor_reads_the_clock() {
        assert_eq!(calibrated().interpolate(999), None);
    }

    #[test]
    fn a_short_span_keeps_the_old_base_until_a_rate_can_be_measured() {
        let first = Anchor::NONE.next(1_000, at(0), 1_000);
        let early = first.next(101_000, at(100_000), 101_000);
        assert_eq!(early, first, "100 µs is too short to measure");
        let later = early.next(801_000, at(800_000), 801_000);
        assert!((later.ns_per_tick - GHZ).abs() < 1e-9);
    }

    #[test]
    fn an_insane_rate_or_a_stepped_clock_discards_the_rate() {
        let anchor = calibrated();
        // The system clock jumped an hour ahead within a millisecond of ticks.
        let jumped = anchor.next(2_001_000, at(3_600_000_000_000), 2_001_000);
        assert_eq!(jumped.refresh_ticks, 0);
        assert_eq!(jumped.interpolate(2_001_001), None);
        // The system clock stepped back.
        let back = anchor.next(2_001_000, at(10), 2_001_000);
        assert_eq!(back.refresh_ticks, 0);
        // The TSC went backwards (the thread moved to a CPU behind this one).
        let behind = anchor.next(5, at(2_000_000), 5);
        assert_eq!(behind.refresh_ticks, 0);
    }

    #[test]
    fn an_interrupted_read_is_not_kept_as_an_anchor() {
        let anchor = calibrated();
        // 5 ms between the two TSC readings around the clock read.
        let interrupted = anchor.next(2_001_000, at(2_000_000), 7_001_000);
        assert_eq!(interrupted.tsc, anchor.tsc);
        assert_eq!(interrupted.refresh_ticks, 0);
    }

    #[test]
    fn now_stays_between_two_system_clock_reads() {
        // An accuracy check with a generous bound (interpolation is tens of nanoseconds off),
        // over enough calls to go through several re-anchorings.
        let slack = Duration::from_millis(1);
        let deadline = std::time::Instant::now() + Duration::from_millis(20);
        let mut calls = 0;
        while std::time::Instant::now() < deadline || calls < 1000 {
            let before = SystemTime::now();
            let time = now();
            let after = SystemTime::now();
            assert!(time + slack >= before, "{time:?} is before {before:?}");
            assert!(time <= after + slack, "{time:?} is after {after:?}");
            calls += 1;
        }
    }
}
