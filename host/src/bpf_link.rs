//! Pointing a pinned bpf_link at another program (BPF_LINK_UPDATE, Linux 5.7+). An agent
//! adopting a pod's links from an earlier run swaps in its own programs this way: the swap
//! is atomic, so no connection goes uncaptured, as it would between detach and attach.
//! aya keeps a link's descriptor private, hence the raw calls here; [`bpf`] and
//! [`bpf_new_fd`] are the one way into bpf(2) for them (and for tests that need objects aya
//! cannot make).
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_UPDATE: libc::c_long = 29;

/// `bpf_attr` for BPF_OBJ_GET.
#[repr(C)]
struct ObjGet {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// `bpf_attr` for BPF_LINK_UPDATE.
#[repr(C)]
struct LinkUpdate {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

/// bpf(2): runs `cmd` with `attr`, returning the kernel's non-negative result.
///
/// # Safety
/// `attr` must be the `bpf_attr` layout that `cmd` reads, and every pointer in it must be
/// valid, for the call's duration, for whatever the kernel reads or writes through it.
pub unsafe fn bpf<A>(cmd: libc::c_long, attr: &A) -> io::Result<libc::c_long> {
    // SAFETY: the caller vouches for `attr`; the size passed is its own.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const A,
            std::mem::size_of::<A>(),
        )
    };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(result)
}

/// [`bpf`] for the commands that create a descriptor (BPF_OBJ_GET, BPF_PROG_LOAD,
/// BPF_MAP_CREATE, …), returned owned.
///
/// # Safety
/// As for [`bpf`], and `cmd` must be one that returns a new descriptor.
pub unsafe fn bpf_new_fd<A>(cmd: libc::c_long, attr: &A) -> io::Result<OwnedFd> {
    // SAFETY: forwarded from the caller.
    let fd = unsafe { bpf(cmd, attr) }?;
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("bpf(2) returned no descriptor"))?;
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the bpf object (here: a link) pinned at `path`.
pub fn open_pinned(path: &Path) -> io::Result<OwnedFd> {
    let name = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} holds a NUL byte", path.display()),
        )
    })?;
    let attr = ObjGet {
        pathname: name.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: a BPF_OBJ_GET attribute whose path outlives the call.
    unsafe { bpf_new_fd(BPF_OBJ_GET, &attr) }
}

/// Makes `link` run `program` from now on, atomically.
pub fn update_link_program(link: BorrowedFd<'_>, program: BorrowedFd<'_>) -> io::Result<()> {
    let as_u32 = |fd: BorrowedFd<'_>| {
        u32::try_from(fd.as_raw_fd()).map_err(|_| io::Error::other("negative descriptor"))
    };
    let attr = LinkUpdate {
        link_fd: as_u32(link)?,
        new_prog_fd: as_u32(program)?,
        flags: 0,
        old_prog_fd: 0,
    };
    // SAFETY: a BPF_LINK_UPDATE attribute naming two open descriptors.
    unsafe { bpf(BPF_LINK_UPDATE, &attr) }.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_pin_and_a_path_with_nul_are_errors_not_panics() {
        let missing =
            open_pinned(Path::new("/sys/fs/bpf/weft-no-such-pin")).expect_err("no such pin");
        assert!(
            matches!(
                missing.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
            ) || missing.raw_os_error() == Some(libc::EINVAL),
            "{missing}"
        );
        let nul = open_pinned(Path::new("/sys/fs/bpf/a\0b")).expect_err("a NUL byte");
        assert_eq!(nul.kind(), io::ErrorKind::InvalidInput);
    }
}
