use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("{file}, document {document}: {reason}")]
    Manifest {
        file: PathBuf,
        document: usize,
        reason: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error(transparent)]
    Mount(#[from] weft_host::mounts::MountError),
    #[error(transparent)]
    Netns(#[from] weft_host::netns::NetnsError),
    #[error("lab {0:?} is not up (no records under /run/weft-lab/{0})")]
    NotUp(String),
    #[error("no pod {0:?} in this lab (use namespace/name)")]
    NoSuchPod(String),
    /// The pod's sandbox could not be set up: CNI ADD failed every time it was tried. The
    /// pod's processes were not started.
    #[error(
        "pod {pod} was not started: CNI ADD failed {attempts} time(s); the last failure: {last}"
    )]
    PodNotStarted {
        pod: String,
        attempts: u32,
        last: String,
    },
}

impl LabError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
        let what = what.into();
        move |source| LabError::Io { what, source }
    }
}
