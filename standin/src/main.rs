//! `kube-standin`: run the stand-in API server as a process, for tests written outside Rust
//! (the chart tests start the operator with exactly the args the chart renders against it).
//!
//!     kube-standin --kubeconfig OUT.yaml [--crd CRD.yaml]... [--namespace NS]...
//!
//! Prints `ready <url>` once serving; stops on SIGTERM, SIGINT or when stdin closes.

use std::path::PathBuf;

use kube_standin::{Config, StandIn};

fn usage() -> ! {
    eprintln!("usage: kube-standin --kubeconfig OUT.yaml [--crd CRD.yaml]... [--namespace NS]...");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let mut config = Config::default();
    let mut kubeconfig: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--kubeconfig" => kubeconfig = Some(PathBuf::from(value)),
            "--crd" => match std::fs::read_to_string(&value) {
                Ok(text) => config.crds.push(text),
                Err(e) => {
                    eprintln!("cannot read {value}: {e}");
                    std::process::exit(2)
                }
            },
            "--namespace" => config.namespaces.push(value),
            _ => usage(),
        }
    }
    let Some(kubeconfig) = kubeconfig else { usage() };
    let server = match StandIn::start(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot start: {e}");
            std::process::exit(1)
        }
    };
    if let Err(e) = std::fs::write(&kubeconfig, server.kubeconfig_yaml()) {
        eprintln!("cannot write {}: {e}", kubeconfig.display());
        std::process::exit(1)
    }
    println!("ready {}", server.url());
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = stdin_closed => {}
    }
    server.shutdown().await;
}
