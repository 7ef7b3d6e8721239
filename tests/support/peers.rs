//! The autoscalers this operator is compared with, run for real: prometheus-adapter (built from
//! its Go module by `scripts/peers.sh build`, cached by version outside the clone) serving the
//! External metrics API to kube-controller-manager's HorizontalPodAutoscaler controller; and KEDA
//! (`scripts/peers.sh build-keda`): its operator, which turns a `ScaledObject` into an HPA and
//! answers for its Prometheus triggers, and its metrics API server, which serves that HPA's
//! External metrics by asking the operator over mutual-TLS gRPC, as in a cluster.
//!
//! Each is registered the way a cluster registers it: an `APIService` for
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

use rcgen::{DnType, ExtendedKeyUsagePurpose};

use super::control_plane::{ControlPlane, Proc};
use super::{free_port, wait_for};

/// Where `scripts/peers.sh` put the binaries: `$FO_PEERS_BIN`, else what `peers.sh build`
/// prints (building prometheus-adapter when missing: a few minutes, once).
pub fn bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| peers_sh("build", "prometheus-adapter")).clone()
}

/// [`bin_dir`] with KEDA's operator and metrics server in it too (`peers.sh build-keda`: about
/// ten minutes on two cores, once).
pub fn keda_bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = peers_sh("build-keda", "KEDA");
        assert!(
            dir.join("keda").is_file() && dir.join("keda-adapter").is_file(),
            "{} has no keda and keda-adapter. Build them with:\n\n    ./scripts/peers.sh build-keda\n",
            dir.display()
        );
        dir
    })
    .clone()
}

/// `$FO_PEERS_BIN`, else the directory `scripts/peers.sh <command>` prints (after building
/// what is missing).
fn peers_sh(command: &str, what: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("FO_PEERS_BIN") {
        return PathBuf::from(dir);
    }
    let out = peers_script(command);
    let dir = out.lines().last().unwrap_or_default().trim();
    assert!(
        !dir.is_empty(),
        "{what} could not be built (needs Go >= 1.25 and the Go module proxy). Build it with:\n\n    ./scripts/peers.sh {command}\n"
    );
    PathBuf::from(dir)
}

/// What `scripts/peers.sh <command>` prints on stdout; panics (its stderr shown) if it fails.
fn peers_script(command: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/peers.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(command)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "`scripts/peers.sh {command}` failed (it needs Go >= 1.25 and the Go module proxy); see above"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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
        register_external_metrics(cp, "prometheus-adapter", "prometheus-adapter", port, proc.log(), d);
        Self { proc, _dir: dir, addr: format!("127.0.0.1:{port}") }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.proc.log()).unwrap_or_default()
    }
}

/// Register what serves `external.metrics.k8s.io` on `localhost:port` as the cluster's
/// [`EXTERNAL_METRICS_API_SERVICE`] (behind an `ExternalName` Service `namespace/service` for
/// `localhost`), and wait until the API server answers through it.
fn register_external_metrics(cp: &ControlPlane, namespace: &str, service: &str, port: u16, log: &Path, dir: &Path) {
    let manifest = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": service, "namespace": namespace},
         "spec": {"type": "ExternalName", "externalName": "localhost"}},
        {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": EXTERNAL_METRICS_API_SERVICE},
         "spec": {"group": "external.metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100, "versionPriority": 100,
                  // Both servers' certificates are self-made (as in the upstream manifests).
                  "insecureSkipTLSVerify": true,
                  "service": {"name": service, "namespace": namespace, "port": port}}}
    ]});
    let file = dir.join("apiservice.json");
    std::fs::write(&file, manifest.to_string()).unwrap();
    cp.kubectl_ok(&["apply", "--server-side", "--force-conflicts", "-f", &file.display().to_string()]);
    wait_for(
        &format!("the API server to serve external.metrics.k8s.io through {service} (log: {})", log.display()),
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
}

/// The KEDA version `scripts/peers.sh` builds (its `KEDA_VERSION`, the one source).
pub fn keda_version() -> String {
    let script = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/peers.sh")).unwrap();
    script
        .lines()
        .find_map(|l| l.strip_prefix("KEDA_VERSION=\"${KEDA_VERSION:-")?.strip_suffix("}\""))
        .map_or_else(|| "unknown".into(), str::to_string)
}

