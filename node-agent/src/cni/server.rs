//! The agent's end of weft-cni: a unix socket (root only: the directory is 0700, the file
//! 0600, and every caller's credentials are checked) where the plugin announces a pod's
//! sandbox before the pod's containers start. An ADD is answered once the pod is enrolled —
//! its programs attached, its maps filled, its listeners up — or once it is known not to
//! belong to the mesh; anything else is a refusal the kubelet retries.
//!
//! Each connection is served on a thread of tokio's blocking pool: enrollment is
//! synchronous, under the enrollment's lock, like the periodic reconcile it shares the
//! enrolled set with. The sandbox is recorded (`crate::pods::sandboxes`) under the same lock,
//! so a reconcile never sees the pod enrolled without its sandbox.
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::net::UnixListener;
use tracing::{debug, info, warn};
use weft_cni::protocol::{self, PodSandbox, ProtocolError, Request, Response};
use weft_cni::wire;
use weft_config::registry::Registry;

use super::verdict::{Verdict, verdict};
use crate::capture::addresses::PodIps;
use crate::capture::desired::pod_to_enroll;
use crate::capture::enrollment::Enrollment;
use crate::pods::locator::{Locators, PodPlace};
use crate::pods::sandboxes::{Sandbox, Sandboxes};

/// How long an ADD waits for the registry to tell whether the pod is in the mesh (the
/// plugin waits 30 s for the answer).
pub const DECIDE_WITHIN: Duration = Duration::from_secs(10);
/// How often the registry is looked at meanwhile.
const DECIDE_POLL: Duration = Duration::from_millis(20);
/// How long the plugin has to send its request, and the agent to send its answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// What the handler needs of the agent.
pub struct CniContext {
    pub node: String,
    pub registry: Registry,
    pub locators: Arc<Locators>,
    pub enrollment: Arc<Mutex<Enrollment>>,
    pub sandboxes: Arc<Sandboxes>,
}

pub struct CniServer {
    listener: UnixListener,
    path: PathBuf,
}

impl CniServer {
    /// Listens at `path`: the directory is created mode 0700 if missing; a socket already
    /// there (the previous agent's, during an upgrade) is replaced atomically, by binding
    /// beside it and renaming over it, so the plugin always finds one. Anything else at
    /// `path` is left alone and refused. Must be called inside a tokio runtime.
    pub fn bind(path: &Path) -> anyhow::Result<Self> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                bail!(
                    "{} exists and is not a socket; refusing to replace it",
                    path.display()
                )
            }
            _ => {}
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "cni.sock".into());
        let temporary = dir.join(format!(".{name}.{}", std::process::id()));
        let _ = std::fs::remove_file(&temporary);
        let listener = UnixListener::bind(&temporary)
            .with_context(|| format!("binding {}", temporary.display()))?;
        std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("setting the mode of {}", temporary.display()))?;
        std::fs::rename(&temporary, path)
            .with_context(|| format!("moving {} to {}", temporary.display(), path.display()))?;
        Ok(Self {
            listener,
            path: path.to_owned(),
        })
    }
}

/// Serves weft-cni until the task is aborted.
pub async fn serve(server: CniServer, context: Arc<CniContext>) -> anyhow::Result<()> {
    info!(socket = %server.path.display(), "answering weft-cni");
    loop {
        let (stream, _) = server
            .listener
            .accept()
            .await
            .with_context(|| format!("accepting on {}", server.path.display()))?;
        let peer = match stream.peer_cred() {
            Ok(peer) => peer,
            Err(error) => {
                warn!(%error, "cannot read a weft-cni caller's credentials");
                continue;
            }
        };
        let trusted = wire::trusted(&wire::Peer {
            pid: peer.pid().unwrap_or_default(),
            uid: peer.uid(),
        });
        if !trusted {
            warn!(uid = peer.uid(), pid = ?peer.pid(), "refused a weft-cni connection from neither root nor this agent's user");
            continue;
        }
        let stream = match stream
            .into_std()
            .and_then(|s| s.set_nonblocking(false).map(|()| s))
        {
            Ok(stream) => stream,
            Err(error) => {
                warn!(%error, "cannot serve a weft-cni connection");
                continue;
            }
        };
        let context = context.clone();
        tokio::task::spawn_blocking(move || answer(&context, &stream));
    }
}

/// One request, one response.
fn answer(context: &CniContext, stream: &UnixStream) {
    if let Err(error) = stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
    {
        warn!(%error, "setting a weft-cni connection's timeouts");
        return;
    }
    let (bytes, netns) = match wire::receive(stream) {
        Ok(received) => received,
        Err(error) => {
            warn!(%error, "reading a weft-cni request");
            return;
        }
    };
    let response = match protocol::decode::<Request>(&bytes) {
        Ok(request) => handle(context, request, netns),
        Err(error @ ProtocolError::Version { .. }) => Response::Refused {
            message: format!("{error}: the agent installs the plugin of its own release"),
            retry: true,
        },
        Err(error) => Response::Refused {
            message: error.to_string(),
            retry: false,
        },
    };
    if let Err(error) = wire::send(stream, &protocol::encode(&response), None) {
        warn!(%error, ?response, "answering weft-cni failed (the plugin gave up?)");
    }
}

