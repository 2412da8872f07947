//! The waypoint's upstream TCP sockets: connected within the connect timeout, Nagle off, and
//! TCP keepalive as a DestinationRule's `connectionPool.tcp.tcpKeepalive` asks.
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::upstream::policy::Keepalive;

/// A TCP connection to `address`; `Err` names what failed.
pub async fn connect(
    address: SocketAddr,
    connect_timeout: Duration,
    keepalive: Option<Keepalive>,
) -> Result<TcpStream, String> {
    let tcp = tokio::time::timeout(connect_timeout, TcpStream::connect(address))
        .await
        .map_err(|_| format!("timed out after {connect_timeout:?}"))?
        .map_err(|e| e.to_string())?;
    configure(&tcp, keepalive).map_err(|e| format!("socket options: {e}"))?;
    Ok(tcp)
}

/// TCP_NODELAY, and SO_KEEPALIVE with the probe count, idle time and interval that are set
/// (whole seconds, at least 1; the kernel's for the others).
pub fn configure(tcp: &TcpStream, keepalive: Option<Keepalive>) -> std::io::Result<()> {
    tcp.set_nodelay(true)?;
    if let Some(keepalive) = keepalive {
        let secs =
            |d: Option<Duration>| d.map(|d| u32::try_from(d.as_secs().max(1)).unwrap_or(u32::MAX));
        weft_host::sockopt::set_tcp_keepalive(
            tcp,
            keepalive.probes,
            secs(keepalive.time),
            secs(keepalive.interval),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keepalive_settings_reach_the_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let keepalive = Keepalive {
            probes: Some(4),
            time: Some(Duration::from_secs(37)),
            interval: Some(Duration::from_millis(5500)),
        };
        let tcp = connect(address, Duration::from_secs(5), Some(keepalive))
            .await
            .expect("connect");
        assert_eq!(
            weft_host::sockopt::tcp_keepalive(&tcp).expect("getsockopt"),
            (true, 4, 37, 5)
        );
        let plain = connect(address, Duration::from_secs(5), None)
            .await
            .expect("connect");
        assert!(
            !weft_host::sockopt::tcp_keepalive(&plain)
                .expect("getsockopt")
                .0,
            "no keepalive unless asked"
        );
    }
}
