//! Enrolling a pod into capture and out of it again.
//!
//! Order matters for a pod whose programs outlive an agent restart: the listeners exist
//! and are registered before the programs are (re)confirmed, so that the traffic the
//! programs redirect finds them.
//!
//! An agent that took over from a running one (`crate::handoff`) enrolls with the
//! listeners it inherited, the very sockets the eBPF maps already point at, so nothing
//! queued on them is lost; it binds new ones only for pods the previous agent did not
//! serve. The previous agent, once the successor serves, is retired: it stops accepting
//! and changes nothing in the kernel any more.
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use weft_core::hbone::{HboneServer, HboneServerConfig};
use weft_core::identity::Identity;
use weft_ebpf_common::{
    AF_INET, AF_INET6, PodStats, ProbeNode, ProbeTarget, TRANSPARENT_MARK, TRANSPARENT_MARK_MASK,
    TRANSPARENT_RULE_PRIORITY, TRANSPARENT_TABLE, ip6_words, ports,
};
use weft_host::cgroup::{cgroup_id, cgroup_tree_ids};
use weft_host::handoff::Inherited;
use weft_host::netns::run_in_netns;
use weft_host::netns_sockets::NetnsSockets;
use weft_host::pod_routing::{IpFamily, LocalDelivery, PodRoutingError};

use super::addresses::PodIps;
use super::exclusions::Exclusions;
use crate::dns::server::DnsContext;
use crate::ebpf::attach::{
    Attachment, attach_dns, attach_node_probe, attach_pod, detach_pod, pinned_pods, pod_pin_dir,
};
use crate::ebpf::loader::{Loaded, Maps};
use crate::mesh::SharedMesh;
use crate::pods::locator::PodPlace;
use crate::proxy::hbone_inbound::{self, HboneInboundContext};
use crate::proxy::inbound::{self, InboundContext};
use crate::proxy::outbound::{self, OutboundContext};
use crate::proxy::records::PodTraffic;
use crate::proxy::same_node::LocalPods;
use crate::proxy::transparent::Transparent;

/// A pod's DNS proxy sockets (UDP, TCP), with the handoff names and handles of both.
type DnsSockets = (
    std::net::UdpSocket,
    std::net::TcpListener,
    Vec<(String, OwnedFd)>,
);
/// The policy rule and table of every enrolled pod (see `proxy::transparent`).
const LOCAL_DELIVERY: LocalDelivery = LocalDelivery {
    mark: TRANSPARENT_MARK,
    mask: TRANSPARENT_MARK_MASK,
    table: TRANSPARENT_TABLE,
    priority: TRANSPARENT_RULE_PRIORITY,
};

/// Runs a change of the pod's local-delivery routing inside its network namespace; either
/// failure (entering the namespace, or the change) as one message.
fn in_pod_netns(
    netns: &Path,
    change: impl FnOnce() -> Result<(), PodRoutingError> + Send,
) -> Result<(), String> {
    match run_in_netns(netns, change) {
        Ok(changed) => changed.map_err(|e| e.to_string()),
        Err(entering) => Err(entering.to_string()),
    }
}

/// What should be enrolled (`crate::capture::desired`).
#[derive(Debug, Default)]
pub struct Desired {
    pub pods: Vec<PodToEnroll>,
    /// Pods of the mesh on this node that cannot be described now (no address known yet, no
    /// location found): their capture, if any, is left alone rather than removed, since
    /// they still belong to the mesh.
    pub undescribed: BTreeSet<String>,
}

/// A pod to enroll, with everything capture needs to know.
#[derive(Clone, Debug, PartialEq)]
pub struct PodToEnroll {
    pub uid: String,
    /// `namespace/name`
    pub key: String,
    /// Its addresses: IPv4, IPv6 or both (dual-stack).
    pub ips: PodIps,
    /// The pod's SPIFFE identity (its service account's).
    pub identity: Identity,
    pub location: PodPlace,
    pub exclusions: Exclusions,
    /// The ports the kubelet's probes connect to (`Workload::probe_ports`): the node's own
    /// connections to them reach the application past the mesh.
    pub probe_ports: Vec<u16>,
    /// The pod's annotation `ambient.istio.io/dns-capture`, if it says: whether its DNS goes
    /// to the agent's proxy (`None`: the agent's `--dns-capture`).
    pub dns_capture: Option<bool>,
}

