//! Test support: a real Prometheus (Debian's package) on a loopback port, an exporter the test
//! controls, a backfilled TSDB for history, and a tiny HTTP stub for what Prometheus cannot do
//! (check a bearer token, answer slowly).
//!
//! Tests that need Prometheus start it; when the binary is missing they fail with the command
//! that installs it, never skip.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, OnceLock, mpsc},
    thread,
    time::{Duration, Instant},
};

/// Find a binary: `$ENV_VAR`, then `PATH`. Panics with the install command when absent.
pub fn binary(name: &str, env_var: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env_var) {
        return PathBuf::from(p);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let candidate = Path::new(dir).join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{name}` is not installed: these tests run a real Prometheus. Install it with \
         `apt-get install -y prometheus` (the README's test command, ./scripts/test.sh, does this) or set {env_var}."
    );
}

/// Spawn `command` so that its child dies with this process, even when the process is killed
/// (`PR_SET_PDEATHSIG`). That signal follows the thread that forked the child, not the process:
/// a child forked from a test's thread or a runtime's short-lived worker would die with that
/// thread. So every such child is forked by one thread that lives as long as the process.
pub fn spawn_tied(command: Command) -> std::io::Result<Child> {
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("child-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
                    unsafe {
                        command.pre_exec(|| {
                            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                            Ok(())
                        });
                    }
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("the spawner thread starts");
        tx
    });
    let (reply, answer) = mpsc::channel();
    spawner.send((command, reply)).expect("the spawner thread runs");
    answer.recv().expect("the spawner thread answers")
}

/// A free loopback port (bound and released; good enough on a test machine).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Poll `check` until it returns Some or the deadline passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Plain-HTTP GET on loopback, returning (status, body).
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

/// The stub's answer: (status, content type, body), or None to hold the connection unanswered.
pub type StubReply = Option<(u16, &'static str, String)>;

/// A request as the stub saw it.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    /// Request line, e.g. `GET /api/v1/query?query=up HTTP/1.1`.
    pub line: String,
    /// Header lines, lower-cased names.
    pub headers: Vec<(String, String)>,
}

impl SeenRequest {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A one-thread-per-connection HTTP/1.1 stub: the handler gives (status, content type, body),
/// or None to hold the connection open without answering.
pub struct HttpStub {
    /// `127.0.0.1:PORT`.
    pub addr: SocketAddr,
    /// Every request seen.
    pub seen: Arc<Mutex<Vec<SeenRequest>>>,
}

impl HttpStub {
    pub fn start(handler: impl Fn(&SeenRequest) -> StubReply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(handler);
        let seen2 = seen.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let handler = handler.clone();
                let seen = seen2.clone();
                thread::spawn(move || serve(stream, &*handler, &seen));
            }
        });
        Self { addr, seen }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn serve(
    stream: TcpStream,
    handler: &(dyn Fn(&SeenRequest) -> StubReply + Send + Sync),
    seen: &Mutex<Vec<SeenRequest>>,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = Vec::new();
        let mut content_length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                let n = n.trim().to_ascii_lowercase();
                if n == "content-length" {
                    content_length = v.trim().parse().unwrap_or(0);
                }
                headers.push((n, v.trim().to_string()));
            }
        }
        let mut body = vec![0; content_length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let request = SeenRequest { line: line.trim_end().to_string(), headers };
        seen.lock().unwrap().push(request.clone());
        match handler(&request) {
            Some((status, content_type, body)) => {
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if stream.write_all(reply.as_bytes()).is_err() {
                    return;
                }
            }
            None => {
                thread::sleep(Duration::from_secs(60));
                return;
            }
        }
    }
}

/// An exporter whose `/metrics` text the test sets.
pub struct Exporter {
    stub: HttpStub,
    text: Arc<Mutex<String>>,
}

impl Exporter {
    pub fn start() -> Self {
        let text = Arc::new(Mutex::new(String::new()));
        let t = text.clone();
        let stub = HttpStub::start(move |_| Some((200, "text/plain; version=0.0.4", t.lock().unwrap().clone())));
        Self { stub, text }
    }

    /// Replace the exposition text, e.g. `orders_per_minute 8500\n`.
    pub fn set(&self, text: &str) {
        *self.text.lock().unwrap() = text.to_string();
    }

    /// `host:port` for a scrape config.
    pub fn target(&self) -> String {
        self.stub.addr.to_string()
    }
}

/// A running Prometheus; stopped on drop.
pub struct Prometheus {
    child: Option<Child>,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    dir: tempfile::TempDir,
    data: PathBuf,
    args: Vec<String>,
}

impl Prometheus {
    /// Start scraping `targets` every second.
    pub fn scraping(targets: &[String]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        Self::launch(dir, data, targets, None)
    }

    /// Backfill `openmetrics` (lines `name{labels} value unix_seconds`, ending in `# EOF`) with
    /// promtool and start Prometheus on the result.
    pub fn backfilled(openmetrics: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let input = dir.path().join("history.om");
        std::fs::write(&input, openmetrics).unwrap();
        let out = Command::new(binary("promtool", "PROMTOOL_BIN"))
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&input)
            .arg(&data)
            .output()
            .expect("promtool runs");
        assert!(out.status.success(), "promtool failed: {}", String::from_utf8_lossy(&out.stderr));
        Self::launch(dir, data, &[], None)
    }

    /// Start serving HTTPS with `cert_pem`/`key_pem` (Prometheus's own web TLS config).
    pub fn with_tls(cert_pem: &str, key_pem: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::write(dir.path().join("tls.crt"), cert_pem).unwrap();
        std::fs::write(dir.path().join("tls.key"), key_pem).unwrap();
        let web = format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
            dir.path().join("tls.crt").display(),
            dir.path().join("tls.key").display()
        );
        std::fs::write(dir.path().join("web.yml"), web).unwrap();
        Self::launch(dir, data, &[], Some("web.yml"))
    }

    /// Start with Prometheus's own web configuration (`--web.config.file`: basic auth users,
    /// TLS, client certificates): `web_yaml` may name the `files` (name, content) written next
    /// to it as `{dir}/name`; `extra_args` such as `--web.route-prefix=/prometheus`.
    pub fn with_web(web_yaml: &str, files: &[(&str, &str)], extra_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let web = web_yaml.replace("{dir}", &dir.path().display().to_string());
        std::fs::write(dir.path().join("web.yml"), web).unwrap();
        let mut p = Self::launch_with(dir, data, &[], Some("web.yml"), extra_args);
        p.restart();
        p
    }

    fn launch(dir: tempfile::TempDir, data: PathBuf, targets: &[String], web_config: Option<&str>) -> Self {
        let mut p = Self::launch_with(dir, data, targets, web_config, &[]);
        p.restart();
        p
    }

    fn launch_with(
        dir: tempfile::TempDir,
        data: PathBuf,
        targets: &[String],
        web_config: Option<&str>,
        extra_args: &[&str],
    ) -> Self {
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: test\n    static_configs:\n      - targets: [{}]\n",
            targets.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut args = vec![
            format!("--config.file={}", config_path.display()),
            format!("--storage.tsdb.path={}", data.display()),
            "--storage.tsdb.retention.time=5y".to_string(),
            format!("--web.listen-address={addr}"),
            "--web.enable-lifecycle".to_string(),
            "--log.level=warn".to_string(),
        ];
        if let Some(web) = web_config {
            args.push(format!("--web.config.file={}", dir.path().join(web).display()));
        }
        args.extend(extra_args.iter().map(|a| a.to_string()));
        Self { child: None, addr, dir, data, args }
    }

    /// Start (again) with the same data, config and port.
    pub fn restart(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("prometheus.log")).unwrap();
        let mut command = Command::new(binary("prometheus", "PROMETHEUS_BIN"));
        command.args(&self.args).stdout(Stdio::null()).stderr(log);
        let child = spawn_tied(command).expect("prometheus starts");
        self.child = Some(child);
        // With a web config (TLS, auth) or a route prefix, /-/ready is not at the root or not
        // open: a listening port is enough; the tests then poll a query.
        let tls = self.args.iter().any(|a| a.starts_with("--web.config.file") || a.starts_with("--web.route-prefix"));
        let addr = self.addr.clone();
        let log_path = self.dir.path().join("prometheus.log");
        wait_for(&format!("Prometheus on {addr} (log: {})", log_path.display()), Duration::from_secs(30), || {
            if tls {
                TcpStream::connect(&addr).ok().map(|_| ())
            } else {
                http_get(&addr, "/-/ready").filter(|(s, _)| *s == 200).map(|_| ())
            }
        });
    }

    /// Kill it (as a crash would); [`Self::restart`] brings it back.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.kill();
    }
}
pub mod checkout;
pub mod control_plane;
pub mod kubelet;
pub mod operator;
pub mod peers;
pub mod proxy;
pub mod runtime;
pub mod strimzi;
pub mod tenant;
pub mod versus;

