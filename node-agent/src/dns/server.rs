//! The DNS proxy of one pod: `127.0.0.1:15053`, UDP and TCP, inside the pod's network
//! namespace, where the pod's cgroup programs send its DNS queries (`weft_dns_sendmsg4`,
//! `weft_connect4`). Each query is answered from the registry ([`super::answer`]) or
//! forwarded upstream ([`super::upstream`]); every query is counted with ztunnel's metrics.
use std::net::SocketAddr;
use std::sync::Arc;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tracing::{debug, warn};
use weft_core::metrics::{DnsLabels, DnsOutcome, canonical_revision, canonical_service};

use super::answer::{Answer, Family, answer};
use crate::mesh::SharedMesh;

/// The TTL of the proxy's own answers (ztunnel's).
const TTL: u32 = 30;
/// The largest UDP message a client without EDNS accepts.
const UDP_PLAIN_MAX: usize = 512;

/// What one pod's proxy needs.
#[derive(Clone)]
pub struct DnsContext {
    /// `namespace/name`.
    pub pod: String,
    pub uid: String,
    pub namespace: String,
    pub mesh: SharedMesh,
}

pub async fn serve_udp(socket: UdpSocket, ctx: DnsContext) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(error) => {
                warn!(pod = %ctx.pod, %error, "DNS: receiving failed");
                continue;
            }
        };
        let query = buf[..n].to_vec();
        let socket = socket.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move {
            if let Some(reply) = handle(&query, "udp", &ctx).await
                && let Err(error) = socket.send_to(&reply, peer).await
            {
                debug!(%peer, %error, "DNS: answering failed");
            }
        });
    }
}

pub async fn serve_tcp(listener: TcpListener, ctx: DnsContext) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(pod = %ctx.pod, %error, "DNS: accepting failed");
                continue;
            }
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            if let Err(error) = serve_stream(stream, &ctx).await {
                debug!(%peer, %error, "DNS over TCP ended");
            }
        });
    }
}

/// Queries on one TCP connection, each with its two-byte length, until the client closes.
async fn serve_stream(mut stream: TcpStream, ctx: &DnsContext) -> std::io::Result<()> {
    loop {
        let length = match stream.read_u16().await {
            Ok(length) => length,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut query = vec![0u8; usize::from(length)];
        stream.read_exact(&mut query).await?;
        let Some(reply) = handle(&query, "tcp", ctx).await else {
            return Ok(());
        };
        let length = u16::try_from(reply.len()).unwrap_or(u16::MAX);
        stream.write_all(&length.to_be_bytes()).await?;
        stream.write_all(&reply[..usize::from(length)]).await?;
    }
}

/// The reply to one query; `None` when nothing can be said (not a DNS message).
async fn handle(query: &[u8], protocol: &'static str, ctx: &DnsContext) -> Option<Vec<u8>> {
    let request = match Message::from_vec(query) {
        Ok(request) => request,
        Err(error) => {
            debug!(pod = %ctx.pod, %error, "DNS: a query that does not parse");
            return format_error(query);
        }
    };
    let question = request.queries.first();
    let query_type = question
        .map(|q| q.query_type())
        .unwrap_or(RecordType::Unknown(0));
    let snapshot = ctx.mesh.registry.load();
    let mut labels = DnsLabels::new(&query_type.to_string(), protocol);
    if let Some(workload) = snapshot.workload_by_uid(&ctx.uid) {
        let name = weft_config::telemetry::workload_name(workload);
        labels = labels.with_source(
            canonical_service(&workload.labels, name),
            canonical_revision(&workload.labels),
        );
    }
    let family = match query_type {
        RecordType::A => Some(Family::V4),
        RecordType::AAAA => Some(Family::V6),
        _ => None,
    };
    let local = match (question, family) {
        (Some(q), Some(family))
            if request.metadata.message_type == MessageType::Query
                && request.metadata.op_code == OpCode::Query
                && request.queries.len() == 1 =>
        {
            let mut name = q.name().clone();
            name.set_fqdn(false);
            let name = name.to_ascii().to_ascii_lowercase();
            match answer(&snapshot, &ctx.namespace, &name, family) {
                Answer::Forward => None,
                found => Some(found),
            }
        }
        _ => None,
    };
    drop(snapshot);
    let metrics = &ctx.mesh.telemetry.metrics;
    let Some(found) = local else {
        return match ctx.mesh.dns.forward(query, protocol == "tcp").await {
            Ok(reply) => {
                metrics.dns_request(&labels, DnsOutcome::Forwarded);
                Some(reply)
            }
            Err(error) => {
                metrics.dns_request(&labels, DnsOutcome::ForwardFailed);
                debug!(pod = %ctx.pod, %error, "DNS: forwarding failed");
                reply_bytes(
                    &error_reply(&request, ResponseCode::ServFail),
                    protocol,
                    &request,
                )
            }
        };
    };
    metrics.dns_request(&labels, DnsOutcome::Answered);
    reply_bytes(&local_reply(&request, found), protocol, &request)
}

fn error_reply(request: &Message, code: ResponseCode) -> Message {
    let mut reply = Message::error_msg(request.metadata.id, request.metadata.op_code, code);
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.queries = request.queries.clone();
    reply
}

/// The proxy's own answer: authoritative, the question repeated, a CNAME when the host was
/// found under a search domain, then the addresses.
fn local_reply(request: &Message, found: Answer) -> Message {
    let mut reply = error_reply(request, ResponseCode::NoError);
    reply.metadata.authoritative = true;
    if let Answer::Addresses {
        cname,
        name,
        addresses,
    } = found
    {
        let Ok(target) = Name::from_ascii(format!("{name}.")) else {
            return error_reply(request, ResponseCode::ServFail);
        };
        if let Some(asked) = cname.and_then(|c| Name::from_ascii(format!("{c}.")).ok()) {
            reply.add_answer(Record::from_rdata(
                asked,
                TTL,
                RData::CNAME(CNAME(target.clone())),
            ));
        }
        for ip in addresses {
            let rdata = match ip {
                std::net::IpAddr::V4(v4) => RData::A(A(v4)),
                std::net::IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
            };
            reply.add_answer(Record::from_rdata(target.clone(), TTL, rdata));
        }
    }
    reply
}

/// The reply's bytes, with EDNS when the query had it, truncated (TC) when UDP cannot carry
/// it.
fn reply_bytes(reply: &Message, protocol: &str, request: &Message) -> Option<Vec<u8>> {
    let mut reply = reply.clone();
    let limit = match &request.edns {
        Some(edns) => {
            reply.edns = Some(Edns::new());
            usize::from(edns.max_payload().max(UDP_PLAIN_MAX as u16))
        }
        None => UDP_PLAIN_MAX,
    };
    let bytes = reply.to_vec().ok()?;
    if protocol == "udp" && bytes.len() > limit {
        let mut truncated = reply.truncate();
        truncated.metadata.truncation = true;
        return truncated.to_vec().ok();
    }
    Some(bytes)
}

/// FORMERR for a message whose header can be read, nothing otherwise.
fn format_error(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    let id = u16::from_be_bytes([query[0], query[1]]);
    Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
        .to_vec()
        .ok()
}

/// The address the proxy of every pod listens on (UDP and TCP), inside the pod.
pub fn address() -> SocketAddr {
    SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, weft_ebpf_common::ports::DNS))
}
