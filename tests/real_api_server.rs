//! The CRD, the examples and the invalid plans on a real kube-apiserver: the generated CRD is
//! accepted (structural schema, every CEL rule within the cost budget), every example in
//! `examples/` is applied with the machine's real `kubectl` and accepted, and every invalid plan
//! is refused by the server with the same rule text `fulfillment-operator validate` gives — one
//! source of truth, proven against the server that enforces it.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use support::control_plane::ControlPlane;

const EXAMPLE: &str = include_str!("../examples/orders-plan.yaml");

/// `kubectl apply` of `yaml` on the shared control plane: Ok(stdout) or Err(stderr).
fn apply(cp: &ControlPlane, yaml: &str, dry_run: bool) -> Result<String, String> {
    let mut args = vec![format!("--kubeconfig={}", cp.admin_kubeconfig.display()), "apply".into()];
    if dry_run {
        args.push("--dry-run=server".into());
    }
    args.extend(["--validate=strict".into(), "-f".into(), "-".into()]);
    let mut child = Command::new("kubectl")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl is installed");
    child.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into())
    }
}

/// `fulfillment-operator validate` on `yaml`: Ok(stdout) or Err(stderr).
fn validate(yaml: &str) -> Result<String, String> {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), yaml).unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_fulfillment-operator")).arg("validate").arg(file.path()).output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into())
    }
}

fn namespaces_of(yaml: &str) -> Vec<String> {
    yaml.lines()
        .filter_map(|l| l.strip_prefix("  namespace: "))
        .map(|n| n.split('#').next().unwrap().trim().to_string())
        .collect()
}

#[test]
fn the_crd_is_served_with_its_schema_and_columns() {
    let cp = ControlPlane::shared();
    let crd = cp.kubectl_ok(&["get", "crd", "fulfillmentplans.fulfillment.dev", "-o", "json"]);
    let crd: serde_json::Value = serde_json::from_str(&crd).unwrap();
    let established = crd["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "Established" && c["status"] == "True");
    assert!(established, "{}", crd["status"]);
    assert!(
        crd["status"]["conditions"].as_array().unwrap().iter().all(|c| c["type"] != "NonStructuralSchema"),
        "structural: {}",
        crd["status"]
    );
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "fp");
    // The server serves what `crds/` holds, which is what the Rust types generate.
    let generated: serde_json::Value = serde_yaml::from_str(&fulfillment_operator::plan::crd_yaml()).unwrap();
    let mut differences = Vec::new();
    diff("", &crd["spec"]["versions"][0]["schema"], &generated["spec"]["versions"][0]["schema"], &mut differences);
    assert!(differences.is_empty(), "the served schema differs from the generated one:\n{}", differences.join("\n"));
}

#[test]
fn every_example_is_accepted_by_kubectl_apply() {
    let cp = ControlPlane::shared();
    support::ensure_crd(cp, &support::gateway_api_crd("httproutes"));
    support::ensure_crd(cp, &support::istio_crd("virtualservices"));
    let mut applied = 0;
    for dir in ["examples", "examples/routes"] {
        let mut files: Vec<_> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        for file in files {
            let yaml = std::fs::read_to_string(&file).unwrap();
            for ns in namespaces_of(&yaml) {
                let _ = cp.kubectl(&["create", "namespace", &ns]);
            }
            match apply(cp, &yaml, false) {
                Ok(out) => {
                    assert!(out.contains("created") || out.contains("configured") || out.contains("unchanged"), "{out}")
                }
                Err(e) => panic!("{} was refused by the real API server:\n{e}", file.display()),
            }
            applied += 1;
        }
    }
    assert!(applied >= 8, "every example and route applied ({applied})");
}

fn with(from: &str, to: &str) -> String {
    assert!(EXAMPLE.contains(from), "example lacks {from:?}");
    EXAMPLE.replacen(from, to, 1)
}

