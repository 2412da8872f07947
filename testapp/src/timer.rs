//! A sleep with the kernel's timer precision, for the open-loop pacer. tokio's timers tick in
//! whole milliseconds: at 10 000 requests per second requests would leave in bursts of ten,
//! each up to a millisecond late, and that lateness counts as latency. A timerfd in the
//! runtime's own epoll set wakes the runtime thread at the right microsecond, without timer
//! slack, and with one wakeup where a pacer thread would need two (each ~30-80 µs from idle on
//! the lab's VMs).

use std::time::Instant;

#[cfg(target_os = "linux")]
pub use linux::Timer;

#[cfg(not(target_os = "linux"))]
pub use fallback::Timer;

#[cfg(target_os = "linux")]
mod linux {
    use std::fs::File;
    use std::io::{self, Read};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;

    use super::Instant;

    /// Readiness without an expiration to read (a stale edge) is retried; more than this many
    /// in a row means the fd misbehaves.
    const MAX_SPURIOUS: u32 = 16;

    pub struct Timer {
        /// None when no timerfd could be made: tokio's timer then, coarse but working.
        fd: Option<AsyncFd<File>>,
    }

    impl Timer {
        pub fn new() -> Self {
            match timerfd() {
                Ok(fd) => Self { fd: Some(fd) },
                Err(e) => {
                    eprintln!(
                        "weft-testapp: warning: timerfd: {e}; pacing with 1 ms timer resolution"
                    );
                    Self { fd: None }
                }
            }
        }

        pub async fn sleep_until(&self, at: Instant) {
            if let Some(fd) = &self.fd {
                match expire_at(fd, at).await {
                    Ok(()) => return,
                    // Not expected; the coarse timer still ends the wait at the right time.
                    Err(e) => eprintln!("weft-testapp: warning: timerfd: {e}"),
                }
            }
            tokio::time::sleep_until(at.into()).await;
        }
    }

    fn timerfd() -> io::Result<AsyncFd<File>> {
        // SAFETY: a plain syscall taking no pointers.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor just created and owned by nothing else.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(raw) });
        // SAFETY: the AsyncFd owns the File, which keeps the descriptor open and unchanged
        // until the AsyncFd drops it.
        unsafe { AsyncFd::register_with_interest(file, Interest::READABLE) }.map_err(Into::into)
    }

    async fn expire_at(fd: &AsyncFd<File>, at: Instant) -> io::Result<()> {
        // CLOCK_MONOTONIC is Instant's clock, but Instant does not expose its value: a relative
        // timer armed now is off only by the few nanoseconds this function takes.
        let left = at.saturating_duration_since(Instant::now());
        // An all-zero it_value would disarm the timer instead of firing it.
        if left.is_zero() {
            return Ok(());
        }
        // SAFETY: itimerspec is plain integers, for which all-zero is valid (and on some
        // targets has padding a struct literal could not name).
        let mut spec: libc::itimerspec = unsafe { std::mem::zeroed() };
        spec.it_value.tv_sec = libc::time_t::try_from(left.as_secs()).unwrap_or(libc::time_t::MAX);
        // Below 10^9, so it fits every target's c_long.
        spec.it_value.tv_nsec = left.subsec_nanos() as libc::c_long;
        // SAFETY: `spec` outlives the call, and a null old_value is allowed.
        let rc = unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        for _ in 0..MAX_SPURIOUS {
            let mut guard = fd.readable().await?;
            let read = guard.try_io(|fd| {
                // The expiration count: its value doesn't matter, reading it re-arms readiness.
                let mut count = [0u8; 8];
                let mut file: &File = fd.get_ref();
                file.read(&mut count)
            });
            match read {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
        Err(io::Error::other("timerfd readable without expiring"))
    }
}

#[cfg(not(target_os = "linux"))]
mod fallback {
    use super::Instant;

    /// Elsewhere the coarse timer has to do; the lab runs on Linux.
    pub struct Timer;

    impl Timer {
        pub fn new() -> Self {
            Self
        }

        pub async fn sleep_until(&self, at: Instant) {
            tokio::time::sleep_until(at.into()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wakes_on_time() {
        let timer = Timer::new();
        for micros in [0, 50, 300, 2_500] {
            let at = Instant::now() + Duration::from_micros(micros);
            timer.sleep_until(at).await;
            let now = Instant::now();
            assert!(now >= at, "woke {:?} early", at - now);
            // Generous: a loaded CI machine may be slow to schedule us.
            assert!(
                now - at < Duration::from_millis(50),
                "{micros} µs: late by {:?}",
                now - at
            );
        }
        // A time in the past returns at once.
        let past = Instant::now().checked_sub(Duration::from_millis(1));
        timer.sleep_until(past.unwrap_or_else(Instant::now)).await;
    }
}
