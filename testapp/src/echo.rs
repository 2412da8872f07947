//! Pure TCP echo: nothing is sent before the peer's bytes, so tests can compare byte for byte.

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::net;

pub async fn serve(listener: TcpListener) {
    net::accept_loop(listener, |stream| {
        tokio::spawn(async move {
            // A reset from the peer is an ordinary end of a test connection, not worth a line.
            let _ = echo(stream).await;
        });
    })
    .await;
}

async fn echo(mut stream: TcpStream) -> std::io::Result<()> {
    let (mut rx, mut tx) = stream.split();
    tokio::io::copy(&mut rx, &mut tx).await?;
    // Half-close once the peer has: it reads until EOF to know it has every byte back.
    tx.shutdown().await
}