#[test]
fn invalid_plans_are_refused_by_the_server_with_the_rule_text_validate_gives() {
    let cp = ControlPlane::shared();
    let _ = cp.kubectl(&["create", "namespace", "orders"]);
    // (plan, the CEL rule's message as both must say it)
    let cases = [
        (
            with("minReplicas: 12\n      maxReplicas: 60", "minReplicas: 70\n      maxReplicas: 60"),
            "minReplicas must be less than or equal to maxReplicas",
        ),
        (with("weight: 0.40", "weight: 0"), "weight must be greater than 0"),
        (with("name: infrastructure", "name: business"), "dimension names must be unique"),
        (
            with("scaleDownThreshold: 1.0", "scaleDownThreshold: 1.5"),
            "scaleDownThreshold must not exceed scaleUpThreshold",
        ),
        (with("interval: 15s", "interval: 500ms"), "interval must be a Go duration of at least 1s"),
        (with("for: 5m", "for: 2h"), "for must be a Go duration of at most 1h"),
        (with("policy: Hold", "policy: Fallback"), "policy Fallback needs fallback replicas"),
        (
            with("policy: Hold", "policy: Fallback\n    fallback: {brokers: 2, workers: 20}"),
            "missingData.fallback must lie within",
        ),
        (with("http://prometheus-operated", "prometheus-operated"), "must start with http:// or https://"),
        (
            with("timeout: 5s", "timeout: 5s\n    tls: {insecureSkipVerify: true}"),
            "insecureSkipVerify only applies to an https:// address",
        ),
        (
            with("maxWorkersPerBroker: 5", "maxWorkersPerBroker: 1")
                .replace("minReplicas: 12\n      maxReplicas: 60", "minReplicas: 13\n      maxReplicas: 60"),
            "workers.minReplicas cannot be reached",
        ),
    ];
    for (yaml, rule) in &cases {
        let local = validate(yaml).expect_err(&format!("validate accepted a plan breaking {rule:?}"));
        let server = apply(cp, yaml, true).expect_err(&format!("the API server accepted a plan breaking {rule:?}"));
        assert!(local.contains(rule), "validate does not say {rule:?}:\n{local}");
        assert!(server.contains(rule), "the API server does not say {rule:?}:\n{server}");
    }
    // Schema errors (not CEL): both name the field.
    let typo = with("tolerance: 0.1", "tolerance: 0.1\n    tolerence: 0.2");
    let local = validate(&typo).unwrap_err();
    let server = apply(cp, &typo, true).unwrap_err();
    assert!(local.contains("spec.scaling.tolerence"), "{local}");
    assert!(server.contains("tolerence"), "{server}");
    let wrong_type = with("minReplicas: 3", "minReplicas: three");
    let local = validate(&wrong_type).unwrap_err();
    let server = apply(cp, &wrong_type, true).unwrap_err();
    assert!(local.contains("spec.workloads.brokers.minReplicas"), "{local}");
    assert!(server.contains("spec.workloads.brokers.minReplicas"), "{server}");
    // And the example itself passes both.
    validate(EXAMPLE).expect("validate accepts the example");
    apply(cp, EXAMPLE, true).expect("the server accepts the example");
}

/// Paths where two JSON values differ, with both sides.
fn diff(path: &str, served: &serde_json::Value, generated: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (served, generated) {
        (Value::Object(a), Value::Object(b)) => {
            for key in a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))) {
                diff(
                    &format!("{path}.{key}"),
                    a.get(key).unwrap_or(&Value::Null),
                    b.get(key).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff(&format!("{path}[{i}]"), x, y, out);
            }
        }
        // Go writes 1.0 as 1: the same number.
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        (a, b) if a != b => out.push(format!("{path}: served {a}, generated {b}")),
        _ => {}
    }
}

mod plan_gen;

/// A dry-run create of plan YAML on the real API server, with strict field validation (what
/// `kubectl apply --dry-run=server --validate=strict` sends): Ok, or the server's message.
fn server_verdict(client: &kube::Client, yaml: &str) -> Result<(), String> {
    let body: serde_json::Value = serde_yaml::from_str(yaml).map_err(|e| format!("cannot be sent as JSON: {e}"))?;
    let namespace = body["metadata"]["namespace"].as_str().unwrap_or("shop").to_string();
    let request = http::Request::post(format!(
        "/apis/fulfillment.dev/v1alpha1/namespaces/{namespace}/fulfillmentplans?dryRun=All&fieldValidation=Strict"
    ))
    .header("content-type", "application/json")
    .body(serde_json::to_vec(&body).expect("JSON"))
    .expect("request");
    let client = client.clone();
    support::runtime::block(async move { client.request::<serde_json::Value>(request).await })
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The differential test: plans generated on both sides of every limit of the CRD are checked
/// locally (the server's share of `validate`: name, schema, CEL) and by the real API server;
/// the verdicts must agree. A disagreement prints the plan, both verdicts and what the
/// generator meant to break, shrunk to a minimal case.
#[test]
fn local_validation_and_the_api_server_agree_on_generated_plans() {
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    use std::sync::atomic::{AtomicUsize, Ordering};

    let cp = ControlPlane::shared();
    let _ = cp.kubectl(&["create", "namespace", "shop"]);
    let client = support::tenant::Kube::from_kubeconfig(&cp.admin_kubeconfig).client();
    let (accepted, refused) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let cases = std::env::var("FO_DIFFERENTIAL_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256);
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let started = std::time::Instant::now();
    let result = runner.run(&plan_gen::plan(), |p| {
        let local = fulfillment_operator::plan::parse_unvalidated(&p.yaml)
            .and_then(|plan| fulfillment_operator::plan::validate_as_api_server(&plan))
            .map_err(|e| e.to_string());
        let server = server_verdict(&client, &p.yaml);
        let report = || format!("local: {local:?}\nserver: {server:?}\nmeant to break: {:?}\n{}", p.broken, p.yaml);
        if local.is_ok() != server.is_ok() {
            return Err(TestCaseError::fail(format!("the verdicts differ\n{}", report())));
        }
        if server.is_ok() != p.expected_valid_on_server() {
            return Err(TestCaseError::fail(format!("both verdicts differ from the generator's intent\n{}", report())));
        }
        if server.is_ok() { &accepted } else { &refused }.fetch_add(1, Ordering::Relaxed);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let (accepted, refused) = (accepted.into_inner(), refused.into_inner());
    println!(
        "differential: {cases} generated plans, {accepted} accepted and {refused} refused by both, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(accepted > 0 && refused > 0, "the generator must produce both valid and invalid plans");
}
