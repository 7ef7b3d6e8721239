//! A real Kubernetes control plane on loopback, the way controller-runtime's envtest gives Go
//! operators one: etcd, kube-apiserver and kube-controller-manager built from their Go modules by
//! `scripts/control-plane.sh build` (cached by version outside the clone), started with their own
//! CA, serving certificate, admin client certificate (`system:masters`) and service-account
//! signing key, all made here with rcgen.
//!
//! [`ControlPlane::shared`] is one per test binary: started once and kept for the process (its
//! children, like every child the test support starts, are forked by [`super::spawn_tied`] with
//! `PR_SET_PDEATHSIG`, so they die with the test binary even when it is killed), its temporary
//! directory removed at exit. Tests isolate themselves in namespaces
//! ([`super::tenant::Tenant`]). A test that stops parts of the control plane (API server restart,
//! etcd outage, an unreachable remote cluster) starts its own with [`ControlPlane::start`],
//! torn down on drop.
//!
//! When the binaries are missing the test fails with the command that builds them; it never
//! skips.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

use super::{free_port, spawn_tied, wait_for};

/// Where `scripts/control-plane.sh` put the binaries: `$FO_CONTROL_PLANE_BIN`, else what the
/// script's `path` command prints. Panics with the command that builds them.
pub fn bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Ok(dir) = std::env::var("FO_CONTROL_PLANE_BIN") {
            return PathBuf::from(dir);
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/control-plane.sh");
        let out = Command::new("bash").arg(&script).arg("path").output().expect("bash runs");
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success() && !dir.is_empty(),
            "the real control plane (kube-apiserver, etcd, kube-controller-manager, helm) is not built. \
             These tests run against it and never skip. Build it (needs Go >= 1.25; ~15 min cold, cached after) with:\n\n    \
             ./scripts/control-plane.sh build\n\n(./scripts/test.sh does this for you)"
        );
        PathBuf::from(dir)
    })
    .clone()
}

/// Path of one of the control plane's binaries (`etcd`, `kube-apiserver`, `helm`, ...).
pub fn binary(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// A child that dies with the test process (`PR_SET_PDEATHSIG`) and is killed on drop; its
/// output goes to `<dir>/<name>.log`.
pub struct Proc {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    /// A process to be started with [`Self::start`].
    pub fn new(name: &'static str, program: PathBuf, args: Vec<String>, dir: &Path) -> Self {
        Self { name, program, args, envs: Vec::new(), log: dir.join(format!("{name}.log")), child: None }
    }

    /// The same, with `key=value` added to its environment.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Start it (appending to its log).
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child =
            spawn_tied(command).unwrap_or_else(|e| panic!("{} ({}) starts: {e}", self.name, self.program.display()));
        self.child = Some(child);
    }

    /// Kill it and wait for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Certificates and keys of one control plane, PEM-encoded.
pub struct Pki {
    /// The cluster CA (signs the serving and client certificates).
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = name(&[(DnType::CommonName, "fulfillment-operator-test-ca")]);
        let ca_pem = params.self_signed(&key).unwrap().pem();
        Self { ca_pem, issuer: Issuer::new(params, key) }
    }

    /// A certificate signed by the CA: (certificate PEM, key PEM).
    pub fn issue(&self, sans: &[&str], dn: &[(DnType, &str)], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        self.issue_for(sans, dn, &[usage])
    }

    /// [`Self::issue`] with several extended key usages (a certificate that both serves and
    /// authenticates as a client, as KEDA's shared `kedaorg-certs` does).
    pub fn issue_for(
        &self,
        sans: &[&str],
        dn: &[(DnType, &str)],
        usages: &[ExtendedKeyUsagePurpose],
    ) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name = name(dn);
        params.extended_key_usages = usages.to_vec();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn name(parts: &[(DnType, &str)]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for (t, v) in parts {
        dn.push(t.clone(), *v);
    }
    dn
}

/// How to start a private control plane.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Front-proxy certificates for the aggregation layer, so that an extension API server
    /// (prometheus-adapter, KEDA's metrics server) registered by an `APIService` can be reached
    /// through the API server and trust who it says is calling.
    pub aggregation: bool,
}

/// The common name of the front-proxy client certificate (the aggregator's identity towards
/// extension API servers).
pub const FRONT_PROXY_CLIENT: &str = "front-proxy-client";

