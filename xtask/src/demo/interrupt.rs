//! Ctrl-C during the demo: the terminal sends SIGINT to the whole foreground group, so the
//! pods' clients stop; the demo itself notes it and unwinds, and dropping the lab takes
//! it down (a plain exit would leave namespaces and cgroups behind).
use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub fn install() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
}

pub fn check() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        anyhow::bail!("interrupted (Ctrl-C): taking the lab down");
    }
    Ok(())
}