/// KEDA on a control plane: its CRDs (from its Go module), its operator and its metrics API
/// server registered as the cluster's External metrics API; stopped on drop.
///
/// Out of a cluster, what a Pod would get from its manifest is given explicitly: the kubeconfig,
/// `WATCH_NAMESPACE` (all), `POD_NAMESPACE` and `KEDA_CLUSTER_OBJECT_NAMESPACE` (`keda`), and
/// the certificates the operator and the metrics server share for their gRPC link (one
/// certificate for `localhost`, signed by the cluster CA, for both server and client use; in a
/// cluster KEDA makes and rotates them itself, which needs Services and webhooks this set-up has
/// no use for: `--enable-cert-rotation=false`). Every port is a free loopback port.
pub struct Keda {
    operator: Proc,
    adapter: Proc,
    _dir: tempfile::TempDir,
}

impl Keda {
    /// Start KEDA on `cp` (which must have [`super::control_plane::Options::aggregation`]), and
    /// wait until the API server serves External metrics through it.
    pub fn start(cp: &ControlPlane) -> Self {
        let bin = keda_bin_dir();
        let crds = peers_script("keda-crds");
        let crds = crds.trim();
        cp.kubectl_ok(&["apply", "--server-side", "-f", crds]);
        cp.wait_established("crd/scaledobjects.keda.sh");
        let dir = tempfile::Builder::new().prefix("fo-keda-").tempdir().unwrap();
        let d = dir.path();
        let certs = d.join("certs");
        std::fs::create_dir_all(&certs).unwrap();
        let (cert, key) = cp.pki.issue_for(
            &["localhost", "127.0.0.1"],
            &[(DnType::CommonName, "keda")],
            &[ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        );
        std::fs::write(certs.join("ca.crt"), &cp.pki.ca_pem).unwrap();
        std::fs::write(certs.join("tls.crt"), cert).unwrap();
        std::fs::write(certs.join("tls.key"), key).unwrap();
        let kubeconfig = cp.admin_kubeconfig.display().to_string();
        let with_env = |p: Proc| {
            p.env("KUBECONFIG", &kubeconfig)
                .env("WATCH_NAMESPACE", "")
                .env("POD_NAMESPACE", "keda")
                .env("KEDA_CLUSTER_OBJECT_NAMESPACE", "keda")
        };
        let grpc = free_port();
        let cert_dir = certs.display().to_string();
        let mut operator = with_env(Proc::new(
            "keda-operator",
            bin.join("keda"),
            vec![
                format!("--metrics-bind-address=127.0.0.1:{}", free_port()),
                format!("--health-probe-bind-address=127.0.0.1:{}", free_port()),
                format!("--metrics-service-bind-address=127.0.0.1:{grpc}"),
                format!("--cert-dir={cert_dir}"),
                format!("--ca-dir={}", d.join("custom-ca").display()),
                "--enable-cert-rotation=false".into(),
                "--leader-elect=false".into(),
                "--zap-log-level=info".into(),
                "--zap-encoder=console".into(),
            ],
            d,
        ));
        cp.kubectl_ok(&["create", "namespace", "keda"]);
        operator.start();
        let port = free_port();
        let mut adapter = with_env(Proc::new(
            "keda-adapter",
            bin.join("keda-adapter"),
            vec![
                format!("--secure-port={port}"),
                "--bind-address=127.0.0.1".into(),
                format!("--cert-dir={cert_dir}"),
                format!("--tls-cert-file={cert_dir}/tls.crt"),
                format!("--tls-private-key-file={cert_dir}/tls.key"),
                format!("--lister-kubeconfig={kubeconfig}"),
                format!("--authentication-kubeconfig={kubeconfig}"),
                format!("--authorization-kubeconfig={kubeconfig}"),
                format!("--port={}", free_port()),
                format!("--metrics-service-address=localhost:{grpc}"),
                "--zap-log-level=info".into(),
                "--zap-encoder=console".into(),
            ],
            d,
        ));
        adapter.start();
        register_external_metrics(cp, "keda", "keda-metrics-apiserver", port, adapter.log(), d);
        Self { operator, adapter, _dir: dir }
    }

    /// Both logs so far.
    pub fn log(&self) -> String {
        let read = |p: &Proc| std::fs::read_to_string(p.log()).unwrap_or_default();
        format!("--- keda operator ---\n{}\n--- keda metrics server ---\n{}", read(&self.operator), read(&self.adapter))
    }
}