/// etcd + kube-apiserver + kube-controller-manager on loopback ports.
pub struct ControlPlane {
    dir: tempfile::TempDir,
    /// The cluster's certificates.
    pub pki: Pki,
    /// `https://127.0.0.1:PORT` of the API server.
    pub url: String,
    /// A kubeconfig with the admin client certificate (`system:masters`), for the tests' own
    /// set-up and assertions; the operator never uses it.
    pub admin_kubeconfig: PathBuf,
    /// How long the start took until `/readyz` and the CRDs were served.
    pub started_in: Duration,
    etcd: Proc,
    apiserver: Proc,
    controller_manager: Proc,
}

/// The kube-controller-manager controllers the tests need: Deployments really create their
/// ReplicaSets, namespaces are really deleted, garbage is collected, and the HPA runs.
const CONTROLLERS: &str = "deployment-controller,replicaset-controller,garbage-collector-controller,namespace-controller,horizontal-pod-autoscaler-controller,serviceaccount-controller";

impl ControlPlane {
    /// Start a private control plane (torn down on drop) with the project's CRD installed by
    /// `kubectl apply -f crds/`.
    pub fn start() -> Self {
        Self::start_with(Options::default())
    }

    /// [`Self::start`] with `options`.
    pub fn start_with(options: Options) -> Self {
        let begun = Instant::now();
        let dir = tempfile::Builder::new().prefix("fo-control-plane-").tempdir().unwrap();
        let d = dir.path();
        let pki = Pki::new();
        let (serving_cert, serving_key) = pki.issue(
            &["127.0.0.1", "localhost"],
            &[(DnType::CommonName, "kube-apiserver")],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (admin_cert, admin_key) = pki.issue(
            &[],
            &[(DnType::CommonName, "admin"), (DnType::OrganizationName, "system:masters")],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let sa_key = KeyPair::generate().unwrap();
        let files = [
            ("ca.crt", pki.ca_pem.clone()),
            ("apiserver.crt", serving_cert),
            ("apiserver.key", serving_key),
            ("admin.crt", admin_cert.clone()),
            ("admin.key", admin_key.clone()),
            ("sa.key", sa_key.serialize_pem()),
            ("sa.pub", sa_key.public_key_pem()),
        ];
        for (file, pem) in &files {
            std::fs::write(d.join(file), pem).unwrap();
        }
        let p = |f: &str| d.join(f).display().to_string();
        let mut aggregation_args = Vec::new();
        if options.aggregation {
            // The front proxy: its own CA (as kubeadm makes it), so that no ordinary client
            // certificate can pass for the aggregator.
            let front_proxy = Pki::new();
            let (cert, key) = front_proxy.issue(
                &[],
                &[(DnType::CommonName, FRONT_PROXY_CLIENT)],
                ExtendedKeyUsagePurpose::ClientAuth,
            );
            std::fs::write(d.join("front-proxy-ca.crt"), &front_proxy.ca_pem).unwrap();
            std::fs::write(d.join("front-proxy-client.crt"), cert).unwrap();
            std::fs::write(d.join("front-proxy-client.key"), key).unwrap();
            aggregation_args = vec![
                format!("--requestheader-client-ca-file={}", p("front-proxy-ca.crt")),
                format!("--requestheader-allowed-names={FRONT_PROXY_CLIENT}"),
                "--requestheader-username-headers=X-Remote-User".to_string(),
                "--requestheader-group-headers=X-Remote-Group".to_string(),
                "--requestheader-extra-headers-prefix=X-Remote-Extra-".to_string(),
                format!("--proxy-client-cert-file={}", p("front-proxy-client.crt")),
                format!("--proxy-client-key-file={}", p("front-proxy-client.key")),
            ];
        }
        let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        let url = format!("https://127.0.0.1:{api_port}");
        let etcd = Proc::new(
            "etcd",
            binary("etcd"),
            vec![
                "--name=default".into(),
                format!("--data-dir={}", p("etcd-data")),
                format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"),
                format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"),
                format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
                format!("--initial-cluster=default=http://127.0.0.1:{peer_port}"),
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
            d,
        );
        let apiserver = Proc::new(
            "kube-apiserver",
            binary("kube-apiserver"),
            [
                format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
                format!("--cert-dir={}", p("cert-dir")),
                format!("--tls-cert-file={}", p("apiserver.crt")),
                format!("--tls-private-key-file={}", p("apiserver.key")),
                format!("--client-ca-file={}", p("ca.crt")),
                format!("--secure-port={api_port}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                "--authorization-mode=RBAC".into(),
                "--disable-admission-plugins=ServiceAccount".into(),
                format!("--service-account-issuer={url}"),
                format!("--service-account-key-file={}", p("sa.pub")),
                format!("--service-account-signing-key-file={}", p("sa.key")),
                "--allow-privileged=true".into(),
                "--v=0".into(),
            ]
            .into_iter()
            .chain(aggregation_args)
            .collect(),
            d,
        );
        let kubeconfig = admin_kubeconfig_yaml(&url, &pki.ca_pem, &admin_cert, &admin_key);
        let admin_kubeconfig = d.join("admin.kubeconfig");
        std::fs::write(&admin_kubeconfig, kubeconfig).unwrap();
        let controller_manager = Proc::new(
            "kube-controller-manager",
            binary("kube-controller-manager"),
            vec![
                format!("--kubeconfig={}", admin_kubeconfig.display()),
                format!("--controllers={CONTROLLERS}"),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", free_port()),
                format!("--cert-dir={}", p("kcm-cert-dir")),
                "--horizontal-pod-autoscaler-sync-period=1s".into(),
                "--concurrent-deployment-syncs=2".into(),
                "--v=0".into(),
            ],
            d,
        );
        let mut cp =
            Self { dir, pki, url, admin_kubeconfig, started_in: Duration::ZERO, etcd, apiserver, controller_manager };
        cp.etcd.start();
        cp.apiserver.start();
        cp.wait_ready();
        cp.controller_manager.start();
        cp.kubectl_ok(&["apply", "--server-side", "-f", &crd_dir().display().to_string()]);
        cp.wait_established("crd/fulfillmentplans.fulfillment.dev");
        cp.started_in = begun.elapsed();
        eprintln!("control plane ready at {} in {:.1} s", cp.url, cp.started_in.as_secs_f64());
        cp
    }

    /// The control plane of this test binary, started on first use and shared by its tests
    /// (each in its own namespace). Never stopped by a test.
    pub fn shared() -> &'static ControlPlane {
        static SHARED: OnceLock<&'static ControlPlane> = OnceLock::new();
        SHARED.get_or_init(start_for_the_process)
    }

    /// A second shared control plane for tests that need a remote cluster.
    pub fn shared_remote() -> &'static ControlPlane {
        static REMOTE: OnceLock<&'static ControlPlane> = OnceLock::new();
        REMOTE.get_or_init(start_for_the_process)
    }

    /// Run kubectl as admin; returns (success, stdout, stderr).
    pub fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        kubectl(&self.admin_kubeconfig, args)
    }

    /// Run kubectl as admin and fail the test with its output unless it succeeds; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.kubectl(args);
        assert!(ok, "kubectl {} failed:\n{out}\n{err}", args.join(" "));
        out
    }

