//! A loopback TCP proxy in front of etcd, to cut or silence the network between a client and
//! etcd while the test itself still reaches etcd directly (a partition, not a mock: etcd and the
//! client are real, only the wire between them is interrupted).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Pass,
    /// Connections are reset and new ones closed at once.
    Cut,
    /// Connections stay open but nothing is forwarded (a silent partition).
    Blackhole,
}

struct State {
    mode: Mode,
    forwarders: Vec<JoinHandle<()>>,
    held: Vec<TcpStream>,
}

/// Forwards `127.0.0.1:<port>` to a target address.
pub struct Proxy {
    port: u16,
    state: Arc<Mutex<State>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Starts forwarding to `target` (e.g. `127.0.0.1:2379`).
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            mode: Mode::Pass,
            forwarders: Vec::new(),
            held: Vec::new(),
        }));
        let shared = Arc::clone(&state);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let mode = shared.lock().unwrap().mode;
                match mode {
                    Mode::Cut => drop(client),
                    Mode::Blackhole => shared.lock().unwrap().held.push(client),
                    Mode::Pass => {
                        let task = tokio::spawn(async move {
                            let Ok(mut upstream) = TcpStream::connect(target).await else {
                                return;
                            };
                            let mut client = client;
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                            let _ = client.shutdown().await;
                        });
                        shared.lock().unwrap().forwarders.push(task);
                    }
                }
            }
        });
        Proxy {
            port,
            state,
            accept,
        }
    }

    /// Starts forwarding to the client port of `etcd`.
    pub async fn to(etcd: &super::Etcd) -> Proxy {
        let target: SocketAddr = etcd
            .endpoint()
            .trim_start_matches("http://")
            .parse()
            .unwrap();
        Proxy::start(target).await
    }

    /// `http://127.0.0.1:<proxy port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A coordinator connected to etcd through this proxy.
    pub async fn coordinator(&self) -> coordination::Coordinator {
        let options = coordination::CoordinatorOptions::new([self.endpoint()]);
        coordination::Coordinator::connect(options)
            .await
            .expect("connect through the proxy")
    }

    /// Resets every connection and refuses new ones until [`restore`](Self::restore).
    pub fn cut(&self) {
        let mut state = self.state.lock().unwrap();
        state.mode = Mode::Cut;
        for task in state.forwarders.drain(..) {
            task.abort();
        }
        state.held.clear();
    }

    /// Stops forwarding without closing anything: connections hang, as with a silent partition.
    pub fn blackhole(&self) {
        let mut state = self.state.lock().unwrap();
        state.mode = Mode::Blackhole;
        // Aborting a forwarder drops its sockets; a hung peer would keep them open, so this
        // mode is only approximated for existing connections: they are reset. New connections
        // are accepted and then hang.
        for task in state.forwarders.drain(..) {
            task.abort();
        }
    }

    /// Forwards again.
    pub fn restore(&self) {
        let mut state = self.state.lock().unwrap();
        state.mode = Mode::Pass;
        state.held.clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
