//! The trust bundle's file, watched: read again when it changes, so a root added or removed
//! reaches running agents and waypoints without a restart.
//!
//! In a cluster the file is a ConfigMap key mounted as a volume (not with `subPath`, which
//! never receives updates). The kubelet updates such a volume by writing a new directory and
//! swapping the `..data` symlink to it, so the file's path resolves to a new file at once,
//! never to a half-written one. The watcher polls the path (every second by default) and
//! compares what it reads with what it read last: that catches a symlink swap, a rename
//! over the file, and an in-place edit alike, without inotify's corner cases around
//! symlinked directories; the file is a few kilobytes.
//!
//! A new text that is not a good bundle (unreadable, a key in it, no certificate, a
//! certificate that is not a CA) is refused with a warning naming the file and the reason;
//! the bundle in force keeps serving until a good one comes. A missing file is refused the
//! same way.
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::task::AbortHandle;

use super::trust::{LiveTrust, TrustBundle, TrustBundleError};

/// How often the file is looked at.
pub const DEFAULT_POLL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum TrustFileError {
    #[error("reading the trust bundle {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the trust bundle {} is not UTF-8 PEM text", path.display())]
    NotText { path: PathBuf },
    #[error("the trust bundle {} is refused: {source}", path.display())]
    Bundle {
        path: PathBuf,
        source: TrustBundleError,
    },
}

/// Reads and parses the bundle at `path`.
pub fn read_bundle(path: &Path) -> Result<TrustBundle, TrustFileError> {
    let bytes = std::fs::read(path).map_err(|source| TrustFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &bytes)
}

fn parse(path: &Path, bytes: &[u8]) -> Result<TrustBundle, TrustFileError> {
    let text = std::str::from_utf8(bytes).map_err(|_| TrustFileError::NotText {
        path: path.to_owned(),
    })?;
    TrustBundle::from_pem(text).map_err(|source| TrustFileError::Bundle {
        path: path.to_owned(),
        source,
    })
}

/// What one look at the file found.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    /// The same text as last time (or the same roots in another text).
    Unchanged,
    /// A new bundle is in force; the roots added and removed, by SHA-256 fingerprint.
    Replaced {
        added: Vec<String>,
        removed: Vec<String>,
    },
    /// The new text is refused (for this reason); the bundle in force stays.
    Refused(String),
}

/// Compares the file with what it held last time and acts on a change. Synchronous and
/// separate from the polling task, so tests can drive it step by step.
#[derive(Debug)]
pub struct TrustFile {
    path: PathBuf,
    /// What the last look read (the file's bytes, or the error text), so an unchanged file
    /// (good or bad) is neither parsed nor reported again.
    last: Option<Result<Vec<u8>, String>>,
}