    /// Wait until the CRD `name` (`crd/<plural>.<group>`) is Established and discovery lists
    /// it. Polled, not `kubectl wait`: that fails at once on a CRD whose status has no
    /// conditions yet, which a fresh CRD can show for a moment after it is applied.
    pub fn wait_established(&self, name: &str) {
        wait_for(&format!("{name} to be established"), Duration::from_secs(60), || {
            let (_, out, _) =
                self.kubectl(&["get", name, "-o=jsonpath={.status.conditions[?(@.type==\"Established\")].status}"]);
            if out.trim() == "True" {
                return Some(());
            }
            std::thread::sleep(Duration::from_millis(100));
            None
        });
        // Established comes before discovery lists the resource, and clients (kubectl, the
        // tests' admin client) look kinds up in discovery: wait for every served version too.
        let spec = self.kubectl_ok(&[
            "get",
            name,
            "-o=jsonpath={.spec.group} {.spec.names.plural} {.spec.versions[?(@.served==true)].name}",
        ]);
        let mut words = spec.split_whitespace();
        let (Some(group), Some(plural)) = (words.next(), words.next()) else {
            panic!("{name}: no group or plural in {spec:?}");
        };
        for version in words {
            let path = format!("--raw=/apis/{group}/{version}");
            wait_for(&format!("{plural}.{group}/{version} in discovery"), Duration::from_secs(60), || {
                let (ok, out, _) = self.kubectl(&["get", &path]);
                let listed = ok
                    && serde_json::from_str::<serde_json::Value>(&out).is_ok_and(|list| {
                        list["resources"].as_array().is_some_and(|rs| rs.iter().any(|r| r["name"] == plural))
                    });
                if listed {
                    return Some(());
                }
                std::thread::sleep(Duration::from_millis(100));
                None
            });
        }
    }

    fn wait_ready(&self) {
        let what = format!(
            "kube-apiserver /readyz at {} (logs: {} and {})",
            self.url,
            self.etcd.log.display(),
            self.apiserver.log.display()
        );
        wait_for(&what, Duration::from_secs(120), || {
            self.apiserver.child.as_ref()?;
            let (ok, out, _) = self.kubectl(&["get", "--raw=/readyz", "--request-timeout=2s"]);
            if ok && out.trim() == "ok" {
                return Some(());
            }
            std::thread::sleep(Duration::from_millis(200));
            None
        });
    }

