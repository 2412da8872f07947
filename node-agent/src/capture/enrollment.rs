//! Enrolling a pod into capture and out of it again.
//!
//! Order matters for a pod whose programs outlive an agent restart: the listeners exist
//! and are registered before the programs are (re)confirmed, so that the traffic the
//! programs redirect finds them.
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use weft_core::host::cgroup::{cgroup_id, cgroup_tree_ids};
use weft_core::host::netns_sockets::NetnsSockets;

use weft_ebpf_common::{PodStats, ports};

use super::exclusions::Exclusions;
use crate::ebpf::attach::{Attachment, attach_pod, detach_pod, pinned_pods, pod_pin_dir};
use crate::ebpf::loader::{Loaded, Maps};
use crate::pods::locator::PodPlace;
use crate::proxy::inbound::{self, InboundContext};
use crate::proxy::outbound::{self, OutboundContext};
use crate::proxy::records::{ConnectionLog, PodTraffic};

/// A pod to enroll, with everything capture needs to know.
#[derive(Clone, Debug, PartialEq)]
pub struct PodToEnroll {
    pub uid: String,
    /// `namespace/name`
    pub key: String,
    pub ip: Ipv4Addr,
    pub location: PodPlace,
    pub exclusions: Exclusions,
}

struct EnrolledPod {
    spec: PodToEnroll,
    pod_id: u64,
    cgroups: Vec<u64>,
    attachment: Attachment,
    traffic: Arc<PodTraffic>,
    /// The proxy tasks; aborting them closes the pod's listeners.
    tasks: Vec<JoinHandle<()>>,
}

/// What the admin endpoint shows per pod.
#[derive(Debug, Serialize)]
pub struct PodStatus {
    pub pod: String,
    pub uid: String,
    pub ip: Ipv4Addr,
    pub pod_id: u64,
    pub attachment: Attachment,
    /// `connect()` calls by the pod's processes, counted in the kernel.
    pub connects: u64,
    /// TCP connections redirected to the agent, counted in the kernel.
    pub captured: u64,
    /// Connections the proxy finished, and their bytes from the application's side.
    pub outbound_connections: u64,
    pub inbound_connections: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

pub struct Enrollment {
    ebpf: aya::Ebpf,
    maps: Maps,
    pin_root: PathBuf,
    pods: HashMap<String, EnrolledPod>,
    log: ConnectionLog,
}

impl Enrollment {
    pub fn new(loaded: Loaded, log: ConnectionLog) -> Self {
        Self {
            ebpf: loaded.ebpf,
            maps: loaded.maps,
            pin_root: loaded.pin_root,
            pods: HashMap::new(),
            log,
        }
    }

    /// Makes the enrolled set equal `desired`: new pods are enrolled, gone ones (including
    /// pods an earlier run pinned and that are no longer in the mesh) unenrolled, changed
    /// ones re-enrolled. Every failure is logged and the others proceed.
    pub fn reconcile(&mut self, desired: &[PodToEnroll]) {
        let wanted: HashMap<&str, &PodToEnroll> =
            desired.iter().map(|p| (p.uid.as_str(), p)).collect();
        let stale: Vec<String> = self
            .pods
            .iter()
            .filter(|(uid, pod)| wanted.get(uid.as_str()).is_none_or(|w| **w != pod.spec))
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in stale {
            if let Err(e) = self.unenroll(&uid) {
                warn!(uid, error = %format!("{e:#}"), "unenrolling failed");
            }
        }
        for orphan in pinned_pods(&self.pin_root) {
            if !wanted.contains_key(orphan.as_str()) && !self.pods.contains_key(&orphan) {
                info!(
                    uid = orphan,
                    "removing the capture of a pod that left the mesh while the agent was away"
                );
                if let Err(e) = detach_pod(&pod_pin_dir(&self.pin_root, &orphan)) {
                    warn!(uid = orphan, error = %format!("{e:#}"), "detaching failed");
                }
            }
        }
        for pod in desired {
            if self.pods.contains_key(&pod.uid) {
                continue;
            }
            match self.enroll(pod) {
                Ok(attachment) => info!(pod = %pod.key, ip = %pod.ip, ?attachment, "enrolled"),
                Err(e) => {
                    warn!(pod = %pod.key, error = %format!("{e:#}"), "enrolling failed; will retry")
                }
            }
        }
    }

