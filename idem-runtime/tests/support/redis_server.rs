//! A throw-away `redis-server` for the Redis tests, and the stores they run against.
//!
//! `RedisServer::start` runs `redis-server` on a unix socket in a temporary directory, with no
//! persistence (`--save "" --appendonly no`), and kills it when dropped. It can be stopped,
//! restarted on the same socket, paused and resumed, for the fault tests.
//!
//! `RedisTarget::get` is what the other Redis tests use: the server named by `REDIS_URL` when set,
//! else a throw-away one. Where no `redis-server` exists at all the tests are skipped with a loud
//! message — except under `CI=true`, where a missing server fails the test.

#![allow(dead_code, unreachable_pub)]

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use idem_runtime::store::{RedisStore, RedisStoreBuilder};

/// How long a starting server may take to answer `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A `redis-server` child process on a unix socket of its own.
pub struct RedisServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server; `None` (after saying so on stderr) when `redis-server` is not installed and
    /// this is not CI.
    ///
    /// # Panics
    ///
    /// When `redis-server` is missing under `CI=true`, or does not start.
    pub fn start() -> Option<Self> {
        let dir = tempfile::Builder::new()
            .prefix("idem-redis-")
            .tempdir()
            .expect("temporary directory");
        let mut server = Self { child: None, dir };
        match server.spawn() {
            Ok(()) => Some(server),
            Err(error) if error.kind() == ErrorKind::NotFound => {
                if is_ci() {
                    panic!(
                        "redis-server is not installed, and CI=true: the Redis tests must run in CI \
                         (install it with `apt-get install -y redis-server`)"
                    );
                }
                // Straight to the process's stderr, past the test harness's capture, so that
                // the skip is seen in a normal `cargo test` run.
                let _ = std::io::stderr().write_all(
                    b"\n*** SKIPPED: redis-server is not installed and REDIS_URL is not set; \
                      the Redis tests did not run (install redis-server to run them) ***\n",
                );
                None
            }
            Err(error) => panic!("could not start redis-server: {error}"),
        }
    }

    /// The socket path.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// The URL of the server.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let socket = self.socket();
        // A server killed with SIGKILL leaves its socket file behind.
        let _ = std::fs::remove_file(&socket);
        let log = std::fs::File::create(self.dir.path().join("redis.log"))?;
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(&socket)
            .args([
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
            ])
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        self.wait_ready();
        Ok(())
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if ping(&self.socket()) {
                return;
            }
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("redis-server exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer within {START_TIMEOUT:?}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Kills the server (as a crash would) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same socket.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn().expect("redis-server restarts");
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is answered.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("server is running");
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a paused server too.
        self.stop();
    }
}

fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true" || value == "1")
}

/// Whether a server answers `PING` on `socket`.
fn ping(socket: &std::path::Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut answer = [0u8; 7];
    stream.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
}

/// The Redis the non-fault tests run against: `REDIS_URL`, or a throw-away server.
pub struct RedisTarget {
    url: String,
    _server: Option<RedisServer>,
}

impl RedisTarget {
    /// `None` when the tests must be skipped (see [`RedisServer::start`]).
    pub fn get() -> Option<Self> {
        if let Ok(url) = std::env::var("REDIS_URL")
            && !url.is_empty()
        {
            return Some(Self { url, _server: None });
        }
        let server = RedisServer::start()?;
        Some(Self {
            url: server.url(),
            _server: Some(server),
        })
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A builder for a store on this server, with a prefix no other test uses (so that tests may
    /// share a server given by `REDIS_URL`).
    pub fn builder(&self) -> RedisStoreBuilder {
        RedisStore::builder()
            .url(self.url.clone())
            .prefix(unique_prefix())
    }

    /// A store on this server with a prefix of its own.
    pub async fn store(&self) -> RedisStore {
        self.builder()
            .build()
            .await
            .expect("connects to the test Redis")
    }

    /// A plain client, to look at or tamper with what the store wrote.
    pub async fn raw(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url.as_str())
            .expect("valid URL")
            .get_multiplexed_async_connection()
            .await
            .expect("connects to the test Redis")
    }
}

/// `idem-test:<random>:`.
pub fn unique_prefix() -> String {
    format!("idem-test:{:016x}:", rand::random::<u64>())
}
