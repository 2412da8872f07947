//! Integer socket options, the one setsockopt(2) shape the agent uses on raw sockets
//! (std and tokio cover only a few options).
use std::io;
use std::os::fd::AsRawFd;

/// Sets the integer option `name` at `level` on `socket`.
pub fn set_int_option(
    socket: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt(2) on an open socket with a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
