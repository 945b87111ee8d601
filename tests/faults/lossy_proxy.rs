//! A TCP proxy on `127.0.0.1:0` that loses a share of the connections it carries, the way a
//! flaky network, a load balancer restart or a NAT timeout does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::Dice;

/// What the proxy does to one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Carries it both ways untouched.
    Pass,
    /// Closes the client's connection before anything is forwarded: the server never sees the
    /// request.
    RefuseEarly,
    /// Forwards the whole request, then closes both connections when the first response byte
    /// arrives: the server did the work, the client gets nothing.
    DropResponse,
    /// Forwards the request, then after a short random pause cuts both the client's and the
    /// server's connection, before any response byte: the server may be mid-request or
    /// mid-handler when its client vanishes.
    CutBoth,
    /// Forwards part of the response, then cuts both connections: the client gets a truncated
    /// answer.
    CutMidResponse,
}

/// How many connections met each fault.
#[derive(Debug, Default)]
pub struct FaultCounts {
    pub pass: AtomicUsize,
    pub refuse_early: AtomicUsize,
    pub drop_response: AtomicUsize,
    pub cut_both: AtomicUsize,
    pub cut_mid_response: AtomicUsize,
}

impl FaultCounts {
    fn count(&self, fault: Fault) {
        let counter = match fault {
            Fault::Pass => &self.pass,
            Fault::RefuseEarly => &self.refuse_early,
            Fault::DropResponse => &self.drop_response,
            Fault::CutBoth => &self.cut_both,
            Fault::CutMidResponse => &self.cut_mid_response,
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }

    /// `(pass, refuse_early, drop_response, cut_both, cut_mid_response)`.
    pub fn snapshot(&self) -> [usize; 5] {
        [
            &self.pass,
            &self.refuse_early,
            &self.drop_response,
            &self.cut_both,
            &self.cut_mid_response,
        ]
        .map(|c| c.load(Ordering::SeqCst))
    }

    /// Connections that met a fault.
    pub fn faults(&self) -> usize {
        self.snapshot()[1..].iter().sum()
    }
}

/// The proxy; stops accepting when dropped.
pub struct LossyProxy {
    pub addr: SocketAddr,
    pub counts: Arc<FaultCounts>,
    task: JoinHandle<()>,
}

impl LossyProxy {
    /// A proxy in front of `upstream` that faults a connection with probability `fault_rate`,
    /// spreading the faults evenly over the four kinds.
    pub async fn start(upstream: SocketAddr, fault_rate: f64, dice: Arc<Dice>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let counts = Arc::new(FaultCounts::default());
        let task = tokio::spawn({
            let counts = Arc::clone(&counts);
            async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    let fault = if dice.chance(fault_rate) {
                        [
                            Fault::RefuseEarly,
                            Fault::DropResponse,
                            Fault::CutBoth,
                            Fault::CutMidResponse,
                        ][dice.below(4) as usize]
                    } else {
                        Fault::Pass
                    };
                    counts.count(fault);
                    let pause = dice.millis(20);
                    tokio::spawn(carry(client, upstream, fault, pause));
                }
            }
        });
        Self { addr, counts, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Carries one connection, injecting `fault`. Returning drops (closes) both sockets.
async fn carry(mut client: TcpStream, upstream: SocketAddr, fault: Fault, pause: Duration) {
    if fault == Fault::RefuseEarly {
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    if fault == Fault::Pass {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        return;
    }
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    // Client → server runs for as long as the connection lives.
    let upstream_copy = async {
        let mut buf = [0u8; 4096];
        let mut forwarded = false;
        loop {
            match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return forwarded,
                Ok(n) => {
                    if server_write.write_all(&buf[..n]).await.is_err() {
                        return forwarded;
                    }
                    forwarded = true;
                }
            }
        }
    };
    // Server → client, with the fault.
    let downstream = async {
        let mut buf = [0u8; 4096];
        match fault {
            Fault::DropResponse => {
                // Wait for the first response byte, then lose it and everything after.
                let _ = server_read.read(&mut buf).await;
            }
            Fault::CutMidResponse => {
                if let Ok(n) = server_read.read(&mut buf).await
                    && n > 1
                {
                    let _ = client_write.write_all(&buf[..n / 2]).await;
                    let _ = client_write.flush().await;
                }
            }
            Fault::CutBoth => {
                // Give the request a moment to get (partly) through, then cut before any
                // response byte is passed on.
                tokio::time::sleep(pause).await;
            }
            Fault::Pass | Fault::RefuseEarly => unreachable!("handled above"),
        }
    };
    tokio::select! {
        _ = upstream_copy => {}
        () = downstream => {}
    }
}
