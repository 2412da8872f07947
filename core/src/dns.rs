//! The upstream resolver the agent's DNS proxy forwards to, and the name lookups of the
//! agent and the waypoint (ServiceEntry hosts of resolution DNS).
//!
//! As ztunnel does, the agent forwards to the resolvers of its own configuration: the
//! nameservers of `--dns-upstream`, else of the agent's `/etc/resolv.conf` (the DaemonSet
//! runs the agent with `dnsPolicy: ClusterFirstWithHostNet`, so that is the cluster's DNS).
//! Queries go from the agent's network namespace, the node's. A query is sent as it came
//! (its id, its flags) to each nameserver in turn until one answers, over UDP — or TCP when
//! the pod asked over TCP —, and the answer is returned as it came.
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long one nameserver has to answer.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Bounds of how long a lookup's answer is kept, whatever its TTL says.
const MIN_TTL: Duration = Duration::from_secs(1);
const MAX_TTL: Duration = Duration::from_secs(60);
/// Largest UDP answer read (EDNS payloads above this are not asked for by pods' resolvers).
const MAX_UDP: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no upstream nameserver is configured")]
    NoServers,
    #[error("{server}: {reason}")]
    Server { server: SocketAddr, reason: String },
    #[error("encoding the query: {0}")]
    Encode(String),
    #[error("the answer does not parse: {0}")]
    Decode(String),
    #[error("{host}: {code}")]
    NoAddress { host: String, code: String },
}

pub struct Upstream {
    servers: Vec<SocketAddr>,
    cache: Mutex<HashMap<String, (Instant, Vec<IpAddr>)>>,
}

