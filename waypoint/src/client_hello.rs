//! The ClientHello at the start of a TLS connection, read without answering it: its SNI
//! chooses where the connection goes (an ingress gateway's PASSTHROUGH server, a waypoint's
//! `tls` route), and its bytes are then replayed to whatever was chosen.
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tracing::debug;

/// What the first bytes of a connection to a TLS port say.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// More bytes are needed.
    Incomplete,
    /// Not a TLS ClientHello.
    NotTls,
    /// A complete ClientHello; its server name, if it sent one (lower case).
    Complete { sni: Option<String> },
}

/// The largest ClientHello read before giving up (post-quantum key shares make them a
/// few kilobytes; no legitimate one comes near this).
pub const MAX_HELLO: usize = 64 * 1024;

/// Parses the ClientHello at the start of `bytes`, which may span several TLS records.
pub fn client_hello(bytes: &[u8]) -> Hello {
    // The handshake message, gathered from the records that carry it.
    let mut handshake = Vec::new();
    let mut at = 0;
    loop {
        let Some(header) = bytes.get(at..at + 5) else {
            return if at == 0 && bytes.first().is_some_and(|b| *b != 0x16) {
                Hello::NotTls
            } else {
                Hello::Incomplete
            };
        };
        if header[0] != 0x16 || header[1] != 0x03 {
            return Hello::NotTls;
        }
        let length = usize::from(u16::from_be_bytes([header[3], header[4]]));
        let Some(fragment) = bytes.get(at + 5..at + 5 + length) else {
            return Hello::Incomplete;
        };
        handshake.extend_from_slice(fragment);
        at += 5 + length;
        if handshake.len() >= 4 {
            if handshake[0] != 0x01 {
                return Hello::NotTls;
            }
            let message = (usize::from(handshake[1]) << 16)
                | (usize::from(handshake[2]) << 8)
                | usize::from(handshake[3]);
            if handshake.len() >= 4 + message {
                return match server_name(&handshake[4..4 + message]) {
                    Some(sni) => Hello::Complete { sni },
                    None => Hello::NotTls,
                };
            }
        }
    }
}

/// A cursor over a ClientHello body; every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(slice)
    }

    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }

    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

/// `Some(sni)` for a well-formed ClientHello body; `None` when it is malformed.
fn server_name(body: &[u8]) -> Option<Option<String>> {
    let mut r = Reader { bytes: body, at: 0 };
    r.take(2)?; // legacy_version
    r.take(32)?; // random
    r.vec8()?; // session id
    r.vec16()?; // cipher suites
    r.vec8()?; // compression methods
    if r.at == body.len() {
        return Some(None);
    }
    let extensions = r.vec16()?;
    let mut e = Reader {
        bytes: extensions,
        at: 0,
    };
    while e.at < extensions.len() {
        let kind = e.u16()?;
        let data = e.vec16()?;
        if kind != 0 {
            continue;
        }
        let mut list = Reader { bytes: data, at: 0 };
        let names = list.vec16()?;
        let mut n = Reader {
            bytes: names,
            at: 0,
        };
        while n.at < names.len() {
            let name_type = n.u8()?;
            let name = n.vec16()?;
            if name_type == 0 {
                let name = std::str::from_utf8(name).ok()?;
                return Some(Some(name.to_ascii_lowercase()));
            }
        }
    }
    Some(None)
}

/// Reads from `io` until a whole ClientHello has arrived: its bytes (to be replayed) and
/// its SNI (`None`: none sent). `None` for what is not TLS, or does not finish its hello
/// within `timeout`; the bytes read are then lost, so the connection can only be closed.
pub async fn read_hello<R>(io: &mut R, timeout: Duration) -> Option<(Vec<u8>, Option<String>)>
where
    R: AsyncRead + Unpin,
{
    let mut head = Vec::with_capacity(2048);
    let reading = async {
        let mut chunk = [0u8; 4096];
        loop {
            match client_hello(&head) {
                Hello::Complete { sni } => return Some(sni),
                Hello::NotTls => {
                    debug!("not a TLS ClientHello");
                    return None;
                }
                Hello::Incomplete if head.len() >= MAX_HELLO => return None,
                Hello::Incomplete => {}
            }
            let n = io.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            head.extend_from_slice(&chunk[..n]);
        }
    };
    let sni = tokio::time::timeout(timeout, reading).await.ok()??;
    Some((head, sni))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::RootCertStore;

    use super::*;

    /// A ClientHello as rustls writes it, for `server_name`.
    fn hello(server_name: Option<&str>) -> Vec<u8> {
        let mut roots = RootCertStore::empty();
        let ca = rcgen::CertificateParams::new(Vec::<String>::new())
            .expect("params")
            .self_signed(&rcgen::KeyPair::generate().expect("key"))
            .expect("ca");
        roots.add(ca.der().clone()).expect("root");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(server_name.unwrap_or("10.0.0.1"))
            .expect("name")
            .to_owned();
        let mut client = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
        let mut out = Vec::new();
        client.write_tls(&mut out).expect("hello");
        out
    }

    #[test]
    fn reads_the_server_name_of_a_real_client_hello() {
        let bytes = hello(Some("Shop.Example.com"));
        assert_eq!(
            client_hello(&bytes),
            Hello::Complete {
                sni: Some("shop.example.com".into())
            }
        );
        assert_eq!(
            client_hello(&hello(None)),
            Hello::Complete { sni: None },
            "rustls sends no SNI for an IP address"
        );
        for cut in [0, 1, 4, 5, 40, bytes.len() - 1] {
            assert_eq!(
                client_hello(&bytes[..cut]),
                Hello::Incomplete,
                "{cut} bytes"
            );
        }
        assert_eq!(client_hello(b"GET / HTTP/1.1\r\n"), Hello::NotTls);
    }

    #[test]
    fn a_hello_split_over_two_records_is_read_whole() {
        let bytes = hello(Some("a.example.com"));
        let fragment = &bytes[5..];
        let (first, second) = fragment.split_at(30);
        let record = |part: &[u8]| {
            let mut r = vec![0x16, 0x03, 0x01];
            r.extend_from_slice(&(part.len() as u16).to_be_bytes());
            r.extend_from_slice(part);
            r
        };
        let mut split = record(first);
        split.extend(record(second));
        assert_eq!(
            client_hello(&split),
            Hello::Complete {
                sni: Some("a.example.com".into())
            }
        );
    }

    #[test]
    fn malformed_hellos_are_not_tls() {
        let mut bytes = hello(Some("a.example.com"));
        // A cipher-suite length that runs past the message.
        bytes[5 + 4 + 2 + 32 + 1 + 32] = 0xff;
        assert_ne!(
            client_hello(&bytes),
            Hello::Complete {
                sni: Some("a.example.com".into())
            }
        );
    }
}