/// A CRD of our own with a `/scale` subresource, in the shape of Strimzi's `KafkaNodePool`
/// (`spec.replicas`, `status.replicas`). No registry this project can reach serves Strimzi's own
/// CRD, so the brokers' custom resource is this one.
pub fn kafka_node_pool_crd() -> String {
    serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "kafkanodepools.kafka.strimzi.io"},
        "spec": {
            "group": "kafka.strimzi.io", "scope": "Namespaced",
            "names": {"kind": "KafkaNodePool", "plural": "kafkanodepools", "singular": "kafkanodepool", "listKind": "KafkaNodePoolList"},
            "versions": [{
                "name": "v1beta2", "served": true, "storage": true,
                "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.selector"}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {"replicas": {"type": "integer", "minimum": 0}}},
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {"replicas": {"type": "integer"}, "selector": {"type": "string"}}}
                }}}
            }]
        }
    })
    .to_string()
}

/// Apply a CRD (JSON or YAML text, or a path) server-side, idempotently, and wait until it is
/// Established.
pub fn ensure_crd(cp: &control_plane::ControlPlane, manifest: &str) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), manifest).unwrap();
    let path = file.path().display().to_string();
    cp.kubectl_ok(&["apply", "--server-side", "--force-conflicts", "-f", &path]);
    let names = cp.kubectl_ok(&["get", "-f", &path, "-o", "name"]);
    for name in names.lines() {
        cp.wait_established(name);
    }
}