impl Upstream {
    pub fn new(servers: Vec<SocketAddr>) -> Self {
        Self {
            servers,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The resolvers a proxy was told to use (`--dns-upstream`, port 53), else those of
    /// its `/etc/resolv.conf`.
    pub fn configured(flags: &[IpAddr]) -> Self {
        if flags.is_empty() {
            Self::from_resolv_conf(Path::new("/etc/resolv.conf"))
        } else {
            Self::new(flags.iter().map(|ip| SocketAddr::new(*ip, 53)).collect())
        }
    }

    /// The nameservers of a resolv.conf (port 53).
    pub fn from_resolv_conf(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        Self::new(nameservers(&text))
    }

    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// Sends `query` (a whole DNS message) to the nameservers in turn and returns the first
    /// answer whose id matches.
    pub async fn forward(&self, query: &[u8], tcp: bool) -> Result<Vec<u8>, UpstreamError> {
        let mut last = UpstreamError::NoServers;
        for server in &self.servers {
            let sent = if tcp {
                tokio::time::timeout(TIMEOUT, forward_tcp(*server, query)).await
            } else {
                tokio::time::timeout(TIMEOUT, forward_udp(*server, query)).await
            };
            match sent {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(error)) => {
                    last = UpstreamError::Server {
                        server: *server,
                        reason: error.to_string(),
                    }
                }
                Err(_) => {
                    last = UpstreamError::Server {
                        server: *server,
                        reason: format!("no answer within {TIMEOUT:?}"),
                    }
                }
            }
        }
        Err(last)
    }

    /// The addresses of `host` (A records, else AAAA), kept for their TTL.
    pub async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, UpstreamError> {
        let key = host.to_ascii_lowercase();
        if let Some((until, found)) = crate::sync::lock(&self.cache).get(&key)
            && Instant::now() < *until
        {
            return Ok(found.clone());
        }
        let mut code = String::from("no address");
        for record_type in [RecordType::A, RecordType::AAAA] {
            let (found, ttl, rcode) = self.ask(&key, record_type).await?;
            if !found.is_empty() {
                let ttl = ttl.clamp(MIN_TTL, MAX_TTL);
                crate::sync::lock(&self.cache)
                    .insert(key.clone(), (Instant::now() + ttl, found.clone()));
                return Ok(found);
            }
            code = rcode;
        }
        Err(UpstreamError::NoAddress {
            host: host.to_string(),
            code,
        })
    }

    async fn ask(
        &self,
        host: &str,
        record_type: RecordType,
    ) -> Result<(Vec<IpAddr>, Duration, String), UpstreamError> {
        let name = Name::from_ascii(format!("{host}."))
            .map_err(|e| UpstreamError::Encode(format!("{host:?}: {e}")))?;
        let mut query = Message::query();
        query.metadata.recursion_desired = true;
        query.add_query(Query::query(name, record_type));
        let bytes = query
            .to_vec()
            .map_err(|e| UpstreamError::Encode(e.to_string()))?;
        let mut read = read_answer(&self.forward(&bytes, false).await?)?;
        if read.truncated {
            read = read_answer(&self.forward(&bytes, true).await?)?;
        }
        Ok((read.addresses, read.ttl, read.response_code))
    }
}

/// What a nameserver's answer to a lookup says.
#[derive(Debug, PartialEq, Eq)]
pub struct LookupAnswer {
    /// The addresses of its A and AAAA records.
    pub addresses: Vec<IpAddr>,
    /// The shortest TTL of those records, at most a minute.
    pub ttl: Duration,
    pub response_code: String,
    /// Cut short (TC): to be asked again over TCP.
    pub truncated: bool,
}

/// Reads the answer a nameserver sent to a lookup (bytes from the network).
pub fn read_answer(answer: &[u8]) -> Result<LookupAnswer, UpstreamError> {
    let parsed = Message::from_vec(answer).map_err(|e| UpstreamError::Decode(e.to_string()))?;
    let mut ttl = MAX_TTL;
    let addresses: Vec<IpAddr> = parsed
        .answers
        .iter()
        .filter_map(|record| {
            let ip = match &record.data {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
                _ => return None,
            };
            ttl = ttl.min(Duration::from_secs(u64::from(record.ttl)));
            Some(ip)
        })
        .collect();
    Ok(LookupAnswer {
        addresses,
        ttl,
        response_code: parsed.metadata.response_code.to_string(),
        truncated: parsed.metadata.truncation,
    })
}

async fn forward_udp(server: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(server).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; MAX_UDP];
    loop {
        let n = socket.recv(&mut buf).await?;
        // Only the answer to this query (same id): a late answer to another is skipped.
        if n >= 2 && query.len() >= 2 && buf[..2] == query[..2] {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn forward_tcp(server: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(server).await?;
    let length = u16::try_from(query.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "query too long"))?;
    stream.write_all(&length.to_be_bytes()).await?;
    stream.write_all(query).await?;
    let length = stream.read_u16().await?;
    let mut answer = vec![0u8; usize::from(length)];
    stream.read_exact(&mut answer).await?;
    Ok(answer)
}

/// The `nameserver` lines of a resolv.conf, at port 53.
pub fn nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
                .and_then(|address| address.parse::<IpAddr>().ok())
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_are_read_from_resolv_conf() {
        let text = "# comment\nsearch shop.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\nnameserver fd00::a\nnameserver bogus\noptions ndots:5\n";
        assert_eq!(
            nameservers(text),
            [
                "10.96.0.10:53".parse::<SocketAddr>().expect("addr"),
                "[fd00::a]:53".parse().expect("addr")
            ]
        );
    }

    /// A nameserver on loopback answering every A query with 192.0.2.1 (TTL 5), built with
    /// the same message types a real one would parse.
    async fn fake_nameserver() -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let address = socket.local_addr().expect("address");
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut answer = Message::response(query.metadata.id, query.metadata.op_code);
                answer.queries = query.queries.clone();
                if let Some(q) = query.queries.first()
                    && q.query_type() == RecordType::A
                {
                    answer.add_answer(hickory_proto::rr::Record::from_rdata(
                        q.name().clone(),
                        5,
                        RData::A(hickory_proto::rr::rdata::A(
                            "192.0.2.1".parse().expect("ip"),
                        )),
                    ));
                }
                let _ = socket
                    .send_to(&answer.to_vec().expect("encodes"), peer)
                    .await;
            }
        });
        address
    }

    #[test]
    fn an_answer_gives_its_addresses_the_shortest_ttl_and_truncation() {
        let name = Name::from_ascii("api.example.com.").expect("name");
        let mut answer = Message::response(7, hickory_proto::op::OpCode::Query);
        answer.add_answer(hickory_proto::rr::Record::from_rdata(
            name.clone(),
            300,
            RData::A(hickory_proto::rr::rdata::A(
                "192.0.2.1".parse().expect("ip"),
            )),
        ));
        answer.add_answer(hickory_proto::rr::Record::from_rdata(
            name.clone(),
            5,
            RData::AAAA(hickory_proto::rr::rdata::AAAA(
                "2001:db8::1".parse().expect("ip"),
            )),
        ));
        answer.add_answer(hickory_proto::rr::Record::from_rdata(
            name,
            1,
            RData::CNAME(hickory_proto::rr::rdata::CNAME(
                Name::from_ascii("other.example.com.").expect("name"),
            )),
        ));
        let read = read_answer(&answer.to_vec().expect("encodes")).expect("reads");
        assert_eq!(
            read.addresses,
            [
                "192.0.2.1".parse::<IpAddr>().expect("ip"),
                "2001:db8::1".parse().expect("ip")
            ]
        );
        // The CNAME's TTL does not count: no address comes from it.
        assert_eq!(read.ttl, Duration::from_secs(5));
        assert!(!read.truncated);
        answer.metadata.truncation = true;
        answer.answers.clear();
        let read = read_answer(&answer.to_vec().expect("encodes")).expect("reads");
        assert!(read.truncated && read.addresses.is_empty());
        assert_eq!(read.ttl, MAX_TTL);
        assert!(matches!(
            read_answer(&[0x12, 0x34, 0x81]),
            Err(UpstreamError::Decode(_))
        ));
    }

    #[tokio::test]
    async fn lookups_ask_the_nameserver_and_keep_the_answer() {
        let server = fake_nameserver().await;
        // The first nameserver does not answer: the next is asked.
        let silent = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let upstream = Upstream::new(vec![server]);
        let found = upstream.lookup("api.example.com").await.expect("resolves");
        assert_eq!(found, ["192.0.2.1".parse::<IpAddr>().expect("ip")]);
        assert!(
            crate::sync::lock(&upstream.cache).contains_key("api.example.com"),
            "kept for its TTL"
        );
        drop(silent);
        let none = Upstream::new(Vec::new());
        assert!(matches!(
            none.lookup("api.example.com").await,
            Err(UpstreamError::NoServers)
        ));
    }
}