struct EnrolledPod {
    spec: PodToEnroll,
    pod_id: u64,
    attachment: Attachment,
    traffic: Arc<PodTraffic>,
    /// The accept loops; aborting them stops accepting (open connections run on their own
    /// tasks) and closes this process's handle of the pod's listeners.
    tasks: Vec<JoinHandle<()>>,
    /// A second handle of each listener, by its handoff name: what a successor is offered.
    listeners: Vec<(String, OwnedFd)>,
    hbone: HboneServer,
    /// Its entries in PROBE_TARGETS.
    probe_targets: Vec<ProbeTarget>,
    /// Whether the pod's DNS goes to the agent's proxy (its entry in DNS_PODS).
    dns: bool,
}

/// What the admin endpoint shows per pod.
#[derive(Debug, Serialize)]
pub struct PodStatus {
    pub pod: String,
    pub uid: String,
    /// The pod's first address (IPv4 in a dual-stack pod), and all of them.
    pub ip: IpAddr,
    pub ips: Vec<IpAddr>,
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

/// Where an enrolled pod's programs are attached, for the admin endpoint.
#[derive(Clone, Debug)]
pub struct PodAttachment {
    pub pod: String,
    pub uid: String,
    pub pod_id: u64,
    pub cgroup: PathBuf,
    pub netns: PathBuf,
    /// The pod's cgroup and those below it now: all captured through the pod's
    /// POD_CAPTURE entry.
    pub cgroups: usize,
    pub attachment: Attachment,
    pub pin_dir: PathBuf,
}

pub struct Enrollment {
    ebpf: aya::Ebpf,
    maps: Maps,
    pin_root: PathBuf,
    pods: HashMap<String, EnrolledPod>,
    mesh: SharedMesh,
    /// Listeners received from the previous agent, taken as pods are enrolled.
    inherited: Inherited,
    /// Set once a successor serves this node: nothing is enrolled, unenrolled or detached.
    retired: bool,
    /// The node's network namespace (the agent's own, `hostNetwork`), where the kubelet's
    /// probe connections come from; `None` when `weft_node_probe` is not loaded or the
    /// namespace could not be opened.
    node_netns: Option<OwnedFd>,
    /// The enrolled pods by address, for the same-node fast path: this process's only.
    same_node: Arc<LocalPods>,
}

/// The handoff name of a pod's listener: the pod and the address, so a successor takes it
/// only for the same pod at the same address.
pub fn listener_name(uid: &str, addr: SocketAddr) -> String {
    format!("pod/{uid}/{addr}")
}

impl Enrollment {
    /// `inherited`: the previous agent's listeners ([`Inherited::empty`] on a fresh start).
    pub fn new(loaded: Loaded, mesh: SharedMesh, inherited: Inherited) -> Self {
        // The calling thread's namespace: the agent's threads never leave the node's (only
        // the per-pod socket threads and scoped helpers enter pods').
        let node_netns = loaded.node_probe.then(|| {
            std::fs::File::open("/proc/thread-self/ns/net")
                .map(OwnedFd::from)
                .map_err(|e| warn!(error = %e, "opening the node's network namespace failed: the node's probe connections will not be recognized"))
                .ok()
        }).flatten();
        Self {
            node_netns,
            same_node: Arc::new(LocalPods::new(mesh.same_node_fast_path)),
            ebpf: loaded.ebpf,
            maps: loaded.maps,
            pin_root: loaded.pin_root,
            pods: HashMap::new(),
            mesh,
            inherited,
            retired: false,
        }
    }

    /// Closes the inherited listeners no enrolled pod took (pods that left the mesh while
    /// the agents changed hands); returns how many.
    pub fn release_unused_inherited(&mut self) -> usize {
        std::mem::replace(&mut self.inherited, Inherited::empty()).len()
    }

