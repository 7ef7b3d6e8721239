//! `fulfillment-operator run` must not fail silently: a taken admin address ends the process
//! naming it, an unreachable API server is logged with its URL and keeps `/readyz` unready, and
//! lease timings that would hammer the API server are refused.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A kubeconfig whose API server is a closed loopback port.
fn unreachable_kubeconfig(dir: &std::path::Path) -> (String, String) {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("https://127.0.0.1:{port}");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: '{url}', insecure-skip-tls-verify: true}}\n\
         users:\n- name: u\n  user: {{token: not-a-secret}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u, namespace: ops}}\n\
         current-context: x\n"
    );
    let path = dir.join("kubeconfig");
    std::fs::write(&path, text).unwrap();
    (path.display().to_string(), url)
}

fn operator(kubeconfig: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fulfillment-operator"));
    cmd.arg("run").args(args).env("KUBECONFIG", kubeconfig).env("RUST_LOG", "info").env_remove("POD_NAMESPACE");
    cmd
}

struct Running {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Running {
    fn start(mut cmd: Command) -> Self {
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Self { child, stderr }
    }
    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn an_admin_address_in_use_ends_the_process_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (kubeconfig, _) = unreachable_kubeconfig(dir.path());
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut running = Running::start(operator(&kubeconfig, &["--admin-addr", &addr]));
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = running.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "still running with its admin address taken; log:\n{}", running.log());
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(100));
    let log = running.log();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains(&addr) && log.contains("admin"), "{log}");
}

#[test]
fn an_unreachable_api_server_is_named_and_keeps_readyz_unready() {
    let dir = tempfile::tempdir().unwrap();
    let (kubeconfig, url) = unreachable_kubeconfig(dir.path());
    let admin = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let running = Running::start(operator(
        &kubeconfig,
        &["--admin-addr", &admin, "--lease-duration", "3s", "--renew-deadline", "2s", "--retry-period", "1s"],
    ));
    // Wait for the admin port, then watch /readyz through several failed lease reads.
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&admin, "/healthz") != Some(200) {
        assert!(Instant::now() < deadline, "admin port never answered; log:\n{}", running.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let watch_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < watch_until {
        assert_eq!(get(&admin, "/readyz"), Some(503), "ready while the lease cannot be read; log:\n{}", running.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = running.log();
    assert!(log.contains(&url), "the API server's URL is not in the log:\n{log}");
    assert!(log.contains("onnect"), "the cause is not in the log:\n{log}");
}

#[test]
fn lease_timings_need_floors_and_client_go_relations() {
    for (args, wanted) in [
        (["--lease-duration", "15ns", "--renew-deadline", "10ns", "--retry-period", "2ns"], "--retry-period"),
        (["--lease-duration", "15s", "--renew-deadline", "10s", "--retry-period", "9s"], "1.2 × --retry-period"),
        (["--lease-duration", "10s", "--renew-deadline", "10s", "--retry-period", "2s"], "--renew-deadline"),
        (["--lease-duration", "1500ms", "--renew-deadline", "1s", "--retry-period", "500ms"], "--lease-duration"),
    ] {
        let out = operator("/nonexistent", &args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(wanted), "{args:?}: {stderr}");
    }
}