    /// Stop the API server (connections refused until [`Self::start_apiserver`]).
    pub fn stop_apiserver(&mut self) {
        self.apiserver.stop();
    }

    /// Start the API server again on the same port and data, and wait until it is ready.
    pub fn start_apiserver(&mut self) {
        self.apiserver.start();
        self.wait_ready();
    }

    /// Stop etcd: the API server stays up but cannot read or write.
    pub fn stop_etcd(&mut self) {
        self.etcd.stop();
    }

    /// Start etcd again on the same data directory, and wait until the API server is ready.
    pub fn start_etcd(&mut self) {
        self.etcd.start();
        self.wait_ready();
    }

    /// The directory holding this control plane's certificates, kubeconfigs and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Process ids of (etcd, kube-apiserver, kube-controller-manager).
    pub fn pids(&self) -> [Option<u32>; 3] {
        [self.etcd.pid(), self.apiserver.pid(), self.controller_manager.pid()]
    }
}

/// Start a control plane that lives as long as the test binary (its children are forked by
/// [`spawn_tied`]'s thread, so their parent-death signal fires only when the process ends);
/// remove its directory at exit.
fn start_for_the_process() -> &'static ControlPlane {
    let cp: &'static ControlPlane = Box::leak(Box::new(ControlPlane::start()));
    remove_at_exit(cp.dir.path().to_path_buf(), cp.pids());
    cp
}

/// Directories and processes to clean up when the test binary exits normally.
static AT_EXIT: std::sync::Mutex<Vec<(PathBuf, [Option<u32>; 3])>> = std::sync::Mutex::new(Vec::new());

fn remove_at_exit(dir: PathBuf, pids: [Option<u32>; 3]) {
    extern "C" fn cleanup() {
        if let Ok(list) = AT_EXIT.lock() {
            for (dir, pids) in list.iter() {
                for pid in pids.iter().flatten() {
                    // SAFETY: plain kill(2) of our own children.
                    unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
                }
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
    let mut list = AT_EXIT.lock().unwrap();
    if list.is_empty() {
        // SAFETY: registering a plain extern "C" fn.
        unsafe { libc::atexit(cleanup) };
    }
    list.push((dir, pids));
}

/// Run the machine's kubectl with `kubeconfig`; returns (success, stdout, stderr).
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("kubectl")
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(args)
        .output()
        .expect("kubectl is installed");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// The project's generated CRDs.
pub fn crd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("crds")
}

fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn admin_kubeconfig_yaml(url: &str, ca: &str, cert: &str, key: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n    certificate-authority-data: {}\n\
         users:\n- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n\
         contexts:\n- name: test\n  context:\n    cluster: test\n    user: admin\ncurrent-context: test\n",
        b64(ca),
        b64(cert),
        b64(key)
    )
}

/// A kubeconfig for `server` with a bearer token (the operator's: a ServiceAccount's token
/// behind the fault proxy, or a remote cluster's).
pub fn token_kubeconfig_yaml(server: &str, ca: Option<&str>, token: Option<&str>) -> String {
    let ca = ca.map(|c| format!("    certificate-authority-data: {}\n", b64(c))).unwrap_or_default();
    let user = match token {
        Some(t) => format!("  user:\n    token: {t}\n"),
        None => "  user: {}\n".to_string(),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n{ca}\
         users:\n- name: u\n{user}contexts:\n- name: test\n  context:\n    cluster: test\n    user: u\ncurrent-context: test\n"
    )
}

/// The directory of a Go module in the module cache (`go mod download -json`), for upstream
/// CRDs that ship inside Go modules (Gateway API, Istio). Never copied into this repository.
pub fn go_module_dir(module: &str) -> PathBuf {
    static CACHE: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    if let Some((_, dir)) = CACHE.lock().unwrap().iter().find(|(m, _)| m == module) {
        return dir.clone();
    }
    let work = tempfile::tempdir().unwrap();
    let out = Command::new("go")
        .args(["mod", "download", "-json", module])
        .current_dir(work.path())
        .env("GOFLAGS", "-mod=mod")
        .output()
        .unwrap_or_else(|e| panic!("`go mod download {module}`: Go is needed for the upstream CRDs ({e})"));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("go mod download -json {module}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    let dir = PathBuf::from(info["Dir"].as_str().unwrap_or_else(|| panic!("{module}: {info}")));
    CACHE.lock().unwrap().push((module.to_string(), dir.clone()));
    dir
}
