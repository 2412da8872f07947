//! The capture scenario's rig: an nftables REDIRECT in one client pod and weft's eBPF capture
//! in another, both sending to the same trivial proxy ([`super::proxy`]) listening inside
//! the pod. See `xtask/bench/lab/capture.yaml` for the four clients.
use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use weft_ebpf_common::map_names;
use weft_lab::Lab;

use super::bpf;
use super::proxy::{Destination, PROXY_MARK, Proxy};

pub const NFT_CLIENT: &str = "plain/nft";
pub const EBPF_CLIENT: &str = "capture/ebpf";
pub const AGENT_CLIENT: &str = "capture/agent";
pub const DIRECT_CLIENT: &str = "plain/direct";

/// Per-namespace TCP settings of every capture client, the same for all four: each run
/// opens thousands of connections that the client (and the proxy, in the same namespace)
/// close first, and the TIME_WAIT sockets they leave would otherwise exhaust the default
/// 28k ephemeral ports within two runs, after which connect() spends milliseconds searching
/// for a free port — measuring that instead of the capture.
const CLIENT_SYSCTLS: [(&str, &str); 2] = [
    ("/proc/sys/net/ipv4/ip_local_port_range", "16384 65535"),
    ("/proc/sys/net/ipv4/tcp_tw_reuse", "1"),
];

/// Threads per proxy: more than the load generators' concurrency, so none waits for one.
const WORKERS: usize = 8;

/// Istio ambient's in-pod rule, reduced to its core: every outbound TCP connection but the
/// proxy's own (marked) and loopback goes to the proxy on :15001.
fn nft_ruleset() -> String {
    format!(
        "table ip weft_bench_capture {{
  chain output {{
    type nat hook output priority -100; policy accept;
    meta mark {PROXY_MARK:#x} return
    ip daddr 127.0.0.0/8 return
    meta l4proto tcp redirect to :15001
  }}
}}
"
    )
}

#[derive(Clone, Copy, Debug)]
pub enum ProxyKind {
    Nft,
    Ebpf,
}

pub struct Rig {
    nft: Proxy,
    ebpf: Proxy,
}

impl Rig {
    pub fn proxy(&self, kind: ProxyKind) -> &Proxy {
        match kind {
            ProxyKind::Nft => &self.nft,
            ProxyKind::Ebpf => &self.ebpf,
        }
    }
}

pub fn set_up(lab: &Lab) -> anyhow::Result<Rig> {
    for client in [NFT_CLIENT, EBPF_CLIENT, AGENT_CLIENT, DIRECT_CLIENT] {
        lab.in_pod_netns(client, || {
            CLIENT_SYSCTLS
                .iter()
                .try_for_each(|(file, value)| std::fs::write(file, value))
        })?
        .with_context(|| format!("setting the TCP sysctls of {client}"))?;
    }
    // nftables REDIRECT in plain/nft, to the proxy on 127.0.0.1:15001 there.
    let mut nft = lab
        .pod_command(NFT_CLIENT, "nft")?
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft")?;
    nft.stdin
        .take()
        .context("nft's stdin")?
        .write_all(nft_ruleset().as_bytes())?;
    let out = nft.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft -f in {NFT_CLIENT}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let listen: SocketAddr = "127.0.0.1:15001".parse()?;
    let nft_proxy = lab
        .in_pod_netns(NFT_CLIENT, || {
            Proxy::start(listen, Destination::Conntrack, WORKERS)
        })?
        .context("starting the proxy behind nftables")?;

    // weft's eBPF capture in capture/ebpf, to the same proxy (127.0.0.1:15002 there) put in
    // OUTBOUND_LISTENERS instead of the agent's listener, which then gets nothing. The agent
    // registers its listener once, when it enrolls the pod, so it has to have done so.
    let pod = lab.plan.pod(EBPF_CLIENT).context("no capture/ebpf pod")?;
    let pod_id = enrolled_pod_id(lab, &pod.node, EBPF_CLIENT)?;
    enrolled_pod_id(lab, &pod.node, AGENT_CLIENT)?;
    let maps = lab.paths.node_bpf_pins(&pod.node).join("maps");
    let orig_dst = bpf::open_pinned(&maps.join(map_names::ORIG_DST_BY_CLIENT))?;
    let listeners = bpf::open_pinned(&maps.join(map_names::OUTBOUND_LISTENERS))?;
    let listen: SocketAddr = "127.0.0.1:15002".parse()?;
    let ebpf_proxy = lab
        .in_pod_netns(EBPF_CLIENT, || {
            Proxy::start(
                listen,
                Destination::WeftMap {
                    map: orig_dst,
                    pod_id,
                },
                WORKERS,
            )
        })?
        .context("starting the proxy behind weft's eBPF capture")?;
    let key = u32::from(pod.ip).to_be();
    let fd = ebpf_proxy.listener_fd().as_raw_fd() as u64;
    bpf::update(listeners.as_fd(), &key, &fd, bpf::BPF_ANY)
        .context("putting the proxy's listener in OUTBOUND_LISTENERS")?;
    Ok(Rig {
        nft: nft_proxy,
        ebpf: ebpf_proxy,
    })
}

/// The pod id (cgroup id) the agent of `node` enrolled `pod` with, waiting for the agent to
/// have enrolled it.
fn enrolled_pod_id(lab: &Lab, node: &str, pod: &str) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pods: Vec<Value> = serde_json::from_str(&lab.agent_get(node, "/pods")?)?;
        if let Some(id) = pods
            .iter()
            .find(|p| p["pod"] == pod)
            .and_then(|p| p["pod_id"].as_u64())
        {
            return Ok(id);
        }
        if Instant::now() > deadline {
            bail!("the agent of {node} did not enroll {pod} within 20 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
