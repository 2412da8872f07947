//! A generated root kept in a directory, so that a CA restarted without `--cert`/`--key`
//! signs under the same root, which the mesh's trust bundle already holds.
//!
//! The directory holds `root-cert.pem` (mode 0644) and `root-key.pem` (PKCS#8, mode 0600),
//! made at the first start and read back at every later one. The key is the mesh's root
//! key: whoever reads it can mint any identity of the trust domain, and whoever can write
//! the directory can swap the root. So the directory must not be writable, nor the key
//! readable, by anyone but the CA's user; the CA refuses to start otherwise, as ssh
//! refuses a private key other users can read. In a cluster the root belongs in a Secret
//! (`--cert`/`--key`); a root directory is for the lab and for an embedded CA on one
//! machine.
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::authority::{CaConfig, CaError, CertificateAuthority, GeneratedRoot};

pub const ROOT_CERT: &str = "root-cert.pem";
pub const ROOT_KEY: &str = "root-key.pem";

/// How long a generated root is valid.
pub const ROOT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum RootDirError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error(
        "{} is writable by other users (mode {mode:o}): whoever can write there can replace \
         the mesh's root; chmod go-w it",
        path.display()
    )]
    DirectoryWritable { path: PathBuf, mode: u32 },
    #[error(
        "the root key {} is accessible to other users (mode {mode:o}): whoever reads it can \
         mint any identity of the mesh; chmod 600 it",
        path.display()
    )]
    KeyExposed { path: PathBuf, mode: u32 },
    #[error(
        "{} exists without {}: a half-made or half-deleted root; restore the missing file, or \
         remove the other to generate a new root (agents must then trust the new one)",
        present.display(),
        missing.display()
    )]
    Partial { present: PathBuf, missing: PathBuf },
    #[error("the root in {}: {source}", dir.display())]
    Ca { dir: PathBuf, source: CaError },
}

/// Whether the root was read back or made now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootOrigin {
    Loaded,
    Generated,
}

/// The CA whose root is kept in `dir`: read back when it is there, else generated and
/// written there first.
pub fn load_or_generate(
    dir: &Path,
    config: CaConfig,
) -> Result<(CertificateAuthority, RootOrigin), RootDirError> {
    prepare_dir(dir)?;
    let cert_path = dir.join(ROOT_CERT);
    let key_path = dir.join(ROOT_KEY);
    let ca_error = |source| RootDirError::Ca {
        dir: dir.to_owned(),
        source,
    };
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => {
            check_key_mode(&key_path)?;
            let ca = CertificateAuthority::from_pem_files(&cert_path, &key_path, config)
                .map_err(ca_error)?;
            Ok((ca, RootOrigin::Loaded))
        }
        (false, false) => {
            let root =
                GeneratedRoot::generate(&config.trust_domain, ROOT_VALIDITY).map_err(ca_error)?;
            // Both written under temporary names first, then renamed key first: a crash
            // leaves either nothing, or a key without a certificate (refused below, never
            // half a root silently replaced).
            let key_tmp = write_new(dir, ROOT_KEY, root.key_pem(), 0o600)?;
            let cert_tmp = write_new(dir, ROOT_CERT, &root.certificate_pem, 0o644)?;
            rename(&key_tmp, &key_path)?;
            rename(&cert_tmp, &cert_path)?;
            sync_dir(dir)?;
            let ca = CertificateAuthority::from_pem(&root.certificate_pem, root.key_pem(), config)
                .map_err(ca_error)?;
            Ok((ca, RootOrigin::Generated))
        }
        (true, false) => Err(RootDirError::Partial {
            present: cert_path,
            missing: key_path,
        }),
        (false, true) => Err(RootDirError::Partial {
            present: key_path,
            missing: cert_path,
        }),
    }
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RootDirError {
    let path = path.to_owned();
    move |source| RootDirError::Io { what, path, source }
}