impl TrustFile {
    /// `initial` is the text the bundle in force was read from, when known.
    pub fn new(path: impl Into<PathBuf>, initial: Option<Vec<u8>>) -> Self {
        Self {
            path: path.into(),
            last: initial.map(Ok),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file and, when it changed, replaces `live`'s bundle or refuses the text.
    pub fn poll(&mut self, live: &LiveTrust) -> Reload {
        let read = std::fs::read(&self.path).map_err(|source| {
            TrustFileError::Read {
                path: self.path.clone(),
                source,
            }
            .to_string()
        });
        if self.last.as_ref() == Some(&read) {
            return Reload::Unchanged;
        }
        self.last = Some(read.clone());
        let parsed = match read {
            Ok(bytes) => parse(&self.path, &bytes).map_err(|e| e.to_string()),
            Err(error) => Err(error),
        };
        match parsed {
            Err(reason) => {
                live.refuse(reason.clone());
                Reload::Refused(reason)
            }
            Ok(bundle) => {
                let before = live.current();
                let fingerprints = |b: &TrustBundle| -> Vec<String> {
                    b.roots()
                        .iter()
                        .map(|r| r.fingerprint_sha256.clone())
                        .collect()
                };
                let (old, new) = (fingerprints(&before), fingerprints(&bundle));
                if !live.replace(bundle) {
                    return Reload::Unchanged;
                }
                Reload::Replaced {
                    added: new.iter().filter(|f| !old.contains(f)).cloned().collect(),
                    removed: old.into_iter().filter(|f| !new.contains(f)).collect(),
                }
            }
        }
    }
}

/// Polls the trust bundle's file in the background; stops when dropped.
#[derive(Debug)]
pub struct TrustFileWatcher {
    task: AbortHandle,
}

impl Drop for TrustFileWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TrustFileWatcher {
    /// Reads the bundle at `path` (an error if it is not a good one: a process should not
    /// start without roots) and keeps it current every `poll`. Must be called inside a
    /// tokio runtime.
    pub fn start(path: &Path, poll: Duration) -> Result<(LiveTrust, Self), TrustFileError> {
        let bytes = std::fs::read(path).map_err(|source| TrustFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        let bundle = parse(path, &bytes)?;
        tracing::info!(
            path = %path.display(),
            roots = ?fingerprints(&bundle),
            "trust bundle loaded; watching it for changes"
        );
        let live = LiveTrust::new(bundle);
        let watcher = Self::watch(TrustFile::new(path, Some(bytes)), live.clone(), poll);
        Ok((live, watcher))
    }

    /// Keeps `live` current from `file` every `poll`.
    pub fn watch(mut file: TrustFile, live: LiveTrust, poll: Duration) -> Self {
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(poll);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                // A blocking read of a few kilobytes, once a second: cheaper than a hop to
                // the blocking pool.
                match file.poll(&live) {
                    Reload::Unchanged => {}
                    Reload::Replaced { added, removed } => tracing::info!(
                        path = %file.path().display(),
                        ?added,
                        ?removed,
                        roots = ?fingerprints(&live.current()),
                        "trust bundle changed: new handshakes use the new roots"
                    ),
                    Reload::Refused(reason) => tracing::warn!(
                        path = %file.path().display(),
                        %reason,
                        kept = ?fingerprints(&live.current()),
                        "trust bundle refused; the previous roots stay in force"
                    ),
                }
            }
        })
        .abort_handle();
        Self { task }
    }
}

