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

/// Reads the integer option `name` at `level` of `socket`.
pub fn int_option(socket: &impl AsRawFd, level: libc::c_int, name: libc::c_int) -> io::Result<i32> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt(2) on an open socket, writing at most `len` bytes into a live c_int.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw mut value).cast(),
            &raw mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// TCP keepalive of a socket: SO_KEEPALIVE on, and each of TCP_KEEPCNT, TCP_KEEPIDLE
/// (seconds) and TCP_KEEPINTVL (seconds) that is given; the others keep the kernel's.
pub fn set_tcp_keepalive(
    socket: &impl AsRawFd,
    probes: Option<u32>,
    idle_secs: Option<u32>,
    interval_secs: Option<u32>,
) -> io::Result<()> {
    set_int_option(socket, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
    for (name, value) in [
        (libc::TCP_KEEPCNT, probes),
        (libc::TCP_KEEPIDLE, idle_secs),
        (libc::TCP_KEEPINTVL, interval_secs),
    ] {
        if let Some(value) = value {
            let value = libc::c_int::try_from(value).unwrap_or(libc::c_int::MAX);
            set_int_option(socket, libc::IPPROTO_TCP, name, value)?;
        }
    }
    Ok(())
}

/// The TCP keepalive settings of a socket: (SO_KEEPALIVE, TCP_KEEPCNT, TCP_KEEPIDLE,
/// TCP_KEEPINTVL).
pub fn tcp_keepalive(socket: &impl AsRawFd) -> io::Result<(bool, i32, i32, i32)> {
    Ok((
        int_option(socket, libc::SOL_SOCKET, libc::SO_KEEPALIVE)? != 0,
        int_option(socket, libc::IPPROTO_TCP, libc::TCP_KEEPCNT)?,
        int_option(socket, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE)?,
        int_option(socket, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL)?,
    ))
}
