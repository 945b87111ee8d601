//! A throw-away Redis Cluster for the Redis tests: three masters, no replicas, on 127.0.0.1.
//!
//! `RedisCluster::start` runs three `redis-server --cluster-enabled yes` on free ports (each node
//! also needs its port + 10000 for the cluster bus), joins them with `redis-cli --cluster
//! create`, waits until every node reports `cluster_state:ok`, and kills them when dropped. Like
//! the single server, a missing `redis-server` or `redis-cli` skips the tests loudly, except under
//! `CI=true`, where it fails them.

#![allow(dead_code, unreachable_pub)]

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use idem_runtime::store::{RedisStore, RedisStoreBuilder};

/// The number of masters.
const NODES: usize = 3;

/// How long a starting cluster may take to report itself healthy.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How many sets of ports are tried before giving up (another test may take a port first).
const ATTEMPTS: usize = 5;

/// Three cluster nodes, each a child process with a directory of its own.
pub struct RedisCluster {
    children: Vec<Child>,
    ports: Vec<u16>,
    dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts a cluster; `None` (after saying so on stderr) when `redis-server` or `redis-cli` is
    /// not installed and this is not CI.
    ///
    /// # Panics
    ///
    /// When a binary is missing under `CI=true`, or the cluster does not come up.
    pub fn start() -> Option<Self> {
        let mut last_error = String::new();
        for _ in 0..ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("idem-redis-cluster-")
                .tempdir()
                .expect("temporary directory");
            let mut cluster = Self {
                children: Vec::new(),
                ports: free_ports(),
                dir,
            };
            match cluster.spawn() {
                Ok(()) => return Some(cluster),
                Err(error) if error.kind() == ErrorKind::NotFound => return skip(),
                // A port was taken between the check and the start: try others.
                Err(error) => last_error = error.to_string(),
            }
        }
        panic!("could not start a Redis Cluster in {ATTEMPTS} attempts: {last_error}");
    }

    /// The URLs of the nodes.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect()
    }

    /// A builder for a store on this cluster, with a prefix of its own.
    pub fn builder(&self) -> RedisStoreBuilder {
        RedisStore::builder()
            .cluster(self.urls())
            .prefix(format!("idem-test:{:016x}:", rand::random::<u64>()))
    }

    /// A store on this cluster.
    pub async fn store(&self) -> RedisStore {
        self.builder()
            .build()
            .await
            .expect("connects to the test cluster")
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        for (index, port) in self.ports.clone().into_iter().enumerate() {
            let node_dir = self.dir.path().join(format!("node-{index}"));
            std::fs::create_dir(&node_dir)?;
            let log = std::fs::File::create(node_dir.join("redis.log"))?;
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes", "--cluster-config-file"])
                .arg(node_dir.join("nodes.conf"))
                .args(["--cluster-node-timeout", "2000"])
                .args(["--save", "", "--appendonly", "no", "--dir"])
                .arg(&node_dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()?;
            self.children.push(child);
        }
        self.wait(ping, "answer PING")?;
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for port in &self.ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let output = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()?;
        if !output.status.success() {
            return Err(std::io::Error::other(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        self.wait(cluster_ok, "report cluster_state:ok")
    }

    /// Waits until every node passes `check`, or a node exits, or the time is up.
    fn wait(&mut self, check: impl Fn(u16) -> bool, what: &str) -> std::io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.ports.iter().all(|&port| check(port)) {
                return Ok(());
            }
            for child in &mut self.children {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(std::io::Error::other(format!(
                        "a cluster node exited with {status}: {}",
                        self.logs()
                    )));
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "the Redis Cluster did not {what} within {START_TIMEOUT:?}: {}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn logs(&self) -> String {
        (0..NODES)
            .map(|index| {
                let path = self.dir.path().join(format!("node-{index}/redis.log"));
                std::fs::read_to_string(path).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn stop(&mut self) {
        for mut child in self.children.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn skip() -> Option<RedisCluster> {
    if std::env::var("CI").is_ok_and(|value| value == "true" || value == "1") {
        panic!(
            "redis-server or redis-cli is not installed, and CI=true: the Redis Cluster tests must \
             run in CI (install them with `apt-get install -y redis-server`)"
        );
    }
    let _ = std::io::stderr().write_all(
        b"\n*** SKIPPED: redis-server or redis-cli is not installed; the Redis Cluster tests did \
          not run (install redis-server to run them) ***\n",
    );
    None
}

/// Ports whose cluster-bus port (+10000) is free too, chosen at random below 55535.
fn free_ports() -> Vec<u16> {
    let mut ports = Vec::with_capacity(NODES);
    while ports.len() < NODES {
        let port = 20_000 + rand::random::<u16>() % 35_000;
        if !ports.contains(&port)
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()
        {
            ports.push(port);
        }
    }
    ports
}

/// Sends one inline command and reads what comes back (at most a few kilobytes).
fn ask(port: u16, command: &[u8]) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    stream.write_all(command).ok()?;
    let mut answer = vec![0u8; 4096];
    let read = stream.read(&mut answer).ok()?;
    Some(String::from_utf8_lossy(&answer[..read]).into_owned())
}

fn ping(port: u16) -> bool {
    ask(port, b"PING\r\n").is_some_and(|answer| answer.starts_with("+PONG"))
}

fn cluster_ok(port: u16) -> bool {
    ask(port, b"CLUSTER INFO\r\n").is_some_and(|answer| answer.contains("cluster_state:ok"))
}