    fn enroll(&mut self, pod: &PodToEnroll) -> anyhow::Result<Attachment> {
        let location = &pod.location;
        let sockets = NetnsSockets::spawn(&location.netns)?;
        let outbound_v4 =
            sockets.listen(SocketAddr::from((Ipv4Addr::LOCALHOST, ports::OUTBOUND)))?;
        // IPv6 capture only where the pod has IPv6 loopback to listen on.
        let outbound_v6 = sockets
            .listen(SocketAddr::from((Ipv6Addr::LOCALHOST, ports::OUTBOUND)))
            .ok();
        let inbound = sockets.listen(SocketAddr::from((
            Ipv4Addr::UNSPECIFIED,
            ports::INBOUND_PLAINTEXT,
        )))?;

        let pod_id = cgroup_id(&location.cgroup)
            .with_context(|| format!("reading the pod's cgroup {}", location.cgroup.display()))?;
        let cgroups = cgroup_tree_ids(&location.cgroup)
            .with_context(|| format!("listing the cgroups under {}", location.cgroup.display()))?;
        if self.maps.pod_stats.get(&pod_id, 0).is_err() {
            self.maps.pod_stats.insert(pod_id, PodStats::default(), 0)?;
        }
        let capture = pod
            .exclusions
            .to_capture(pod_id, pod.ip, outbound_v6.is_some());
        for id in &cgroups {
            self.maps
                .pod_capture
                .insert(id, capture, 0)
                .context("filling POD_CAPTURE")?;
        }
        let ip_key = u32::from(pod.ip).to_be();
        self.maps
            .inbound_listeners
            .insert(ip_key, inbound.as_fd(), 0)
            .context("registering the inbound listener in INBOUND_LISTENERS")?;
        self.maps
            .outbound_listeners
            .insert(ip_key, outbound_v4.as_fd(), 0)
            .context("registering the outbound listener in OUTBOUND_LISTENERS")?;

        let attachment = attach_pod(
            &mut self.ebpf,
            &pod_pin_dir(&self.pin_root, &pod.uid),
            &location.cgroup,
            &location.netns,
        )?;

        let traffic = Arc::new(PodTraffic::default());
        let outbound_ctx = OutboundContext {
            pod: pod.key.clone(),
            pod_id,
            sockets: sockets.clone(),
            orig_dst: self.maps.orig_dst_by_client.clone(),
            log: self.log.clone(),
            traffic: traffic.clone(),
        };
        let mut tasks = Vec::new();
        for listener in std::iter::once(outbound_v4).chain(outbound_v6) {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            tasks.push(tokio::spawn(outbound::serve(
                listener,
                outbound_ctx.clone(),
            )));
        }
        let inbound_ctx = InboundContext {
            pod: pod.key.clone(),
            sockets,
            log: self.log.clone(),
            traffic: traffic.clone(),
        };
        tasks.push(tokio::spawn(inbound::serve(
            tokio::net::TcpListener::from_std(inbound)?,
            inbound_ctx,
        )));
        self.pods.insert(
            pod.uid.clone(),
            EnrolledPod {
                spec: pod.clone(),
                pod_id,
                cgroups,
                attachment,
                traffic,
                tasks,
            },
        );
        Ok(attachment)
    }

    fn unenroll(&mut self, uid: &str) -> anyhow::Result<()> {
        let Some(pod) = self.pods.remove(uid) else {
            return Ok(());
        };
        // Programs first, so nothing new is redirected to listeners about to close.
        detach_pod(&pod_pin_dir(&self.pin_root, uid))?;
        for task in &pod.tasks {
            task.abort();
        }
        for id in &pod.cgroups {
            let _ = self.maps.pod_capture.remove(id);
        }
        let _ = self.maps.pod_stats.remove(&pod.pod_id);
        let _ = self
            .maps
            .inbound_listeners
            .remove(&u32::from(pod.spec.ip).to_be());
        info!(pod = %pod.spec.key, "unenrolled");
        Ok(())
    }

    pub fn status(&self) -> Vec<PodStatus> {
        let mut pods: Vec<PodStatus> = self
            .pods
            .iter()
            .map(|(uid, pod)| {
                let stats = self.maps.pod_stats.get(&pod.pod_id, 0).unwrap_or_default();
                PodStatus {
                    pod: pod.spec.key.clone(),
                    uid: uid.clone(),
                    ip: pod.spec.ip,
                    pod_id: pod.pod_id,
                    attachment: pod.attachment,
                    connects: stats.connects,
                    captured: stats.captured,
                    outbound_connections: PodTraffic::get(&pod.traffic.outbound_connections),
                    inbound_connections: PodTraffic::get(&pod.traffic.inbound_connections),
                    bytes_sent: PodTraffic::get(&pod.traffic.bytes_sent),
                    bytes_received: PodTraffic::get(&pod.traffic.bytes_received),
                }
            })
            .collect();
        pods.sort_by(|a, b| a.pod.cmp(&b.pod));
        pods
    }
}
