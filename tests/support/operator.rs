//! The real `fulfillment-operator` binary as a child process, run exactly the way the chart runs
//! it: the container's args and environment are read from the Deployment that `helm install`
//! created in the real API server (no kubelet runs its pod, so the test runs the binary), and it
//! talks to the API server as the release's ServiceAccount, through the tenant's fault proxy.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::tenant::{RELEASE, Tenant};
use super::{free_port, http_get, spawn_tied, wait_for};

/// A running operator; killed on drop.
pub struct Operator {
    child: Option<Child>,
    /// `127.0.0.1:PORT` of the admin port.
    pub admin: String,
    /// Pod name (lease identity, events' reporting instance).
    pub name: String,
    kubeconfig: PathBuf,
    /// The container's args and env as the chart installed them.
    chart_args: Vec<String>,
    chart_env: Vec<(String, String)>,
    extra: Vec<String>,
    log: tempfile::NamedTempFile,
}

impl Operator {
    /// Start `run` for `tenant` with the chart's args and env, and `extra` flags replacing the
    /// chart's flag of the same name.
    pub fn start(tenant: &Tenant, name: &str, extra: &[&str]) -> Self {
        let mut op = Self {
            child: None,
            admin: format!("127.0.0.1:{}", free_port()),
            name: name.to_string(),
            kubeconfig: tenant.operator_kubeconfig.clone(),
            chart_args: Vec::new(),
            chart_env: Vec::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log: tempfile::NamedTempFile::new().unwrap(),
        };
        let deployment = tenant
            .kube
            .get("apps/v1", "Deployment", Some(&tenant.system_ns), RELEASE)
            .expect("helm install created the operator's Deployment");
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        op.chart_args = container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
        for e in container["env"].as_array().unwrap() {
            let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.name") => op.name.clone(),
                Some("metadata.namespace") => tenant.system_ns.clone(),
                Some(other) => panic!("the chart sets an env var from {other}, which the test cannot resolve"),
                None => e["value"].as_str().unwrap_or_default().to_string(),
            };
            op.chart_env.push((e["name"].as_str().unwrap().to_string(), value));
        }
        op.spawn();
        op
    }

    /// Start `run` against any cluster in `kubeconfig` (the kind/k3d tier), with `extra` flags
    /// and no leader-election namespace of a chart release.
    pub fn start_in_cluster(kubeconfig: &std::path::Path, name: &str, extra: &[&str]) -> Self {
        let mut op = Self {
            child: None,
            admin: format!("127.0.0.1:{}", free_port()),
            name: name.to_string(),
            kubeconfig: kubeconfig.to_path_buf(),
            chart_args: vec!["run".into(), "--admin-addr=".into()],
            chart_env: vec![("POD_NAME".into(), name.into()), ("RUST_LOG".into(), "info".into())],
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log: tempfile::NamedTempFile::new().unwrap(),
        };
        op.spawn();
        op
    }

    fn spawn(&mut self) {
        let log = self.log.reopen().unwrap();
        let flag = |a: &str| a.split('=').next().unwrap_or_default().to_string();
        let mut args: Vec<String> = self
            .chart_args
            .iter()
            .filter(|a| !self.extra.iter().any(|e| flag(e) == flag(a)))
            .map(|a| if a.starts_with("--admin-addr=") { format!("--admin-addr={}", self.admin) } else { a.clone() })
            .collect();
        args.extend(self.extra.iter().cloned());
        let mut command = Command::new(env!("CARGO_BIN_EXE_fulfillment-operator"));
        command
            .args(&args)
            .env_clear()
            .envs(self.chart_env.iter().map(|(k, v)| (k, v)))
            .env("KUBECONFIG", &self.kubeconfig)
            .stdout(Stdio::null())
            .stderr(log);
        let child = spawn_tied(command).expect("the operator starts");
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
