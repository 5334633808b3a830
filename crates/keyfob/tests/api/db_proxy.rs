//! A TCP proxy between the app and the real PostgreSQL server, which the test can switch between
//! forwarding and the two ways a database goes away: refusing connections (the server is stopped:
//! nothing listens on the port, and open connections are cut) and a black hole (connections are
//! accepted and open ones stay open, but no byte gets through either way, as with a hung server
//! or a dropped route). A connection caught in a black hole stays dead when the proxy forwards
//! again, as after a failover or a firewall that lost its state: no byte and no reset ever comes,
//! so the client must give up on it by itself. Only new connections work again.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Forward,
    Refuse,
    BlackHole,
}

pub struct DbProxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    task: JoinHandle<()>,
}

impl Drop for DbProxy {
    fn drop(&mut self) {
        // Cuts every relay too: each watches the mode channel, which closes with the sender.
        self.task.abort();
    }
}

impl DbProxy {
    /// Starts forwarding from a free port on 127.0.0.1 to `upstream`.
    pub async fn start(upstream: SocketAddr) -> DbProxy {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, watch) = watch::channel(Mode::Forward);
        let task = tokio::spawn(accept_loop(listener, addr, upstream, watch));
        DbProxy { addr, mode, task }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// `url` with its host and port replaced by the proxy's.
    pub fn url_through(&self, url: &str) -> String {
        let mut parsed = reqwest::Url::parse(url).expect("database URL");
        parsed.set_host(Some(&self.addr.ip().to_string())).unwrap();
        parsed.set_port(Some(self.addr.port())).unwrap();
        parsed.to_string()
    }
}

/// The host and port a database URL names.
pub async fn upstream_of(url: &str) -> SocketAddr {
    let parsed = reqwest::Url::parse(url).expect("database URL");
    let host = parsed.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = parsed.port().unwrap_or(5432);
    tokio::net::lookup_host((host, port))
        .await
        .unwrap()
        .next()
        .expect("database host resolves")
}

fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = TcpSocket::new_v4()?;
    // The port is bound again after each refusing spell.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

async fn accept_loop(
    first: tokio::net::TcpListener,
    addr: SocketAddr,
    upstream: SocketAddr,
    mut mode: watch::Receiver<Mode>,
) {
    let mut listener = Some(first);
    loop {
        let current = *mode.borrow_and_update();
        match (&listener, current) {
            // Nothing listens: connections are refused by the kernel.
            (Some(_), Mode::Refuse) => listener = None,
            (None, Mode::Forward | Mode::BlackHole) => loop {
                match bind(addr) {
                    Ok(l) => {
                        listener = Some(l);
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            },
            _ => {}
        }
        let Some(l) = &listener else {
            if mode.changed().await.is_err() {
                return;
            }
            continue;
        };
        tokio::select! {
            accepted = l.accept() => {
                if let Ok((client, _)) = accepted {
                    tokio::spawn(relay(client, upstream, mode.clone()));
                }
            }
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// `true` while the proxy forwards. In a black hole, holds the connection, silent, until the
/// proxy refuses (or is dropped), then `false`: the connection is to be cut.
async fn forwarding(mode: &mut watch::Receiver<Mode>) -> bool {
    match *mode.borrow_and_update() {
        Mode::Forward => return true,
        Mode::Refuse => return false,
        Mode::BlackHole => {}
    }
    while mode.changed().await.is_ok() {
        if *mode.borrow_and_update() == Mode::Refuse {
            break;
        }
    }
    false
}

async fn relay(client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    // Held, with the client's bytes unread, when accepted in a black hole.
    if !forwarding(&mut mode).await {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = tokio::spawn(pump(client_read, server_write, mode.clone()));
    let down = tokio::spawn(pump(server_read, client_write, mode));
    let _ = tokio::join!(up, down);
}

/// Copies bytes one way while the proxy forwards; stops reading in a black hole, for good; ends
/// (closing its side) when the proxy refuses or either end closes.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut mode: watch::Receiver<Mode>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if !forwarding(&mut mode).await {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        // A chunk read just as the hole opened is lost with the rest.
        if !forwarding(&mut mode).await {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
