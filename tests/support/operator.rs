//! The real `fulfillment-operator` binary as a child process, pointed at a kubeconfig.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, http_get, wait_for};

/// A running operator; killed on drop.
pub struct Operator {
    child: Option<Child>,
    /// `127.0.0.1:PORT` of the admin port.
    pub admin: String,
    /// Pod name (lease identity, events' reporting instance).
    pub name: String,
    kubeconfig: PathBuf,
    extra: Vec<String>,
    log: tempfile::NamedTempFile,
}

impl Operator {
    /// Start `run` with fast leader-election timings (lease 3 s) and `extra` flags.
    pub fn start(kubeconfig: &Path, name: &str, extra: &[&str]) -> Self {
        let mut op = Self {
            child: None,
            admin: format!("127.0.0.1:{}", free_port()),
            name: name.to_string(),
            kubeconfig: kubeconfig.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log: tempfile::NamedTempFile::new().unwrap(),
        };
        op.spawn();
        op
    }

    fn spawn(&mut self) {
        let log = self.log.reopen().unwrap();
        let mut args = vec![
            "run".to_string(),
            format!("--admin-addr={}", self.admin),
            format!("--pod-name={}", self.name),
            "--lease-namespace=default".to_string(),
            "--lease-duration=3s".to_string(),
            "--renew-deadline=2s".to_string(),
            "--retry-period=500ms".to_string(),
        ];
        args.extend(self.extra.iter().cloned());
        let child = Command::new(env!("CARGO_BIN_EXE_fulfillment-operator"))
            .args(&args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "info,fulfillment_operator=debug")
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the operator starts");
        self.child = Some(child);
    }

    /// Start again after [`Self::kill`] or [`Self::terminate`], same flags and port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// `/metrics` text (empty while the port is not up).
    pub fn metrics(&self) -> String {
        http_get(&self.admin, "/metrics").map(|(_, b)| b).unwrap_or_default()
    }

    /// The value of the first series line starting with `series` (e.g. `fulfillment_leader`).
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.metrics()
            .lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// Wait until `/readyz` answers 200.
    pub fn wait_ready(&self) {
        wait_for(&format!("operator {} ready", self.name), Duration::from_secs(30), || {
            http_get(&self.admin, "/readyz").filter(|(s, _)| *s == 200).map(|_| ())
        });
    }

    /// SIGKILL, as a crash or an evicted node would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else { return false };
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        for _ in 0..300 {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- operator {} log ---\n{}", self.name, self.log());
        }
    }
}

/// Poll `check` every 50 ms until it holds; fail after `timeout` with `what` and `op`'s log.
pub async fn until(what: &str, timeout: Duration, op: &Operator, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}\n--- operator log ---\n{}",
            op.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
