//! The processes a benchmark runs: started pinned to the server core, read through /proc, and
//! killed when dropped so that a failed run leaves nothing behind.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The core servers run on; load generators take the other one. With one core, nothing is
/// pinned.
pub const SERVER_CORE: &str = "0";
pub const CLIENT_CORE: &str = "1";

/// The machine's processors, whatever this process is pinned to (scripts/bench.sh pins it to
/// the client core, and `available_parallelism` would then say one).
pub fn cores() -> usize {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let processors = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    processors.max(1)
}

/// A command that runs `program` on `core` when the machine has two or more.
pub fn pinned(core: &str, program: &Path) -> Command {
    if cores() >= 2 {
        let mut command = Command::new("taskset");
        command.arg("-c").arg(core).arg(program);
        command
    } else {
        Command::new(program)
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// A child process that is killed when dropped.
pub struct Server {
    pub name: &'static str,
    child: Child,
}

impl Server {
    pub fn start(name: &'static str, mut command: Command, log: &Path) -> Server {
        // Logs go to a file, as they would to journald: the gate writes a line per decision.
        let log = std::fs::File::create(log).expect("a log file in the work directory");
        let errors = log.try_clone().expect("a second handle on the log");
        let child = command
            .stdout(log)
            .stderr(errors)
            .spawn()
            .unwrap_or_else(|error| panic!("starting {name}: {error}"));
        Server { name, child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `port` accepts connections; panics with the server's name if it exited.
    pub fn wait_for_port(&mut self, port: u16) -> Duration {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited during start-up: {status}", self.name);
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("{} did not open port {port} within 30 s", self.name);
    }
}

impl Drop for Server {
    /// SIGTERM first, so that nginx's master stops its workers rather than orphaning them,
    /// then SIGKILL for whatever is still running after two seconds.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A field of /proc/PID/status in KiB (`VmRSS`, `VmHWM`), 0 when unreadable.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with(field))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

/// A fresh directory under the system temporary directory, removed when dropped.
pub struct WorkDir(pub PathBuf);

impl WorkDir {
    pub fn new() -> WorkDir {
        let path = std::env::temp_dir().join(format!("signal-gate-bench-{}", std::process::id()));
        std::fs::create_dir_all(&path).expect("a work directory");
        WorkDir(path)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