    /// Every pod listener, by handoff name, for a successor.
    pub fn listeners(&self) -> impl Iterator<Item = (&str, BorrowedFd<'_>)> {
        self.pods
            .values()
            .flat_map(|pod| &pod.listeners)
            .map(|(name, fd)| (name.as_str(), fd.as_fd()))
    }

    /// The identities of the enrolled pods.
    pub fn identities(&self) -> BTreeSet<Identity> {
        self.pods
            .values()
            .map(|pod| pod.spec.identity.clone())
            .collect()
    }

    /// A successor serves the pods now: stop accepting, ask HBONE clients to move their
    /// connections (GOAWAY), and leave the kernel state to the successor. Open connections
    /// run to their end.
    pub fn retire(&mut self) {
        self.retired = true;
        for pod in self.pods.values_mut() {
            for task in &pod.tasks {
                task.abort();
            }
            // This process's last handles: without a successor holding them, the
            // listeners close and new connections are refused at once (capture fails
            // closed) instead of waiting in a queue nobody reads.
            pod.listeners.clear();
            pod.hbone.retire();
        }
        // The successor keeps its own table; connections accepted before now run on.
        self.same_node.clear();
    }

    /// HBONE connections the pods' servers are serving.
    pub fn open_hbone_connections(&self) -> usize {
        self.pods.values().map(|p| p.hbone.open_connections()).sum()
    }

    /// A listener on `addr` in the pod: the inherited one when the previous agent offered
    /// it, else a new one.
    fn listener(
        &mut self,
        sockets: &NetnsSockets,
        uid: &str,
        addr: SocketAddr,
    ) -> anyhow::Result<(std::net::TcpListener, OwnedFd, String)> {
        let name = listener_name(uid, addr);
        let (listener, handle) =
            crate::handoff::inherit_or_bind(&mut self.inherited, &name, addr, || {
                Ok(sockets.listen(addr)?)
            })?;
        Ok((listener, handle, name))
    }

    /// The DNS proxy's UDP and TCP sockets on `127.0.0.1:15053` in the pod: the previous
    /// agent's when it offered them, else new ones; with their handoff names and handles.
    fn dns_sockets(&mut self, sockets: &NetnsSockets, uid: &str) -> anyhow::Result<DnsSockets> {
        let addr = crate::dns::server::address();
        let udp_name = format!("pod/{uid}/udp/{addr}");
        let udp = match self.inherited.take_udp(&udp_name) {
            Some(udp) if udp.local_addr().ok() == Some(addr) => udp,
            _ => sockets
                .bind_udp(addr)
                .with_context(|| format!("binding the DNS proxy's UDP socket {addr}"))?,
        };
        let udp_handle = OwnedFd::from(
            udp.try_clone()
                .context("duplicating the DNS proxy's UDP socket")?,
        );
        let (tcp, tcp_handle, tcp_name) = self
            .listener(sockets, uid, addr)
            .context("the DNS proxy's TCP listener")?;
        Ok((
            udp,
            tcp,
            vec![(udp_name, udp_handle), (tcp_name, tcp_handle)],
        ))
    }

