//! TCP sink for throughput runs: reads and discards everything, counting nothing, so the
//! receiving side costs one read syscall per buffer and no more.

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use crate::net;

/// Big reads mean fewer syscalls per gigabyte; the kernel hands over what it has queued.
const READ_LEN: usize = 256 * 1024;

pub async fn serve(listener: TcpListener) {
    net::accept_loop(listener, |stream| {
        tokio::spawn(async move {
            // A reset at the end of a run is how some generators stop, not worth a line.
            let _ = drain(stream).await;
        });
    })
    .await;
}

async fn drain(mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0; READ_LEN];
    // Ends when the peer closes; a server connection lives as long as its client keeps it.
    while stream.read(&mut buf).await? > 0 {}
    Ok(())
}
