//! The README cannot rot: its commands run, its output excerpts match what the binary prints,
//! and every `spec.…` field it names exists in the CRD.

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).unwrap()
}

/// Fenced code blocks.
fn blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.starts_with("```") {
            match current.take() {
                Some(b) => out.push(b),
                None => current = Some(String::new()),
            }
        } else if let Some(b) = current.as_mut() {
            b.push_str(line);
            b.push('\n');
        }
    }
    out
}

fn run(args: &[String]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_fulfillment-operator")).args(args).current_dir(root()).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `cargo run --release -- simulate …` commands, with `--plot` sent to a temporary file.
fn simulate_commands() -> Vec<Vec<String>> {
    let dir = std::env::temp_dir();
    blocks(&readme())
        .iter()
        .flat_map(|b| b.lines().map(str::to_string).collect::<Vec<_>>())
        .filter_map(|l| l.strip_prefix("cargo run --release -- ").map(str::to_string))
        .filter(|l| l.starts_with("simulate "))
        .map(|l| {
            let mut args: Vec<String> = l.split_whitespace().map(str::to_string).collect();
            if let Some(i) = args.iter().position(|a| a == "--plot") {
                args[i + 1] = dir.join(format!("readme-{}", args[i + 1])).display().to_string();
            }
            args
        })
        .collect()
}

#[test]
fn readme_commands_run_and_their_excerpts_match() {
    let commands = simulate_commands();
    assert!(commands.len() >= 2, "the README shows its simulate commands");
    let first = run(&commands[0]);
    let excerpts: Vec<String> = blocks(&readme())
        .into_iter()
        .filter(|b| b.starts_with("    time  action") || b.starts_with("summary "))
        .collect();
    assert_eq!(excerpts.len(), 2, "a timeline excerpt and a summary excerpt");
    for line in excerpts.iter().flat_map(|b| b.lines()) {
        let prefix = line.split('…').next().unwrap();
        assert!(
            first.lines().any(|l| l.starts_with(prefix)),
            "README line not in the output of the first command:\n{line}\n---\n{first}"
        );
    }
    for c in &commands[1..] {
        run(c);
    }
}

#[test]
fn every_spec_field_named_in_the_readme_exists_in_the_crd() {
    let crd: serde_json::Value =
        serde_json::to_value(<fulfillment_operator::crd::FulfillmentPlan as kube::CustomResourceExt>::crd()).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let text = readme();
    let mut checked = 0;
    for piece in text.split('`').skip(1).step_by(2) {
        let Some(path) = piece.strip_prefix("spec.") else { continue };
        if !path.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') {
            continue;
        }
        let mut node = &schema["properties"]["spec"];
        for part in path.split('.') {
            node = if node["type"] == "array" { &node["items"]["properties"][part] } else { &node["properties"][part] };
            assert!(!node.is_null(), "README names spec.{path}, which the CRD does not have (at {part:?})");
        }
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} fields checked");
}

#[test]
fn readme_validation_excerpt_is_what_validate_prints() {
    let plan = std::fs::read_to_string(root().join("examples/orders-plan.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, plan.replace("minReplicas: 12", "minReplicas: 80")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fulfillment-operator")).arg("validate").arg(&bad).output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let text = readme();
    let excerpt = blocks(&text).into_iter().find(|b| b.starts_with("$ fulfillment-operator validate")).unwrap();
    for line in excerpt.lines().skip(1) {
        assert!(stderr.lines().any(|l| l == line), "README line {line:?} not printed:\n{stderr}");
    }
}

#[test]
fn every_metric_the_readme_lists_is_exposed_and_every_exposed_one_is_listed() {
    let text = readme();
    for name in fulfillment_operator::telemetry::METRIC_NAMES {
        assert!(text.contains(&format!("`{name}")), "README does not list {name}");
    }
    // What the registry exports (every registered family, with or without series yet).
    let exported: Vec<String> =
        fulfillment_operator::telemetry::Metrics::default().exported().iter().flat_map(|m| m.series_names()).collect();
    for piece in text.split('`').skip(1).step_by(2) {
        if let Some(name) = piece.strip_prefix("fulfillment_") {
            let name = format!("fulfillment_{}", name.split('{').next().unwrap());
            assert!(
                fulfillment_operator::telemetry::METRIC_NAMES.contains(&name.as_str()),
                "README names {name}, which the code does not have"
            );
            let exposed = exported.contains(&name) || exported.contains(&format!("{name}_bucket"));
            assert!(exposed, "{name} is not exposed; the registry exports {exported:?}");
        }
    }
}

#[test]
fn every_run_flag_in_the_readme_is_accepted() {
    let out = Command::new(env!("CARGO_BIN_EXE_fulfillment-operator")).args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let text = readme();
    let mut checked = 0;
    for line in text.lines().filter(|l| l.starts_with("| `--")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let flag = cells[1].trim_matches('`');
        let env = cells[2].trim_matches('`');
        assert!(help.contains(&format!("{flag} <")), "run --help lacks {flag}");
        assert!(help.contains(&format!("[env: {env}=")), "run --help lacks env {env} for {flag}");
        checked += 1;
    }
    assert_eq!(checked, 12);
}