fn refused(message: impl Into<String>, retry: bool) -> Response {
    Response::Refused {
        message: message.into(),
        retry,
    }
}

pub fn handle(context: &CniContext, request: Request, netns: Option<OwnedFd>) -> Response {
    match request {
        Request::Status => {
            if weft_core::sync::lock(&context.enrollment).is_retired() {
                refused("this agent hands the node over to its successor", true)
            } else {
                Response::Done
            }
        }
        Request::Add(sandbox) => match netns {
            Some(netns) => add(context, sandbox, netns),
            None => refused("an ADD must carry the pod's network namespace", false),
        },
        Request::Del(sandbox) => del(context, &sandbox),
        Request::Check(sandbox) => check(context, &sandbox),
    }
}

/// Waits (up to [`DECIDE_WITHIN`]) for a registry snapshot that can tell.
fn decide(context: &CniContext, sandbox: &PodSandbox) -> Verdict {
    let deadline = Instant::now() + DECIDE_WITHIN;
    loop {
        let snapshot = context.registry.load();
        match verdict(&snapshot, &context.node, sandbox) {
            Verdict::Undecided(why) if Instant::now() < deadline => {
                debug!(pod = %sandbox.key(), %why, "waiting for the registry");
                std::thread::sleep(DECIDE_POLL);
            }
            decided => return decided,
        }
    }
}

fn add(context: &CniContext, sandbox: PodSandbox, netns: OwnedFd) -> Response {
    let key = sandbox.key();
    let workload = match decide(context, &sandbox) {
        Verdict::Capture(workload) => workload,
        Verdict::Pass(why) => {
            debug!(pod = %key, why, "weft-cni: not captured");
            return Response::NotInMesh { pod: key };
        }
        Verdict::Undecided(why) => {
            warn!(pod = %key, %why, "weft-cni: cannot tell whether the pod belongs to the mesh; its sandbox is refused for now");
            return refused(
                format!(
                    "cannot tell yet whether pod {key} belongs to the mesh ({why}, after {} s)",
                    DECIDE_WITHIN.as_secs()
                ),
                true,
            );
        }
    };
    let uid = workload.uid.to_string();
    let Some(ips) = PodIps::from_ips(&sandbox.ips).or_else(|| PodIps::from_ips(&workload.ips))
    else {
        return refused(
            format!(
                "no address for pod {key}: chain weft-cni after the plugin that gives pods \
                 their addresses, so that its result (prevResult) names them"
            ),
            false,
        );
    };
    let cgroup = match context.locators.with(|locator| locator.cgroup(&uid)) {
        Ok(Some(cgroup)) => cgroup,
        Ok(None) => return refused(format!("the cgroup of pod {key} is not there yet"), true),
        Err(error) => return refused(format!("finding pod {key}: {error:#}"), true),
    };
    let place = PodPlace::from_descriptor(netns, cgroup);
    let pod = match pod_to_enroll(&workload, ips, place.clone()) {
        Ok(pod) => pod,
        Err(reason) => return refused(reason, false),
    };
    let mut enrollment = weft_core::sync::lock(&context.enrollment);
    if enrollment.is_retired() {
        return refused("this agent hands the node over to its successor", true);
    }
    context.sandboxes.record(
        &uid,
        Sandbox {
            container_id: sandbox.container_id.clone(),
            place,
            ips,
        },
    );
    match enrollment.enroll_now(&pod) {
        Ok(_) => Response::Captured { pod: key },
        Err(error) => {
            context.sandboxes.forget(&uid, &sandbox.container_id);
            warn!(pod = %key, error = %format!("{error:#}"), "weft-cni: enrolling failed; the kubelet will try again");
            refused(format!("enrolling pod {key} failed: {error:#}"), true)
        }
    }
}

fn del(context: &CniContext, sandbox: &PodSandbox) -> Response {
    let mut enrollment = weft_core::sync::lock(&context.enrollment);
    if let Some((uid, gone)) = context.sandboxes.forget_container(&sandbox.container_id) {
        // The sandbox's namespace goes with it: nothing left to capture there.
        match enrollment.unenroll_at(&uid, &gone.place) {
            Ok(true) => {
                info!(pod = %sandbox.key(), "unenrolled: its sandbox was deleted (weft-cni)")
            }
            Ok(false) => {}
            Err(error) => {
                warn!(pod = %sandbox.key(), error = %format!("{error:#}"), "unenrolling a deleted sandbox failed")
            }
        }
    }
    Response::Done
}

fn check(context: &CniContext, sandbox: &PodSandbox) -> Response {
    let key = sandbox.key();
    match verdict(&context.registry.load(), &context.node, sandbox) {
        Verdict::Pass(_) => Response::NotInMesh { pod: key },
        Verdict::Undecided(why) => refused(why, true),
        Verdict::Capture(workload) => {
            if weft_core::sync::lock(&context.enrollment).is_enrolled(&workload.uid) {
                Response::Captured { pod: key }
            } else {
                Response::NotCaptured {
                    pod: key,
                    reason: format!("the weft agent of {} has not enrolled it", context.node),
                }
            }
        }
    }
}
