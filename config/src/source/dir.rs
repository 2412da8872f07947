//! A directory of Kubernetes YAML as the configuration (the embedded default, the lab, the
//! demo). Rescanned every second; a changed file is read again, a deleted file's objects
//! are gone.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tracing::{debug, warn};

use super::feed::{Feed, Source, SourceError, error_chain};
use super::yaml::{self, Documents};
use crate::api::{Kind, ObjectRef};
use crate::registry::{Candidate, Change};

pub struct DirSource {
    root: PathBuf,
    poll: Duration,
    /// The namespace whose Secrets are read; `None`: none are.
    secrets: Option<String>,
    /// When not empty, the Secrets read instead, by (namespace, name).
    secret_names: Vec<(String, String)>,
}

impl DirSource {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            poll: Duration::from_secs(1),
            secrets: None,
            secret_names: Vec::new(),
        }
    }

    /// Reads the (TLS) Secrets of `namespace` too; by default Secrets are skipped, as the
    /// API source skips them for every process but an ingress gateway.
    pub fn secrets(mut self, namespace: Option<String>) -> Self {
        self.secrets = namespace;
        self
    }

    /// Reads these (TLS) Secrets, by (namespace, name), instead of a namespace's, as the API
    /// source reads them by name for the controller's ingress gateways.
    pub fn secret_names(mut self, names: Vec<(String, String)>) -> Self {
        self.secret_names = names;
        self
    }

    /// How often to look for changes (default one second).
    pub fn poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }
}

impl Source for DirSource {
    fn describe(&self) -> String {
        format!("directory {}", self.root.display())
    }

    async fn run(self, feed: Feed) -> Result<(), SourceError> {
        let mut scanner = Scanner::new(self.root);
        let mut ready = false;
        loop {
            let (returned, rescanned) = tokio::task::spawn_blocking(move || {
                let changed = scanner.rescan();
                (scanner, changed)
            })
            .await
            .map_err(|_| SourceError::Closed)?;
            scanner = returned;
            if let Some(mut candidates) = rescanned {
                candidates.retain(|c| {
                    let object = c.object_ref();
                    object.kind != Kind::Secret
                        || if self.secret_names.is_empty() {
                            self.secrets.as_deref() == Some(object.namespace.as_str())
                        } else {
                            self.secret_names
                                .iter()
                                .any(|(ns, name)| *ns == object.namespace && *name == object.name)
                        }
                });
                feed.send(vec![Change::Replace {
                    kinds: Kind::ALL.to_vec(),
                    candidates,
                }])
                .await?;
            }
            if !ready {
                feed.ready().await?;
                ready = true;
            }
            tokio::time::sleep(self.poll).await;
        }
    }
}

/// What identifies a file's contents without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprint {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Fingerprint {
        modified: m.modified().ok(),
        len: m.len(),
        inode: m.ino(),
    })
}

struct FileState {
    fingerprint: Fingerprint,
    documents: Documents,
}

/// The directory as last read, file by file.
pub(crate) struct Scanner {
    root: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
    scanned_once: bool,
}

impl Scanner {
    pub(crate) fn new(root: PathBuf) -> Self {
        Self {
            root,
            files: BTreeMap::new(),
            scanned_once: false,
        }
    }

    /// Every candidate of the directory when something changed since the last call.
    pub(crate) fn rescan(&mut self) -> Option<Vec<Candidate>> {
        let paths = match yaml::manifest_files(&self.root) {
            Ok(paths) => paths,
            Err(e) => {
                // A directory that vanished (being replaced, unmounted) is not an order to
                // delete every object: keep serving what was last read.
                warn!(error = %error_chain(&e), "cannot list the configuration directory; keeping the last configuration");
                let first = !self.scanned_once;
                self.scanned_once = true;
                return first.then(Vec::new);
            }
        };
        let mut changed = !self.scanned_once;
        self.scanned_once = true;
        let before = self.files.len();
        self.files.retain(|path, _| paths.contains(path));
        changed |= self.files.len() != before;
        for path in paths {
            let Some(now) = fingerprint(&path) else {
                continue;
            };
            if self.files.get(&path).is_some_and(|f| f.fingerprint == now) {
                continue;
            }
            changed = true;
            match yaml::read_file(&path) {
                Ok(documents) => {
                    for error in &documents.errors {
                        warn!("skipping a document: {error}");
                    }
                    for ignored in &documents.ignored {
                        warn!("ignored: {ignored}");
                    }
                    debug!(file = %path.display(), objects = documents.candidates.len(), "read");
                    self.files.insert(
                        path,
                        FileState {
                            fingerprint: now,
                            documents,
                        },
                    );
                }
                Err(e) => {
                    // Keep the file's last good objects; try again when it changes.
                    warn!(error = %error_chain(&e), "cannot read a configuration file; its previous objects stay in force");
                    match self.files.get_mut(&path) {
                        Some(state) => state.fingerprint = now,
                        None => {
                            self.files.insert(
                                path,
                                FileState {
                                    fingerprint: now,
                                    documents: Documents::default(),
                                },
                            );
                        }
                    }
                }
            }
        }
        changed.then(|| self.candidates())
    }

    fn candidates(&self) -> Vec<Candidate> {
        let mut seen: HashMap<ObjectRef, &Path> = HashMap::new();
        let mut out = Vec::new();
        for (path, state) in &self.files {
            for candidate in &state.documents.candidates {
                let r = candidate.object_ref();
                if let Some(first) = seen.insert(r.clone(), path) {
                    warn!(object = %r, first = %first.display(), again = %path.display(), "object defined twice; the later file wins");
                }
                out.push(candidate.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_directory_reports_nothing_and_deletions_are_seen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("ns.yaml");
        std::fs::write(
            &file,
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
        )
        .expect("write");
        let mut scanner = Scanner::new(dir.path().to_path_buf());
        assert_eq!(scanner.rescan().map(|c| c.len()), Some(1));
        assert!(scanner.rescan().is_none());
        std::fs::remove_file(&file).expect("remove");
        assert_eq!(scanner.rescan().map(|c| c.len()), Some(0));
    }

    #[test]
    fn a_file_with_a_syntax_error_keeps_its_previous_objects() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("ns.yaml");
        std::fs::write(
            &file,
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
        )
        .expect("write");
        let mut scanner = Scanner::new(dir.path().to_path_buf());
        assert_eq!(scanner.rescan().map(|c| c.len()), Some(1));
        std::fs::write(&file, "apiVersion: v1\nkind: [Namespace\n  metadata: {\n").expect("write");
        assert_eq!(scanner.rescan().map(|c| c.len()), Some(1));
    }
}