/// A Deployment `namespace/name` with `replicas` (its pods stay Pending: no kubelet runs).
pub fn deployment(namespace: &str, name: &str, replicas: u32) -> serde_json::Value {
    workload("Deployment", namespace, name, replicas)
}

/// A StatefulSet `namespace/name` with `replicas`.
pub fn statefulset(namespace: &str, name: &str, replicas: u32) -> serde_json::Value {
    let mut s = workload("StatefulSet", namespace, name, replicas);
    s["spec"]["serviceName"] = serde_json::json!(name);
    s
}

fn workload(kind: &str, namespace: &str, name: &str, replicas: u32) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "apps/v1", "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "w", "image": "registry.test/worker"}]}}}
    })
}

/// A KafkaNodePool `namespace/name` with `replicas` brokers.
pub fn node_pool(namespace: &str, name: &str, replicas: u32) -> serde_json::Value {
    serde_json::json!({"apiVersion": "kafka.strimzi.io/v1beta2", "kind": "KafkaNodePool",
           "metadata": {"name": name, "namespace": namespace}, "spec": {"replicas": replicas, "roles": ["broker"]}})
}

/// A Secret `namespace/name` holding `kubeconfig` under the key `kubeconfig`.
pub fn kubeconfig_secret(namespace: &str, name: &str, kubeconfig: &str) -> serde_json::Value {
    let secret = k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        data: Some([("kubeconfig".to_string(), k8s_openapi::ByteString(kubeconfig.as_bytes().to_vec()))].into()),
        ..Default::default()
    };
    let mut secret = serde_json::to_value(&secret).unwrap();
    secret["apiVersion"] = serde_json::json!("v1");
    secret["kind"] = serde_json::json!("Secret");
    secret
}

/// The Gateway API module whose CRDs the route tests install (read from the Go module cache at
/// test time; never copied into this repository).
pub const GATEWAY_API_MODULE: &str = "sigs.k8s.io/gateway-api@v1.4.1";
/// The Istio API module whose `VirtualService` CRD the route tests install.
pub const ISTIO_API_MODULE: &str = "istio.io/api@v1.32.0";

/// Gateway API's own standard-channel CRD for `plural` (e.g. `httproutes`).
pub fn gateway_api_crd(plural: &str) -> String {
    let path = control_plane::go_module_dir(GATEWAY_API_MODULE)
        .join(format!("config/crd/standard/gateway.networking.k8s.io_{plural}.yaml"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Istio's own CRD for `plural` (e.g. `virtualservices`), picked out of the module's generated
/// bundle of every Istio CRD.
pub fn istio_crd(plural: &str) -> String {
    let path = control_plane::go_module_dir(ISTIO_API_MODULE).join("kubernetes/customresourcedefinitions.gen.yaml");
    let bundle = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let wanted = format!("name: {plural}.networking.istio.io");
    bundle
        .split("\n---")
        .find(|doc| doc.lines().any(|l| l.trim() == wanted))
        .unwrap_or_else(|| panic!("no {plural} CRD in {}", path.display()))
        .to_string()
}

/// The ExternalDNS module whose `DNSEndpoint` CRD the DNS router tests install (v0.20.0: later
/// versions need a newer Go than this machine's).
pub const EXTERNAL_DNS_MODULE: &str = "sigs.k8s.io/external-dns@v0.20.0";

/// ExternalDNS's own `DNSEndpoint` CRD, from its Go module.
pub fn external_dns_crd() -> String {
    let path = control_plane::go_module_dir(EXTERNAL_DNS_MODULE)
        .join("config/crd/standard/dnsendpoints.externaldns.k8s.io.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