    /// Makes the enrolled set equal `desired`: new pods are enrolled, gone ones (including
    /// pods an earlier run pinned and that are no longer in the mesh) unenrolled, changed
    /// ones re-enrolled. Pods of the mesh that cannot be described now
    /// ([`Desired::undescribed`]) keep whatever capture they have. Every failure is logged
    /// and the others proceed.
    pub fn reconcile(&mut self, desired: &Desired) {
        if self.retired {
            return;
        }
        let wanted: HashMap<&str, &PodToEnroll> =
            desired.pods.iter().map(|p| (p.uid.as_str(), p)).collect();
        let kept = |uid: &str| desired.undescribed.contains(uid);
        let stale: Vec<String> = self
            .pods
            .iter()
            .filter(|(uid, pod)| match wanted.get(uid.as_str()) {
                Some(w) => **w != pod.spec,
                None => !kept(uid),
            })
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in stale {
            if let Err(e) = self.unenroll(&uid) {
                warn!(uid, error = %format!("{e:#}"), "unenrolling failed");
            }
        }
        for orphan in pinned_pods(&self.pin_root) {
            if !wanted.contains_key(orphan.as_str())
                && !self.pods.contains_key(&orphan)
                && !kept(&orphan)
            {
                info!(
                    uid = orphan,
                    "removing the capture of a pod that left the mesh while the agent was away"
                );
                if let Err(e) = detach_pod(&pod_pin_dir(&self.pin_root, &orphan)) {
                    warn!(uid = orphan, error = %format!("{e:#}"), "detaching failed");
                }
            }
        }
        for pod in &desired.pods {
            if self.pods.contains_key(&pod.uid) {
                continue;
            }
            match self.enroll(pod) {
                Ok(attachment) => {
                    info!(pod = %pod.key, ips = ?pod.ips.all(), ?attachment, "enrolled")
                }
                Err(e) => {
                    warn!(pod = %pod.key, error = %format!("{e:#}"), "enrolling failed; will retry")
                }
            }
        }
    }

    /// Enrolls one pod now (weft-cni's ADD, before the pod's containers start): nothing to
    /// do when it is enrolled as described, re-enrolled when it is enrolled otherwise (a
    /// new sandbox of the same pod).
    pub fn enroll_now(&mut self, pod: &PodToEnroll) -> anyhow::Result<Attachment> {
        if self.retired {
            anyhow::bail!("this agent has handed the node over to its successor");
        }
        if let Some(enrolled) = self.pods.get(&pod.uid) {
            if enrolled.spec == *pod {
                return Ok(enrolled.attachment);
            }
            self.unenroll(&pod.uid)?;
        }
        let attachment = self.enroll(pod)?;
        info!(pod = %pod.key, ips = ?pod.ips.all(), ?attachment, "enrolled for its sandbox (weft-cni)");
        Ok(attachment)
    }

    /// Unenrolls the pod `uid` if it is enrolled at `place` (weft-cni's DEL: the sandbox
    /// and its namespace are going away). Returns whether it was.
    pub fn unenroll_at(&mut self, uid: &str, place: &PodPlace) -> anyhow::Result<bool> {
        if self.retired
            || self
                .pods
                .get(uid)
                .is_none_or(|pod| pod.spec.location != *place)
        {
            return Ok(false);
        }
        self.unenroll(uid)?;
        Ok(true)
    }

    /// Whether the pod `uid` is enrolled (and by this agent, which still serves the node).
    pub fn is_enrolled(&self, uid: &str) -> bool {
        !self.retired && self.pods.contains_key(uid)
    }

    /// Whether a successor serves the node now.
    pub fn is_retired(&self) -> bool {
        self.retired
    }

    /// Sets the pod's namespace up to deliver the application's replies to connections
    /// made from a client's address, for each family the pod has an address of; without it
    /// the application sees the pod's own address as the source of inbound connections of
    /// that family (which still work).
    fn local_delivery(&self, pod: &str, ips: &PodIps, netns: &Path) -> Option<Transparent> {
        let install = |family: IpFamily| match in_pod_netns(netns, || {
            LOCAL_DELIVERY.install(family)
        }) {
            Ok(()) => true,
            Err(error) => {
                warn!(%pod, %family, %error, "the application will see the pod's address as the source of inbound connections of this family");
                false
            }
        };
        let v4 = ips.v4.is_some() && install(IpFamily::V4);
        let v6 = ips.v6.is_some() && install(IpFamily::V6);
        (v4 || v6).then(|| Transparent {
            connects: self.maps.transparent_connects.clone(),
            v4,
            v6,
        })
    }

