//! Where the kernel's special file systems are mounted, read from `/proc/self/mountinfo`.
//!
//! cgroup v2 is not always at /sys/fs/cgroup: hybrid hosts mount it at
//! /sys/fs/cgroup/unified, and containers may mount it anywhere.
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no cgroup v2 file system is mounted; weft attaches its programs to pods' cgroup v2 \
         directories. Fix: `mount -t cgroup2 none /sys/fs/cgroup/unified` (or boot with \
         systemd.unified_cgroup_hierarchy=1)"
    )]
    NoCgroup2,
    #[error("mounting bpffs at {path}: {source}. Fix: `mount -t bpf bpf {path}` as root")]
    MountBpffs {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One line of mountinfo, reduced to what weft needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub mount_point: PathBuf,
    pub fs_type: String,
}

/// Parses the text of a mountinfo file (see proc(5)). Lines that do not parse are skipped:
/// the kernel's format is stable, and one odd line must not hide the others.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let mount_point = fields.get(4)?;
            let separator = fields.iter().position(|f| *f == "-")?;
            let fs_type = fields.get(separator + 1)?;
            Some(Mount {
                mount_point: PathBuf::from(unescape_octal(mount_point)),
                fs_type: (*fs_type).to_string(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let escaped = bytes
                .get(i + 1..i + 4)
                .and_then(|digits| std::str::from_utf8(digits).ok())
                .and_then(|digits| u8::from_str_radix(digits, 8).ok());
            if let Some(value) = escaped {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read_mounts() -> Result<Vec<Mount>, MountError> {
    let path = PathBuf::from("/proc/self/mountinfo");
    let text =
        std::fs::read_to_string(&path).map_err(|source| MountError::Read { path, source })?;
    Ok(parse_mountinfo(&text))
}

/// The first cgroup v2 mount point of this mount namespace.
pub fn cgroup2_mount() -> Result<PathBuf, MountError> {
    read_mounts()?
        .into_iter()
        .find(|m| m.fs_type == "cgroup2")
        .map(|m| m.mount_point)
        .ok_or(MountError::NoCgroup2)
}

/// Default location of bpffs.
pub const BPFFS_DEFAULT: &str = "/sys/fs/bpf";

/// Makes sure a bpffs is mounted at `path`, mounting one if absent. Returns whether this
/// call mounted it.
pub fn ensure_bpffs(path: &Path) -> Result<bool, MountError> {
    let mounted = read_mounts()?
        .iter()
        .any(|m| m.fs_type == "bpf" && m.mount_point == path);
    if mounted {
        return Ok(false);
    }
    std::fs::create_dir_all(path).map_err(|source| MountError::MountBpffs {
        path: path.to_path_buf(),
        source,
    })?;
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
        MountError::MountBpffs {
            path: path.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        }
    })?;
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            c_path.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(MountError::MountBpffs {
            path: path.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 23 0:40 / /sys/fs/bpf rw,relatime shared:7 - bpf bpf rw
60 23 0:41 / /mnt/with\\040space rw - ext4 /dev/x rw
garbage line
";

    #[test]
    fn finds_cgroup2_on_a_hybrid_host() {
        let mounts = parse_mountinfo(HYBRID);
        let cg2: Vec<_> = mounts.iter().filter(|m| m.fs_type == "cgroup2").collect();
        assert_eq!(cg2.len(), 1);
        assert_eq!(cg2[0].mount_point, Path::new("/sys/fs/cgroup/unified"));
    }

    #[test]
    fn reads_optional_fields_and_escapes() {
        let mounts = parse_mountinfo(HYBRID);
        assert!(
            mounts
                .iter()
                .any(|m| m.fs_type == "bpf" && m.mount_point == Path::new("/sys/fs/bpf"))
        );
        assert!(
            mounts
                .iter()
                .any(|m| m.mount_point == Path::new("/mnt/with space"))
        );
        assert_eq!(mounts.len(), 5, "the garbage line is skipped");
    }
}
