//! A loopback TCP proxy the test controls, put between the processes and a
//! backend (S3, a channel) to make that backend refuse, reset or hang
//! without touching it. It runs on its own threads, so a test that blocks
//! (on `pg_ctl`, say) does not stall it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with new connections and open ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forwards both ways.
    Pass,
    /// Listens no more: connecting is refused (`ECONNREFUSED`); open
    /// connections go on until [`Proxy::reset_open`].
    Refuse,
    /// Accepts and never answers; open connections stop forwarding.
    Hang,
}

#[derive(Clone, Copy, Debug)]
struct State {
    mode: Mode,
    /// Bumped by [`Proxy::reset_open`]: connections older than it reset.
    resets: u64,
    /// Bytes per second forwarded to clients, per connection; `None`: as
    /// fast as it comes. Makes a download last long enough to cut it.
    throttle: Option<u64>,
}

/// A proxy from `127.0.0.1:<port>` to `upstream`; stops when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    pub upstream: SocketAddr,
    state: watch::Sender<State>,
    accepted: Arc<AtomicUsize>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Proxy {
    /// Starts a proxy to `upstream` in [`Mode::Pass`].
    pub fn start(upstream: SocketAddr) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-proxy")
            .enable_all()
            .build()
            .expect("the proxy's runtime starts");
        // Bound here, outside any runtime: a test's runtime may be calling.
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("the proxy listens on loopback");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let addr = listener.local_addr().expect("a bound address");
        let (state, _) = watch::channel(State {
            mode: Mode::Pass,
            resets: 0,
            throttle: None,
        });
        let accepted = Arc::new(AtomicUsize::new(0));
        runtime.spawn(accept_loop(
            listener,
            addr,
            upstream,
            state.clone(),
            accepted.clone(),
        ));
        Self {
            addr,
            upstream,
            state,
            accepted,
            runtime: Some(runtime),
        }
    }

    /// A proxy to the host and port of `url` (`http://127.0.0.1:9000`).
    pub fn to_url(url: &str) -> Self {
        let url = url::Url::parse(url).expect("an URL");
        let host = url.host_str().expect("a host");
        let port = url.port_or_known_default().expect("a port");
        let upstream = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
            .expect("the host resolves")
            .next()
            .expect("an address");
        Self::start(upstream)
    }

    /// `url` with its host and port replaced by the proxy's.
    pub fn rewrite(&self, url: &str) -> String {
        let mut url = url::Url::parse(url).expect("an URL");
        url.set_ip_host(self.addr.ip()).expect("a host can be set");
        url.set_port(Some(self.addr.port()))
            .expect("a port can be set");
        url.to_string()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn mode(&self) -> Mode {
        self.state.borrow().mode
    }

    pub fn pass(&self) {
        self.set_mode(Mode::Pass);
    }

    pub fn refuse(&self) {
        self.set_mode(Mode::Refuse);
    }

    pub fn hang(&self) {
        self.set_mode(Mode::Hang);
    }

    /// Refuses new connections and resets the open ones: the backend is gone.
    pub fn cut(&self) {
        self.refuse();
        self.reset_open();
    }

    /// Resets (RST) every connection open now, hung ones included.
    pub fn reset_open(&self) {
        self.state.send_modify(|state| state.resets += 1);
    }

    /// Forwards at most `bytes_per_second` to each client (`None`: no limit).
    pub fn throttle(&self, bytes_per_second: Option<u64>) {
        self.state
            .send_modify(|state| state.throttle = bytes_per_second);
    }

    /// How many connections the proxy has accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn set_mode(&self, mode: Mode) {
        self.state.send_modify(|state| state.mode = mode);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn accept_loop(
    listener: std::net::TcpListener,
    addr: SocketAddr,
    upstream: SocketAddr,
    state: watch::Sender<State>,
    accepted: Arc<AtomicUsize>,
) {
    let mut changes = state.subscribe();
    let mut listener = TcpListener::from_std(listener).ok();
    loop {
        let mode = changes.borrow_and_update().mode;
        if mode == Mode::Refuse {
            // Closing the listening socket is what makes connecting refused.
            listener = None;
            if changes.changed().await.is_err() {
                return;
            }
            continue;
        }
        let Some(current) = &listener else {
            match TcpListener::bind(addr).await {
                Ok(bound) => listener = Some(bound),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
            continue;
        };
        tokio::select! {
            accept = current.accept() => {
                let Ok((client, _)) = accept else { continue };
                accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(connection(client, upstream, state.subscribe()));
            }
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// One client connection: forwarded, hung or reset as the state says.
async fn connection(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut changes: watch::Receiver<State>,
) {
    let State { mode, resets, .. } = *changes.borrow_and_update();
    if mode == Mode::Hang {
        hang_until_reset(&mut changes, resets).await;
        reset(&client);
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        reset(&client);
        return;
    };
    let mut to_server = vec![0u8; 64 * 1024];
    let mut to_client = vec![0u8; 64 * 1024];
    let mut client_open = true;
    let mut server_open = true;
    let hung = {
        let (mut client_read, mut client_write) = client.split();
        let (mut server_read, mut server_write) = server.split();
        loop {
            if !client_open && !server_open {
                break false;
            }
            tokio::select! {
                read = client_read.read(&mut to_server), if client_open => match read {
                    Ok(0) | Err(_) => {
                        client_open = false;
                        let _ = server_write.shutdown().await;
                    }
                    Ok(count) => {
                        if server_write.write_all(&to_server[..count]).await.is_err() {
                            break false;
                        }
                    }
                },
                read = server_read.read(&mut to_client), if server_open => match read {
                    Ok(0) | Err(_) => {
                        server_open = false;
                        let _ = client_write.shutdown().await;
                    }
                    Ok(count) => {
                        let throttle = changes.borrow().throttle;
                        if let Some(rate) = throttle.filter(|rate| *rate > 0) {
                            // Small pieces, so a cut lands mid-transfer.
                            for piece in to_client[..count].chunks(8 * 1024) {
                                if client_write.write_all(piece).await.is_err() {
                                    break;
                                }
                                let pause = piece.len() as f64 / rate as f64;
                                tokio::time::sleep(Duration::from_secs_f64(pause)).await;
                            }
                        } else if client_write.write_all(&to_client[..count]).await.is_err() {
                            break false;
                        }
                    }
                },
                changed = changes.changed() => {
                    let now = *changes.borrow_and_update();
                    if changed.is_err() || now.resets != resets {
                        reset(&client);
                        return;
                    }
                    if now.mode == Mode::Hang {
                        break true;
                    }
                }
            }
        }
    };
    if hung {
        // Stop forwarding, keep both sockets open: the client waits.
        hang_until_reset(&mut changes, resets).await;
        reset(&client);
    }
}

async fn hang_until_reset(changes: &mut watch::Receiver<State>, resets: u64) {
    loop {
        if changes.borrow_and_update().resets != resets {
            return;
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// Closes with RST instead of FIN: the peer reads "connection reset".
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}
