//! Certificate rotation under a live tunnel, with 3-second certificates.
mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use weft_core::hbone::{HbonePool, PoolConfig};
use weft_core::identity::CertificateSerial;

const LIFETIME: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_outlives_two_rotations_and_new_streams_use_the_new_certificates() {
    bounded(async {
        let mesh = mesh(LIFETIME).await;
        let (echo_addr, _echo) = echo_server().await;
        let server = hbone_server(&mesh.server_manager, &mesh.trust, server_id()).await;
        let pool = HbonePool::new(
            mesh.client_manager.clone(),
            mesh.trust.clone(),
            PoolConfig::default(),
        );

        let mut long = pool
            .connect(connect_request(server.addr, echo_addr), dial)
            .await
            .expect("first stream opens");
        let first = long.info().clone();
        let first_client_cert = mesh
            .client_manager
            .current(&client_id())
            .expect("client certificate");
        assert_eq!(first.local_serial, *first_client_cert.serial());

        // Keep the stream busy while the certificates rotate: at least two client
        // rotations, and past the expiry of the certificate the connection was made with.
        let mut client_serials: HashSet<CertificateSerial> = HashSet::new();
        let mut server_serials: HashSet<CertificateSerial> = HashSet::new();
        let started = Instant::now();
        let mut round = 0u32;
        loop {
            let payload = format!("round {round}").into_bytes();
            assert_eq!(
                echo(&mut long, &payload).await,
                payload,
                "the long stream stopped flowing in round {round}"
            );
            if let Some(c) = mesh.client_manager.current(&client_id()) {
                client_serials.insert(c.serial().clone());
            }
            if let Some(c) = mesh.server_manager.current(&server_id()) {
                server_serials.insert(c.serial().clone());
            }
            let expired = SystemTime::now() > first_client_cert.not_after();
            if client_serials.len() >= 3 && server_serials.len() >= 3 && expired {
                break;
            }
            round += 1;
            assert!(
                round < 150 && started.elapsed() < Duration::from_secs(20),
                "certificates did not rotate twice within 20 s: {} client and {} server serials",
                client_serials.len(),
                server_serials.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            started.elapsed() > LIFETIME / 2,
            "rotations came implausibly early"
        );

        // A new stream goes over a new connection made with the current certificates.
        let mut fresh = pool
            .connect(connect_request(server.addr, echo_addr), dial)
            .await
            .expect("stream after rotation opens");
        assert_eq!(echo(&mut fresh, b"after rotation").await, b"after rotation");
        let requests = server.requests();
        assert_eq!(requests.len(), 2);
        let (old_seen, new_seen) = (&requests[0], &requests[1]);
        assert_eq!(old_seen.peer.serial, first.local_serial);
        assert_ne!(
            new_seen.peer.serial, first.local_serial,
            "the server saw the old client certificate on the new stream"
        );
        assert!(client_serials.contains(&new_seen.peer.serial));
        assert_eq!(
            server.accepted(),
            2,
            "the new stream needed a new connection"
        );

        // The first stream still flows after the new connection exists.
        assert_eq!(echo(&mut long, b"still here").await, b"still here");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_sees_the_servers_new_certificate_on_a_new_connection() {
    bounded(async {
        let mesh = mesh(LIFETIME).await;
        let (echo_addr, _echo) = echo_server().await;
        let server = hbone_server(&mesh.server_manager, &mesh.trust, server_id()).await;
        let pool = HbonePool::new(
            mesh.client_manager.clone(),
            mesh.trust.clone(),
            PoolConfig::default(),
        );
        let mut first = pool
            .connect(connect_request(server.addr, echo_addr), dial)
            .await
            .expect("opens");
        assert_eq!(echo(&mut first, b"x").await, b"x");
        let first_server_serial = first.info().peer.serial.clone();
        drop(first);

        // Wait (bounded) until the server has rotated past the certificate it presented.
        let deadline = Instant::now() + Duration::from_secs(10);
        while mesh
            .server_manager
            .current(&server_id())
            .is_some_and(|c| *c.serial() == first_server_serial)
        {
            assert!(Instant::now() < deadline, "the server never rotated");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // ... and the client too, which retires the pooled connection.
        let first_client = mesh.client_manager.current(&client_id()).expect("cert");
        let deadline = Instant::now() + Duration::from_secs(10);
        while mesh
            .client_manager
            .current(&client_id())
            .is_some_and(|c| c.serial() == first_client.serial())
        {
            assert!(Instant::now() < deadline, "the client never rotated");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut second = pool
            .connect(connect_request(server.addr, echo_addr), dial)
            .await
            .expect("opens");
        assert_eq!(echo(&mut second, b"y").await, b"y");
        assert_ne!(second.info().peer.serial, first_server_serial);
        let current = mesh.server_manager.current(&server_id()).expect("cert");
        // The server may have rotated once more in between; it presented one of its own.
        assert_eq!(second.info().peer.identity, server_id());
        assert!(
            second.info().peer.serial == *current.serial()
                || second.info().peer.not_after <= current.not_after()
        );
    })
    .await;
}