fn fingerprints(bundle: &TrustBundle) -> Vec<String> {
    bundle
        .roots()
        .iter()
        .map(|r| r.fingerprint_sha256.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::ca::GeneratedRoot;

    fn root_pem() -> String {
        GeneratedRoot::generate("cluster.local", Duration::from_secs(3600))
            .expect("root")
            .certificate_pem
    }

    /// A ConfigMap volume as the kubelet writes it: `<dir>/root-cert.pem` →
    /// `..data/root-cert.pem`, `..data` → `..<version>`, swapped by rename.
    struct ConfigMapVolume {
        dir: tempfile::TempDir,
        version: u32,
    }

    impl ConfigMapVolume {
        fn new(text: &str) -> Self {
            let mut volume = Self {
                dir: tempfile::tempdir().expect("tempdir"),
                version: 0,
            };
            volume.update(text);
            symlink("..data/root-cert.pem", volume.file()).expect("key symlink");
            volume
        }

        fn file(&self) -> PathBuf {
            self.dir.path().join("root-cert.pem")
        }

        fn update(&mut self, text: &str) {
            self.version += 1;
            let name = format!("..2026_01_01_00_00_0{}", self.version);
            let data = self.dir.path().join(&name);
            std::fs::create_dir(&data).expect("data dir");
            std::fs::write(data.join("root-cert.pem"), text).expect("write");
            let tmp = self.dir.path().join("..data_tmp");
            symlink(&name, &tmp).expect("tmp symlink");
            std::fs::rename(&tmp, self.dir.path().join("..data")).expect("swap");
        }
    }

    #[test]
    fn a_symlink_swap_replaces_the_bundle_and_reports_the_difference() {
        let (old, new) = (root_pem(), root_pem());
        let mut volume = ConfigMapVolume::new(&old);
        let initial = read_bundle(&volume.file()).expect("initial");
        let old_fp = initial.roots()[0].fingerprint_sha256.clone();
        let live = LiveTrust::new(initial);
        let mut file = TrustFile::new(volume.file(), Some(old.clone().into_bytes()));
        assert_eq!(file.poll(&live), Reload::Unchanged);

        volume.update(&format!("{old}{new}"));
        let Reload::Replaced { added, removed } = file.poll(&live) else {
            panic!("the swap is seen");
        };
        assert_eq!(added.len(), 1);
        assert!(removed.is_empty());
        assert_eq!(live.current().roots().len(), 2);
        assert_eq!(file.poll(&live), Reload::Unchanged, "seen once");

        volume.update(&new);
        assert_eq!(
            file.poll(&live),
            Reload::Replaced {
                added: vec![],
                removed: vec![old_fp]
            }
        );
        assert_eq!(live.version(), 2);
    }

    #[test]
    fn a_bad_file_is_refused_once_and_the_last_good_bundle_stays() {
        let (good, next) = (root_pem(), root_pem());
        let mut volume = ConfigMapVolume::new(&good);
        let live = LiveTrust::new(read_bundle(&volume.file()).expect("initial"));
        let kept = live.current();
        let mut file = TrustFile::new(volume.file(), None);
        assert_eq!(
            file.poll(&live),
            Reload::Unchanged,
            "same roots as in force"
        );

        for (bad, expected) in [
            ("not PEM at all", "holds no certificate"),
            (&good[..good.len() / 2], "reading PEM certificates"),
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "never a key",
            ),
        ] {
            volume.update(bad);
            match file.poll(&live) {
                Reload::Refused(reason) => {
                    assert!(reason.contains(expected), "{reason}");
                    assert!(reason.contains("root-cert.pem"), "names the file: {reason}");
                }
                other => panic!("{bad:?} was not refused: {other:?}"),
            }
            assert_eq!(file.poll(&live), Reload::Unchanged, "reported once");
            assert!(live.current().same_roots(&kept), "the good bundle stays");
            assert!(live.refusal().is_some());
        }

        // The file disappears (the ConfigMap deleted): refused too.
        std::fs::remove_file(volume.file()).expect("remove");
        assert!(matches!(file.poll(&live), Reload::Refused(r) if r.contains("reading")));
        assert!(live.current().same_roots(&kept));

        // A good one again is taken, and clears the refusal.
        symlink("..data/root-cert.pem", volume.file()).expect("key symlink");
        volume.update(&next);
        assert!(matches!(file.poll(&live), Reload::Replaced { .. }));
        assert_eq!(live.refusal(), None);
    }

    #[test]
    fn a_rename_over_the_file_is_seen_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bundle.pem");
        let (a, b) = (root_pem(), root_pem());
        std::fs::write(&path, &a).expect("write");
        let live = LiveTrust::new(read_bundle(&path).expect("a"));
        let mut file = TrustFile::new(&path, None);
        assert_eq!(file.poll(&live), Reload::Unchanged);
        let tmp = dir.path().join("bundle.pem.tmp");
        std::fs::write(&tmp, format!("{a}{b}")).expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
        assert!(matches!(file.poll(&live), Reload::Replaced { .. }));
        assert_eq!(live.current().roots().len(), 2);
    }

    #[tokio::test]
    async fn the_watcher_applies_a_change_within_a_poll() {
        let (a, b) = (root_pem(), root_pem());
        let mut volume = ConfigMapVolume::new(&a);
        let (live, _watcher) =
            TrustFileWatcher::start(&volume.file(), Duration::from_millis(50)).expect("start");
        let mut changes = live.subscribe();
        volume.update(&format!("{a}{b}"));
        tokio::time::timeout(Duration::from_secs(5), changes.changed())
            .await
            .expect("seen within 5 s")
            .expect("open");
        assert_eq!(live.current().roots().len(), 2);
        assert!(TrustFileWatcher::start(&volume.dir.path().join("missing"), DEFAULT_POLL).is_err());
    }
}