fn prepare_dir(dir: &Path) -> Result<(), RootDirError> {
    if !dir.exists() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("creating the root directory", dir))?;
    }
    let meta = std::fs::metadata(dir).map_err(io("reading the root directory", dir))?;
    if !meta.is_dir() {
        return Err(RootDirError::NotADirectory(dir.to_owned()));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(RootDirError::DirectoryWritable {
            path: dir.to_owned(),
            mode,
        });
    }
    Ok(())
}

fn check_key_mode(key: &Path) -> Result<(), RootDirError> {
    let meta = std::fs::metadata(key).map_err(io("reading the root key", key))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(RootDirError::KeyExposed {
            path: key.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Writes `contents` to a fresh `.<name>.tmp` in `dir` created with `mode` (never wider,
/// not even for an instant), flushed to disk; returns its path.
fn write_new(dir: &Path, name: &str, contents: &str, mode: u32) -> Result<PathBuf, RootDirError> {
    let path = dir.join(format!(".{name}.tmp"));
    // A leftover of a crashed start: never written over in place (its mode could be wider).
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("removing a leftover", &path)(e)),
    }
    let mut file: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&path)
        .map_err(io("creating", &path))?;
    // The umask may have narrowed the mode; make it exactly what was asked.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io("setting the mode of", &path))?;
    file.write_all(contents.as_bytes())
        .map_err(io("writing", &path))?;
    file.sync_all().map_err(io("flushing", &path))?;
    Ok(path)
}

fn rename(from: &Path, to: &Path) -> Result<(), RootDirError> {
    std::fs::rename(from, to).map_err(io("renaming into place", to))
}

fn sync_dir(dir: &Path) -> Result<(), RootDirError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("flushing the root directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
    }

    #[test]
    fn a_restart_reads_back_the_root_it_generated() {
        let parent = tempfile::tempdir().expect("tempdir");
        let dir = parent.path().join("root");
        let (first, origin) = load_or_generate(&dir, CaConfig::default()).expect("first start");
        assert_eq!(origin, RootOrigin::Generated);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(ROOT_KEY)), 0o600);
        assert_eq!(mode(&dir.join(ROOT_CERT)), 0o644);
        let (second, origin) = load_or_generate(&dir, CaConfig::default()).expect("restart");
        assert_eq!(origin, RootOrigin::Loaded);
        assert_eq!(first.root_certificate_pem(), second.root_certificate_pem());
        assert!(
            std::fs::read_dir(&dir).expect("list").all(|e| !e
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .ends_with(".tmp")),
            "no temporary file is left"
        );
    }

    #[test]
    fn an_exposed_key_or_a_writable_directory_is_refused() {
        let parent = tempfile::tempdir().expect("tempdir");
        let dir = parent.path().join("root");
        load_or_generate(&dir, CaConfig::default()).expect("first start");
        let key = dir.join(ROOT_KEY);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let error = load_or_generate(&dir, CaConfig::default()).expect_err("key readable");
        assert!(
            matches!(error, RootDirError::KeyExposed { mode: 0o644, .. }),
            "{error}"
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let error = load_or_generate(&dir, CaConfig::default()).expect_err("dir writable");
        assert!(
            matches!(error, RootDirError::DirectoryWritable { .. }),
            "{error}"
        );
    }

    #[test]
    fn half_a_root_is_refused_not_replaced() {
        let parent = tempfile::tempdir().expect("tempdir");
        let dir = parent.path().join("root");
        load_or_generate(&dir, CaConfig::default()).expect("first start");
        let cert = std::fs::read_to_string(dir.join(ROOT_CERT)).expect("cert");
        std::fs::remove_file(dir.join(ROOT_CERT)).expect("rm");
        let error = load_or_generate(&dir, CaConfig::default()).expect_err("partial");
        assert!(matches!(error, RootDirError::Partial { .. }), "{error}");
        assert!(dir.join(ROOT_KEY).exists(), "the key is kept");
        // A corrupt certificate is an error too, not a reason to generate.
        std::fs::write(dir.join(ROOT_CERT), &cert[..cert.len() / 2]).expect("write");
        assert!(matches!(
            load_or_generate(&dir, CaConfig::default()),
            Err(RootDirError::Ca { .. })
        ));
    }
}
