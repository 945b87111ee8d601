//! A throw-away Postgres cluster for the Postgres tests: one per test binary, shared by its
//! tests (each uses tables of its own), stopped and removed when the test binary exits.
//!
//! `PostgresServer::shared` runs `initdb` in a temporary directory (trust authentication), then
//! `postgres` on a free port of 127.0.0.1, as the `postgres` user when the tests run as root
//! (Postgres refuses to run as root) and as the current user otherwise. A watchdog process stops
//! the server and removes the directory once the test process is gone, however it ends. The
//! binaries are found with `pg_config --bindir`, else in `/usr/lib/postgresql/*/bin`. Where they
//! are missing the tests are skipped with a loud message — except under `CI=true`, where that
//! fails them.

#![allow(dead_code, unreachable_pub)]

use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a starting server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running cluster.
pub struct PostgresServer {
    port: u16,
    dir: PathBuf,
    /// The server (through `runuser` when root) and the watchdog: never waited for, since the
    /// watchdog ends them once this process is gone.
    _processes: [Child; 2],
}

impl PostgresServer {
    /// The cluster of this test binary, started on first use; `None` (after saying so on
    /// stderr) when Postgres is not installed and this is not CI.
    ///
    /// # Panics
    ///
    /// When Postgres is missing under `CI=true`, or does not start.
    pub fn shared() -> Option<&'static Self> {
        static SERVER: OnceLock<Option<PostgresServer>> = OnceLock::new();
        SERVER.get_or_init(Self::start).as_ref()
    }

    fn start() -> Option<Self> {
        let Some(bindir) = bindir() else {
            if is_ci() {
                panic!(
                    "Postgres is not installed, and CI=true: the Postgres tests must run in CI \
                     (install it with `apt-get install -y postgresql`)"
                );
            }
            // Straight to the process's stderr, past the test harness's capture.
            let _ = std::io::stderr().write_all(
                b"\n*** SKIPPED: Postgres (initdb, postgres) is not installed; the Postgres \
                  tests did not run (Debian: apt-get install postgresql) ***\n",
            );
            return None;
        };
        let as_root = is_root();
        let dir = tempfile::Builder::new()
            .prefix("idem-postgres-")
            .tempdir()
            .expect("temporary directory")
            .keep();
        if as_root {
            let uid = id("-u");
            let gid = id("-g");
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .expect("hand the cluster's directory to the postgres user");
        }
        // First of all, so that the directory goes whenever this process ends from now on.
        let watchdog = watchdog(&dir);
        let data = dir.join("data");
        let initdb = run_as(as_root, &bindir.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ])
            .stdout(Stdio::null())
            .output()
            .expect("initdb runs");
        assert!(
            initdb.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        let port = free_port();
        let log = std::fs::File::create(dir.join("postgres.log")).expect("log file");
        if as_root {
            std::os::unix::fs::chown(dir.join("postgres.log"), Some(id("-u")), Some(id("-g")))
                .expect("log file owned by postgres");
        }
        let postgres = run_as(as_root, &bindir.join("postgres"))
            .arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(port.to_string())
            .arg("-c")
            .arg("listen_addresses=127.0.0.1")
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.display()))
            .args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("postgres starts");
        let server = Self {
            port,
            dir,
            _processes: [postgres, watchdog],
        };
        server.wait_ready(&bindir);
        Some(server)
    }

    fn wait_ready(&self, bindir: &Path) {
        let started = Instant::now();
        loop {
            let ready = Command::new(bindir.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|status| status.success());
            if ready {
                return;
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "postgres did not start within {START_TIMEOUT:?}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of the `postgres` database, as its superuser.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }
}

/// `<prefix>_<16 hex digits>`: a table name no other test uses.
pub fn unique_table(prefix: &str) -> String {
    format!("{prefix}_{:016x}", rand::random::<u64>())
}

fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true" || value == "1")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// `id <flag> postgres`, as a number.
fn id(flag: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .expect("id runs");
    assert!(
        out.status.success(),
        "running the tests as root needs a `postgres` user (Debian's postgresql package makes one)"
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a numeric id")
}

/// `program`, as the postgres user when root.
fn run_as(as_root: bool, program: &Path) -> Command {
    if as_root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// The directory of `initdb` and `postgres`.
fn bindir() -> Option<PathBuf> {
    let usable = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if usable(&dir) {
            return Some(dir);
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin")))
        .filter(|dir| usable(dir))
        .collect();
    // The newest version: the directories are named by major version.
    found.sort_by_key(|dir| {
        dir.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop()
}

/// A free port on 127.0.0.1 (free when asked: the server binds it right after).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Starts a process that waits for this test process to end, then stops the server (fast
/// shutdown, then SIGKILL after 10 s) and removes `dir`, however the test process ended.
fn watchdog(dir: &Path) -> Child {
    let script = r#"
        while kill -0 "$1" 2>/dev/null; do sleep 0.5; done
        pid=$(head -n 1 "$2/data/postmaster.pid" 2>/dev/null)
        if [ -n "$pid" ]; then
            kill -INT "$pid" 2>/dev/null
            for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null
        fi
        rm -rf "$2"
    "#;
    // A process group of its own, so that a signal to the test's group (a `timeout`, a ^C) does
    // not take the watchdog down with the test.
    Command::new("sh")
        .process_group(0)
        .arg("-c")
        .arg(script)
        .arg("watchdog")
        .arg(std::process::id().to_string())
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the watchdog starts")
}