    /// A listener the pod can do without, for one family: its failure is logged with what
    /// it costs, and the pod is enrolled without it. The pod's sk_lookup program refuses
    /// what would have gone to it (fail closed).
    fn optional_listener(
        &mut self,
        sockets: &NetnsSockets,
        pod: &PodToEnroll,
        addr: SocketAddr,
        listeners: &mut Vec<(String, OwnedFd)>,
        cost: &str,
    ) -> Option<std::net::TcpListener> {
        match self.listener(sockets, &pod.uid, addr) {
            Ok((listener, handle, name)) => {
                listeners.push((name, handle));
                Some(listener)
            }
            Err(error) => {
                warn!(pod = %pod.key, %addr, error = %format!("{error:#}"), "{cost}");
                None
            }
        }
    }

    fn enroll(&mut self, pod: &PodToEnroll) -> anyhow::Result<Attachment> {
        let location = &pod.location;
        let ips = pod.ips;
        let sockets = NetnsSockets::spawn(&location.netns)?;
        let mut listeners = Vec::new();
        let (outbound_v4, handle, name) = self.listener(
            &sockets,
            &pod.uid,
            SocketAddr::from((Ipv4Addr::LOCALHOST, ports::OUTBOUND)),
        )?;
        listeners.push((name, handle));
        // IPv6 capture needs IPv6 loopback in the pod to listen on. A pod with an IPv6
        // address has its IPv6 connections refused without it; one without (IPv6 disabled
        // in the pod, say) has nowhere to send them anyway, which is not worth a warning.
        let loopback_v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, ports::OUTBOUND));
        let outbound_v6 = match ips.v6 {
            Some(_) => self.optional_listener(
                &sockets,
                pod,
                loopback_v6,
                &mut listeners,
                "no IPv6 outbound listener: the pod's IPv6 connections are refused",
            ),
            None => match self.listener(&sockets, &pod.uid, loopback_v6) {
                Ok((listener, handle, name)) => {
                    listeners.push((name, handle));
                    Some(listener)
                }
                Err(_) => None,
            },
        };
        let (inbound_v4, handle, name) = self.listener(
            &sockets,
            &pod.uid,
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, ports::INBOUND_PLAINTEXT)),
        )?;
        listeners.push((name, handle));
        let inbound_v6 = match ips.v6 {
            Some(_) => self.optional_listener(
                &sockets,
                pod,
                SocketAddr::from((Ipv6Addr::UNSPECIFIED, ports::INBOUND_PLAINTEXT)),
                &mut listeners,
                "no IPv6 inbound listener: IPv6 connections to the pod are refused",
            ),
            None => None,
        };
        // HBONE on each address. The first family's is required, as a pod must be reachable
        // through the mesh at all; without the other, tunnels to that address are refused.
        let mut hbone_listeners = Vec::new();
        for (index, ip) in ips.all().into_iter().enumerate() {
            let addr = SocketAddr::new(ip, ports::HBONE);
            if index == 0 {
                let (listener, handle, name) = self.listener(&sockets, &pod.uid, addr)?;
                listeners.push((name, handle));
                hbone_listeners.push(listener);
            } else if let Some(listener) = self.optional_listener(
                &sockets,
                pod,
                addr,
                &mut listeners,
                "no HBONE listener on this address: tunnels to it are refused",
            ) {
                hbone_listeners.push(listener);
            }
        }

        // The DNS proxy's sockets, when the pod's DNS is captured: without them its queries
        // stay its own (never redirected to nothing).
        let dns_sockets = if pod.dns_capture.unwrap_or(self.mesh.dns_capture) {
            match self.dns_sockets(&sockets, &pod.uid) {
                Ok((udp, tcp, handles)) => {
                    listeners.extend(handles);
                    Some((udp, tcp))
                }
                Err(error) => {
                    warn!(pod = %pod.key, error = %format!("{error:#}"), "no DNS proxy for the pod: its DNS queries go to its own nameservers");
                    None
                }
            }
        } else {
            None
        };

        let pod_id = cgroup_id(&location.cgroup)
            .with_context(|| format!("reading the pod's cgroup {}", location.cgroup.display()))?;
        if self.maps.pod_stats.get(&pod_id, 0).is_err() {
            self.maps.pod_stats.insert(pod_id, PodStats::default(), 0)?;
        }
        let capture = pod
            .exclusions
            .to_capture(pod_id, &ips, outbound_v6.is_some());
        // One entry, the pod cgroup's: connect4/6 find it from any cgroup below, including
        // those made after now (containers started or restarted later).
        self.maps
            .pod_capture
            .insert(pod_id, capture, 0)
            .context("filling POD_CAPTURE")?;
        if let Some(v4) = ips.v4 {
            let key = u32::from(v4).to_be();
            self.maps
                .inbound_listeners
                .insert(key, inbound_v4.as_fd(), 0)
                .context("registering the inbound listener in INBOUND_LISTENERS")?;
            self.maps
                .outbound_listeners
                .insert(key, outbound_v4.as_fd(), 0)
                .context("registering the outbound listener in OUTBOUND_LISTENERS")?;
        }
        if let Some(v6) = ips.v6 {
            let key = ip6_words(v6.octets());
            if let Some(inbound) = &inbound_v6 {
                self.maps
                    .inbound_listeners6
                    .insert(key, inbound.as_fd(), 0)
                    .context("registering the IPv6 inbound listener in INBOUND_LISTENERS6")?;
            }
            if let Some(outbound) = &outbound_v6 {
                self.maps
                    .outbound_listeners6
                    .insert(key, outbound.as_fd(), 0)
                    .context("registering the IPv6 outbound listener in OUTBOUND_LISTENERS6")?;
            }
        }

        let attachment = attach_pod(
            &mut self.ebpf,
            &pod_pin_dir(&self.pin_root, &pod.uid),
            &location.cgroup,
            &location.netns,
        )?;
        let probe_targets = self.recognize_node_probes(pod);
        let pin_dir = pod_pin_dir(&self.pin_root, &pod.uid);
        let dns_sockets = match attach_dns(&mut self.ebpf, &pin_dir, &location.cgroup) {
            Ok(_) => dns_sockets,
            Err(error) => {
                warn!(pod = %pod.key, error = %format!("{error:#}"), "the DNS programs could not be attached: the pod's DNS queries go to its own nameservers");
                None
            }
        };
        let dns = match &dns_sockets {
            Some(_) => match self.maps.dns_pods.insert(pod_id, 1, 0) {
                Ok(()) => true,
                Err(error) => {
                    warn!(pod = %pod.key, %error, "filing the pod in DNS_PODS failed: its DNS queries go to its own nameservers");
                    false
                }
            },
            None => {
                let _ = self.maps.dns_pods.remove(&pod_id);
                false
            }
        };

        // The certificate is fetched now so the first connection does not wait for the CA;
        // until it arrives, handshakes for this pod fail (closed).
        let identities = self.mesh.identities.clone();
        let identity = pod.identity.clone();
        let key = pod.key.clone();
        tokio::spawn(async move {
            if let Err(e) = identities.fetch(&identity).await {
                warn!(pod = %key, %identity, error = %e, "obtaining the pod's certificate failed; retrying in the background");
            }
        });

        let transparent = self.local_delivery(&pod.key, &ips, &location.netns);

        let traffic = Arc::new(PodTraffic::default());
        let outbound_ctx = OutboundContext {
            pod: pod.key.clone(),
            pod_id,
            pod_ips: ips,
            identity: pod.identity.clone(),
            sockets: sockets.clone(),
            orig_dst: self.maps.orig_dst_by_client.clone(),
            traffic: traffic.clone(),
            mesh: self.mesh.clone(),
            same_node: self.same_node.clone(),
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
            uid: pod.uid.clone(),
            sockets: sockets.clone(),
            transparent: transparent.clone(),
            traffic: traffic.clone(),
            mesh: self.mesh.clone(),
        };
        for listener in std::iter::once(inbound_v4).chain(inbound_v6) {
            tasks.push(tokio::spawn(inbound::serve(
                tokio::net::TcpListener::from_std(listener)?,
                inbound_ctx.clone(),
            )));
        }
        if dns && let Some((udp, tcp)) = dns_sockets {
            let dns_ctx = DnsContext {
                pod: pod.key.clone(),
                uid: pod.uid.clone(),
                namespace: pod.key.split('/').next().unwrap_or_default().to_string(),
                mesh: self.mesh.clone(),
            };
            tasks.push(tokio::spawn(crate::dns::server::serve_udp(
                tokio::net::UdpSocket::from_std(udp)?,
                dns_ctx.clone(),
            )));
            tasks.push(tokio::spawn(crate::dns::server::serve_tcp(
                tokio::net::TcpListener::from_std(tcp)?,
                dns_ctx,
            )));
        }
        let hbone_ctx = HboneInboundContext {
            pod: pod.key.clone(),
            uid: pod.uid.clone(),
            pod_ips: ips,
            sockets,
            transparent,
            traffic: traffic.clone(),
            mesh: self.mesh.clone(),
        };
        self.same_node
            .insert(&ips.all(), &pod.uid, &pod.identity, hbone_ctx.clone());
        let served = pod.identity.clone();
        let server = HboneServer::new(
            self.mesh.identities.clone(),
            self.mesh.trust.clone(),
            move |_local: SocketAddr, _sni: Option<&str>| Some(served.clone()),
            move |request| hbone_inbound::handle(request, hbone_ctx.clone()),
            HboneServerConfig::default(),
        );
        for listener in hbone_listeners {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let serving = server.clone();
            tasks.push(tokio::spawn(async move { serving.serve(listener).await }));
        }
        self.pods.insert(
            pod.uid.clone(),
            EnrolledPod {
                spec: pod.clone(),
                pod_id,
                attachment,
                traffic,
                tasks,
                listeners,
                hbone: server,
                probe_targets,
                dns,
            },
        );
        Ok(attachment)
    }

    /// Lets the node's own connections to the pod's probe ports reach the application:
    /// `weft_node_probe` on the pod's interfaces, and a PROBE_TARGETS entry per pod address
    /// and probe port naming the node's namespace as the pod's names it. A failure costs the
    /// pod its probes under STRICT or behind a waypoint (they are captured like any
    /// plaintext client), never its capture: logged, and the pod is enrolled.
    fn recognize_node_probes(&mut self, pod: &PodToEnroll) -> Vec<ProbeTarget> {
        if pod.probe_ports.is_empty() {
            return Vec::new();
        }
        let Some(node_netns) = self.node_netns.as_ref().map(AsFd::as_fd) else {
            warn!(pod = %pod.key, "the node's probe connections cannot be recognized on this host: the pod's probes are captured like any plaintext client");
            return Vec::new();
        };
        let ips = pod.ips.all();
        let found = run_in_netns(&pod.location.netns, || {
            let id = weft_host::pod_routing::netns_id(node_netns)
                .map_err(|e| format!("naming the node's network namespace in the pod's: {e}"))?;
            let interfaces = weft_host::pod_routing::interfaces_holding(&ips)
                .map_err(|e| format!("listing the pod's interfaces: {e}"))?;
            Ok::<_, String>((id, interfaces))
        });
        let (netns_id, interfaces) = match found {
            Ok(Ok(found)) => found,
            Ok(Err(error)) => {
                warn!(pod = %pod.key, %error, "the node's probe connections will not reach the application");
                return Vec::new();
            }
            Err(error) => {
                warn!(pod = %pod.key, %error, "the node's probe connections will not reach the application");
                return Vec::new();
            }
        };
        if interfaces.is_empty() {
            warn!(pod = %pod.key, ips = ?ips, "no interface of the pod holds its addresses: the node's probe connections will not reach the application");
            return Vec::new();
        }
        if let Err(error) = attach_node_probe(
            &mut self.ebpf,
            &pod_pin_dir(&self.pin_root, &pod.uid),
            &pod.location.netns,
            &interfaces,
        ) {
            warn!(pod = %pod.key, error = %format!("{error:#}"), "the node's probe connections will not reach the application");
            return Vec::new();
        }
        let mut targets = Vec::new();
        for ip in ips {
            let (addr, family) = match ip {
                IpAddr::V4(v4) => ([u32::from(v4).to_be(), 0, 0, 0], AF_INET),
                IpAddr::V6(v6) => (ip6_words(v6.octets()), AF_INET6),
            };
            for port in &pod.probe_ports {
                let target = ProbeTarget {
                    addr,
                    port: *port,
                    family,
                };
                let node = ProbeNode { netns_id, _pad: 0 };
                match self.maps.probe_targets.insert(target, node, 0) {
                    Ok(()) => targets.push(target),
                    Err(error) => {
                        warn!(pod = %pod.key, %ip, port, %error, "filing a probe target failed: the node's probes to it are captured like any plaintext client")
                    }
                }
            }
        }
        info!(pod = %pod.key, ports = ?pod.probe_ports, ?interfaces, netns_id, "the node's probe connections reach the application");
        targets
    }

    fn unenroll(&mut self, uid: &str) -> anyhow::Result<()> {
        let Some(pod) = self.pods.remove(uid) else {
            return Ok(());
        };
        self.same_node.remove(uid);
        // Programs first, so nothing new is redirected to listeners about to close.
        detach_pod(&pod_pin_dir(&self.pin_root, uid))?;
        // A pod leaving the mesh keeps its namespace: leave it as it was. (A deleted pod's
        // namespace is gone, and its rule with it.)
        let netns = &pod.spec.location.netns;
        let ips = pod.spec.ips;
        let families = ips
            .v4
            .map(|_| IpFamily::V4)
            .into_iter()
            .chain(ips.v6.map(|_| IpFamily::V6));
        for family in families {
            if netns.exists()
                && let Err(error) = in_pod_netns(netns, || LOCAL_DELIVERY.remove(family))
            {
                warn!(pod = %pod.spec.key, %family, %error, "removing the pod's local-delivery rule failed");
            }
        }
        for task in &pod.tasks {
            task.abort();
        }
        let _ = self.maps.pod_capture.remove(&pod.pod_id);
        // Earlier releases filed every cgroup below the pod's as well.
        for id in cgroup_tree_ids(&pod.spec.location.cgroup).unwrap_or_default() {
            let _ = self.maps.pod_capture.remove(&id);
        }
        for target in &pod.probe_targets {
            let _ = self.maps.probe_targets.remove(target);
        }
        if pod.dns {
            let _ = self.maps.dns_pods.remove(&pod.pod_id);
        }
        let _ = self.maps.pod_stats.remove(&pod.pod_id);
        if let Some(v4) = ips.v4 {
            let _ = self.maps.inbound_listeners.remove(&u32::from(v4).to_be());
            let _ = self.maps.outbound_listeners.remove(&u32::from(v4).to_be());
        }
        if let Some(v6) = ips.v6 {
            let _ = self.maps.inbound_listeners6.remove(&ip6_words(v6.octets()));
            let _ = self
                .maps
                .outbound_listeners6
                .remove(&ip6_words(v6.octets()));
        }
        // Other pods of the node may run as the same service account.
        if !self
            .pods
            .values()
            .any(|other| other.spec.identity == pod.spec.identity)
        {
            self.mesh.identities.forget(&pod.spec.identity);
        }
        info!(pod = %pod.spec.key, "unenrolled");
        Ok(())
    }

    pub fn pin_root(&self) -> &Path {
        &self.pin_root
    }

    pub fn attachments(&self) -> Vec<PodAttachment> {
        let mut pods: Vec<PodAttachment> = self
            .pods
            .iter()
            .map(|(uid, pod)| PodAttachment {
                pod: pod.spec.key.clone(),
                uid: uid.clone(),
                pod_id: pod.pod_id,
                cgroup: pod.spec.location.cgroup.clone(),
                netns: pod.spec.location.netns.clone(),
                cgroups: cgroup_tree_ids(&pod.spec.location.cgroup).map_or(0, |ids| ids.len()),
                attachment: pod.attachment,
                pin_dir: pod_pin_dir(&self.pin_root, uid),
            })
            .collect();
        pods.sort_by(|a, b| a.pod.cmp(&b.pod));
        pods
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
                    ip: pod.spec.ips.primary(),
                    ips: pod.spec.ips.all(),
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
