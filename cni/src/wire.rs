//! Frames on a unix stream socket: a `u32` big-endian length, then that many bytes (at most
//! [`MAX_FRAME`]). A frame may carry one file descriptor (`SCM_RIGHTS`), sent with its first
//! byte; the receiver takes it close-on-exec. Blocking, with the socket's own timeouts
//! (`set_read_timeout`, `set_write_timeout`): both the plugin and the agent's handler run
//! on threads of their own.
//!
//! The socket is root's: its directory is mode 0700, and each side checks the other's
//! credentials (`SO_PEERCRED`, [`peer`] and [`trusted`]).
use std::ffi::c_int;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

/// The largest frame either side accepts.
pub const MAX_FRAME: usize = 64 * 1024;

/// Sends `payload` as one frame, with `fd` attached when given.
pub fn send(stream: &UnixStream, payload: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    if payload.len() > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a frame of {} bytes is over the limit of {MAX_FRAME}",
                payload.len()
            ),
        ));
    }
    let mut frame = Vec::with_capacity(4 + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    let sent = loop {
        match send_with_fd(stream.as_fd(), &frame, fd) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break timed(other)?,
        }
    };
    // The descriptor went with the first byte; the rest, if any, follows plainly.
    let mut writer = stream;
    timed(writer.write_all(&frame[sent..]))
}

/// Receives one frame and the descriptor that came with it, if any. More than one
/// descriptor is an error (all are closed).
pub fn receive(stream: &UnixStream) -> io::Result<(Vec<u8>, Option<OwnedFd>)> {
    let mut buf: Vec<u8> = Vec::with_capacity(256);
    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut wanted = 4usize;
    let mut length_known = false;
    while buf.len() < wanted {
        let mut chunk = vec![0u8; (wanted - buf.len()).min(MAX_FRAME)];
        let n = loop {
            match recv_with_fd(stream.as_fd(), &mut chunk, &mut fds) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break timed(other)?,
            }
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer closed the connection in the middle of a frame",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if !length_known && buf.len() >= 4 {
            let length = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if length > MAX_FRAME {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the peer announced a frame of {length} bytes (limit {MAX_FRAME})"),
                ));
            }
            wanted = 4 + length;
            length_known = true;
        }
    }
    if fds.len() > 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} file descriptors came with one frame", fds.len()),
        ));
    }
    Ok((buf.split_off(4), fds.pop()))
}

/// A socket timeout shows as `WouldBlock`; say what it is.
fn timed<T>(result: io::Result<T>) -> io::Result<T> {
    result.map_err(|e| {
        if e.kind() == io::ErrorKind::WouldBlock {
            io::Error::new(io::ErrorKind::TimedOut, "no answer in time")
        } else {
            e
        }
    })
}

/// The process at the other end of a unix socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
}

/// `SO_PEERCRED`: who connected (or listened), as of `connect()`.
pub fn peer(stream: &UnixStream) -> io::Result<Peer> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Peer {
        pid: cred.pid,
        uid: cred.uid,
    })
}

/// Root, or the user this process runs as.
pub fn trusted(peer: &Peer) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let ours = unsafe { libc::geteuid() };
    peer.uid == 0 || peer.uid == ours
}

/// Room for one `SCM_RIGHTS` header and one descriptor, 8-byte aligned.
fn cmsg_buffer() -> Vec<u64> {
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(size_of::<c_int>() as u32) } as usize;
    vec![0u64; space.div_ceil(size_of::<u64>())]
}

/// One `sendmsg` of `data` with `fd` as `SCM_RIGHTS`; returns the bytes sent.
fn send_with_fd(
    socket: BorrowedFd<'_>,
    data: &[u8],
    fd: Option<BorrowedFd<'_>>,
) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    let mut control = Vec::new();
    if let Some(fd) = fd {
        control = cmsg_buffer();
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE only computes a size; `control` holds at least that many bytes.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<c_int>() as u32) } as _;
        // SAFETY: msg_control points at a zeroed, aligned buffer with room for one header
        // and one descriptor, so the first header and its data are in bounds.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            if cmsg.is_null() {
                return Err(io::Error::other("no room for the control message"));
            }
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<c_int>() as u32) as _;
            libc::CMSG_DATA(cmsg)
                .cast::<c_int>()
                .write_unaligned(fd.as_raw_fd());
        }
    }
    // SAFETY: msg points at live buffers (iov, control) for the duration of the call.
    let n = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    drop(control);
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// One `recvmsg` into `buf`; descriptors that arrive are appended to `fds`.
fn recv_with_fd(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for a few, so that a peer sending more is detected rather than truncated away.
    let mut control = vec![0u64; 16];
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = (control.len() * size_of::<u64>()) as _;
    // SAFETY: msg points at live, writable buffers of the sizes it states.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // Own every descriptor first, so that none leaks on an error below.
    // SAFETY: the kernel filled msg_control with msg_controllen bytes of well-formed control
    // messages; CMSG_FIRSTHDR/CMSG_NXTHDR stay within them, and an SCM_RIGHTS message's data
    // is an array of descriptors that are now ours.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let header = libc::CMSG_LEN(0) as usize;
                let len = ((*cmsg).cmsg_len as usize).saturating_sub(header);
                let data = libc::CMSG_DATA(cmsg).cast::<c_int>();
                for i in 0..len / size_of::<c_int>() {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "control data was truncated: file descriptors were lost",
        ));
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_frame_and_its_descriptor_arrive_together() {
        let (a, b) = UnixStream::pair().expect("pair");
        let file = tempfile::tempfile().expect("a file");
        let inode = file.metadata().expect("stat").ino();
        send(&a, b"hello", Some(file.as_fd())).expect("sent");
        let (payload, fd) = receive(&b).expect("received");
        assert_eq!(payload, b"hello");
        let received = std::fs::File::from(fd.expect("a descriptor"));
        assert_eq!(received.metadata().expect("stat").ino(), inode);
        send(&b, b"", None).expect("empty frame");
        let (payload, fd) = receive(&a).expect("received");
        assert!(payload.is_empty());
        assert!(fd.is_none());
        // The peer is this test process: root or the same user.
        let me = peer(&a).expect("credentials");
        assert_eq!(me.pid, std::process::id() as i32);
        assert!(trusted(&me));
    }

    #[test]
    fn a_large_frame_arrives_whole_and_an_oversized_one_is_refused() {
        let (a, b) = UnixStream::pair().expect("pair");
        let payload = vec![7u8; MAX_FRAME];
        let writer = std::thread::spawn(move || send(&a, &payload, None));
        let (received, _) = receive(&b).expect("received");
        assert_eq!(received.len(), MAX_FRAME);
        writer.join().expect("thread").expect("sent");
        let (c, d) = UnixStream::pair().expect("pair");
        assert!(send(&c, &vec![0; MAX_FRAME + 1], None).is_err());
        (&c).write_all(&(u32::MAX).to_be_bytes()).expect("raw");
        let error = receive(&d).expect_err("announced too much");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn silence_times_out_and_a_closed_peer_is_an_error() {
        let (a, b) = UnixStream::pair().expect("pair");
        b.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        assert_eq!(
            receive(&b).expect_err("nothing sent").kind(),
            io::ErrorKind::TimedOut
        );
        (&a).write_all(&[0, 0, 0, 9, b'x']).expect("half a frame");
        drop(a);
        assert_eq!(
            receive(&b).expect_err("cut off").kind(),
            io::ErrorKind::UnexpectedEof
        );
    }
}
