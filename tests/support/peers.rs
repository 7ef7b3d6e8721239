//! The autoscalers this operator is compared with, run for real: prometheus-adapter (built from
//! its Go module by `scripts/peers.sh build`, cached by version outside the clone) serving the
//! External metrics API to kube-controller-manager's HorizontalPodAutoscaler controller.
//!
//! The adapter is registered the way a cluster registers it: an `APIService` for
//! `v1beta1.external.metrics.k8s.io` pointing at a Service. No kube-proxy runs here, so that
//! Service is an `ExternalName` Service for `localhost`: the aggregator's service resolver (in
//! `k8s.io/apiserver/pkg/util/proxy`) turns it into `localhost:<APIService port>`, and the
//! availability controller checks no endpoints for it. The control plane must be started with
//! [`super::control_plane::Options::aggregation`] (the front-proxy certificates the adapter
//! trusts).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use super::control_plane::{ControlPlane, Proc};
use super::{free_port, wait_for};

/// Where `scripts/peers.sh` put the binaries: `$FO_PEERS_BIN`, else what `peers.sh build`
/// prints (building prometheus-adapter when missing: a few minutes, once).
pub fn bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Ok(dir) = std::env::var("FO_PEERS_BIN") {
            return PathBuf::from(dir);
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/peers.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg("build")
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("bash runs");
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success() && !dir.is_empty(),
            "prometheus-adapter could not be built (needs Go >= 1.25 and the Go module proxy). Build it with:\n\n    \
             ./scripts/peers.sh build\n"
        );
        PathBuf::from(dir)
    })
    .clone()
}

/// The name of the `APIService` the adapter is registered as.
pub const EXTERNAL_METRICS_API_SERVICE: &str = "v1beta1.external.metrics.k8s.io";

/// prometheus-adapter serving `external.metrics.k8s.io` for a control plane; stopped on drop
/// (the `APIService` stays, pointing at nothing).
pub struct PrometheusAdapter {
    proc: Proc,
    _dir: tempfile::TempDir,
    /// `127.0.0.1:PORT` it serves on (HTTPS, self-signed).
    pub addr: String,
}

impl PrometheusAdapter {
    /// Start the adapter against `prometheus_url` with `config` (its rules file: an
    /// `externalRules` list), register it, and wait until the API server answers through it.
    pub fn start(cp: &ControlPlane, prometheus_url: &str, config: &str) -> Self {
        let dir = tempfile::Builder::new().prefix("fo-prometheus-adapter-").tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("config.yaml"), config).unwrap();
        let port = free_port();
        let kubeconfig = cp.admin_kubeconfig.display().to_string();
        let mut proc = Proc::new(
            "prometheus-adapter",
            bin_dir().join("prometheus-adapter"),
            vec![
                format!("--secure-port={port}"),
                "--bind-address=127.0.0.1".into(),
                format!("--cert-dir={}", d.join("certs").display()),
                format!("--lister-kubeconfig={kubeconfig}"),
                format!("--authentication-kubeconfig={kubeconfig}"),
                format!("--authorization-kubeconfig={kubeconfig}"),
                format!("--prometheus-url={prometheus_url}"),
                format!("--config={}", d.join("config.yaml").display()),
                // Series are discovered every relist: at 1 s a new series is served within a
                // second (the default is 10 minutes).
                "--metrics-relist-interval=1s".into(),
                "--v=1".into(),
            ],
            d,
        );
        proc.start();
        let manifest = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prometheus-adapter"}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "prometheus-adapter", "namespace": "prometheus-adapter"},
             "spec": {"type": "ExternalName", "externalName": "localhost"}},
            {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": EXTERNAL_METRICS_API_SERVICE},
             "spec": {"group": "external.metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100, "versionPriority": 100,
                      // The adapter's certificate is self-signed (as in the upstream manifests).
                      "insecureSkipTLSVerify": true,
                      "service": {"name": "prometheus-adapter", "namespace": "prometheus-adapter", "port": port}}}
        ]});
        let file = d.join("apiservice.json");
        std::fs::write(&file, manifest.to_string()).unwrap();
        cp.kubectl_ok(&["apply", "--server-side", "--force-conflicts", "-f", &file.display().to_string()]);
        let log = proc.log().to_path_buf();
        wait_for(
            &format!(
                "the API server to serve external.metrics.k8s.io through prometheus-adapter (log: {})",
                log.display()
            ),
            Duration::from_secs(120),
            || {
                let (ok, out, _) =
                    cp.kubectl(&["get", "--raw=/apis/external.metrics.k8s.io/v1beta1", "--request-timeout=2s"]);
                if ok && out.contains("APIResourceList") {
                    return Some(());
                }
                std::thread::sleep(Duration::from_millis(250));
                None
            },
        );
        Self { proc, _dir: dir, addr: format!("127.0.0.1:{port}") }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.proc.log()).unwrap_or_default()
    }
}
