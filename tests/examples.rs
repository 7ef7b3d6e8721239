//! Every example plan in `examples/` is valid and replays sensibly over its trace.
//!
//! A plan names its trace in a header comment, the command a reader would run:
//! `#   fulfillment-operator simulate examples/X.yaml --trace examples/traces/Y.csv`. For each such
//! command the test runs it as written, then again with `--output jsonl`, and checks the replay:
//! it scales up and down, stays within the bounds and `maxWorkersPerBroker`, and while data is
//! missing does what the plan's `missingData` policy promises. New examples are picked up from
//! the directory; one without such a line fails with what to add.

use std::path::{Path, PathBuf};
use std::process::Command;

use fulfillment_operator::crd::{FulfillmentPlan, MissingDataPolicy};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[String]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_fulfillment-operator"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("binary runs");
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `examples/*.yaml`, sorted.
fn example_plans() -> Vec<PathBuf> {
    let mut plans: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    plans.sort();
    plans
}

/// One example: the plan, its path relative to the repository, and its simulate commands.
struct Example {
    file: String,
    plan: FulfillmentPlan,
    commands: Vec<Vec<String>>,
}

impl Example {
    fn load(path: &Path) -> Self {
        let file = format!("examples/{}", path.file_name().unwrap().to_str().unwrap());
        let plan = fulfillment_operator::plan::load(path).unwrap_or_else(|e| panic!("{file}: {e}"));
        let text = std::fs::read_to_string(path).unwrap();
        Self { commands: simulate_commands(&text), file, plan }
    }

    /// The trace of a command (the argument after `--trace`).
    fn trace(&self, command: &[String]) -> String {
        let i = command
            .iter()
            .position(|a| a == "--trace")
            .unwrap_or_else(|| panic!("{}: the simulate command in its header has no --trace: {command:?}", self.file));
        command.get(i + 1).cloned().unwrap_or_else(|| panic!("{}: --trace without a file", self.file))
    }
}

/// The `fulfillment-operator simulate …` commands in a plan's comments, as arguments.
fn simulate_commands(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter_map(|l| l.strip_prefix('#'))
        .filter_map(|l| l.trim().strip_prefix("fulfillment-operator "))
        .filter(|l| l.starts_with("simulate "))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn every_example_is_valid_and_names_its_trace() {
    let plans = example_plans();
    assert!(plans.len() >= 4, "the orders, Kafka, Pulsar and RabbitMQ examples: {plans:?}");
    for path in &plans {
        let ex = Example::load(path);
        assert!(
            ex.plan.metadata.name.is_some() && ex.plan.metadata.namespace.is_some(),
            "{}: name and namespace",
            ex.file
        );
        assert!(
            !ex.commands.is_empty(),
            "{0}: add a header comment naming its trace: `#   fulfillment-operator simulate {0} --trace examples/traces/NAME.csv`",
            ex.file
        );
        for command in &ex.commands {
            assert_eq!(command.get(1), Some(&ex.file), "{}: its simulate command replays another plan", ex.file);
            let trace = ex.trace(command);
            let header = std::fs::read_to_string(root().join(&trace))
                .unwrap_or_else(|e| panic!("{}: trace {trace}: {e}", ex.file))
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            let columns: Vec<&str> = header.split(',').collect();
            assert_eq!(columns.first(), Some(&"time"), "{trace}: header {header:?}");
            // A dimension without a column would have no data throughout, and without the
            // replica columns the feedback model would assume the initial replicas.
            for dim in &ex.plan.spec.dimensions {
                assert!(columns.contains(&dim.name.as_str()), "{trace} has no column for dimension {:?}", dim.name);
            }
            for column in ["brokers", "workers"] {
                assert!(columns.contains(&column), "{trace} does not record the {column} it was recorded at");
            }
        }
    }
}

#[test]
fn every_example_replays_sensibly_over_its_trace() {
    for path in example_plans() {
        let ex = Example::load(&path);
        for command in &ex.commands {
            let table = run(command);
            assert!(table.contains("summary"), "{command:?} prints a summary:\n{table}");
            let steps = replay(command);
            let problems = check_replay(&ex.plan, &steps);
            assert!(problems.is_empty(), "{} over {}:\n  {}", ex.file, ex.trace(command), problems.join("\n  "));
        }
    }
}

/// The checks' own test: on every example's replay, each check catches the fault it is for.
#[test]
fn the_replay_checks_catch_what_they_are_for() {
    for path in example_plans() {
        let ex = Example::load(&path);
        let steps = replay(&ex.commands[0]);
        assert!(check_replay(&ex.plan, &steps).is_empty(), "{}", ex.file);
        let spec = &ex.plan.spec;
        let (brokers, workers) = (&spec.workloads.brokers, &spec.workloads.workers);
        let (bmin, bmax) = (brokers.min_replicas as u64, brokers.max_replicas as u64);
        let (wmin, wmax) = (workers.min_replicas as u64, workers.max_replicas as u64);
        let broken = |change: &dyn Fn(&mut Vec<Value>)| {
            let mut s = steps.clone();
            change(&mut s);
            check_replay(&ex.plan, &s).join("\n")
        };
        let caught =
            |out: String, wanted: &str| assert!(out.contains(wanted), "{}: {wanted:?} not in:\n{out}", ex.file);
        caught(
            broken(&|s| s[10]["workers"] = (wmax + 1).into()),
            &format!("workers {} outside {wmin}..={wmax}", wmax + 1),
        );
        caught(
            broken(&|s| s[10]["brokers"] = (bmax + 1).into()),
            &format!("brokers {} outside {bmin}..={bmax}", bmax + 1),
        );
        if let Some(k) = spec.workloads.max_workers_per_broker {
            let over = |s: &mut Vec<Value>| {
                s[10]["brokers"] = bmin.into();
                s[10]["workers"] = (bmin * k as u64 + 1).into();
            };
            caught(broken(&over), &format!("more than {bmin} × maxWorkersPerBroker {k}"));
        }
        caught(
            broken(&|s| {
                s.retain(|s| s["action"] != "ScaleUp" && !s["traffic_events"].to_string().contains("SurvivorsScaled"))
            }),
            "never scales up",
        );
        caught(broken(&|s| s.retain(|s| s["action"] != "ScaleDown")), "never scales down");
        let first = &spec.dimensions[0].name;
        let no_values = |s: &mut Vec<Value>| s.iter_mut().for_each(|s| s["dimensions"][first]["value"] = Value::Null);
        caught(broken(&no_values), &format!("dimension {first} never has a value"));
        let Some(gap) = steps.iter().position(is_missing).filter(|&i| i > 0) else { continue };
        let fewer = |s: &mut Vec<Value>| s[gap]["workers"] = (s[gap - 1]["workers"].as_u64().unwrap() - 1).into();
        caught(broken(&fewer), "scaled down while data was missing");
        let (action, wanted) = match spec.missing_data.policy {
            MissingDataPolicy::Hold => ("ScaleUp", "policy Hold acted"),
            MissingDataPolicy::Renormalize => ("ScaleDown", "policy Renormalize did ScaleDown"),
            MissingDataPolicy::Fallback => ("ScaleUp", "policy Fallback did ScaleUp"),
        };
        caught(broken(&|s| s[gap]["action"] = action.into()), wanted);
    }
}

/// A simulate command's replay as JSON lines.
fn replay(command: &[String]) -> Vec<Value> {
    let mut jsonl = command.to_vec();
    jsonl.extend(["--output".to_string(), "jsonl".to_string()]);
    let mut lines: Vec<Value> =
        run(&jsonl).lines().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect();
    let summary = lines.pop().expect("a summary line");
    assert!(summary.get("summary").is_some(), "the last line is the summary: {summary}");
    lines
}

fn is_missing(step: &Value) -> bool {
    step["dimensions"].as_object().is_some_and(|d| d.values().any(|d| d.get("missing").is_some()))
}

/// What a replay must show, as a list of problems (empty when sensible).
fn check_replay(plan: &FulfillmentPlan, steps: &[Value]) -> Vec<String> {
    let spec = &plan.spec;
    let (brokers, workers) = (&spec.workloads.brokers, &spec.workloads.workers);
    let bounds = |w: &fulfillment_operator::crd::Workload| (w.min_replicas as u64, w.max_replicas as u64);
    let ((bmin, bmax), (wmin, wmax)) = (bounds(brokers), bounds(workers));
    let mut problems = Vec::new();
    if steps.is_empty() {
        return vec!["no evaluations".to_string()];
    }
    let count = |action: &str| steps.iter().filter(|s| s["action"] == action).count();
    // In a failover plan, failover may answer the rise first: it raises this cluster's workers
    // for the traffic it absorbs, and the plan keeps them.
    let raised = steps.iter().filter(|s| s["traffic_events"].to_string().contains("SurvivorsScaled")).count();
    if count("ScaleUp") + raised == 0 {
        problems.push("never scales up: the trace should show a rise the plan answers".to_string());
    }
    if count("ScaleDown") == 0 {
        problems.push("never scales down: the trace should come back down and the plan with it".to_string());
    }
    for dim in &spec.dimensions {
        if !steps.iter().any(|s| s["dimensions"][&dim.name]["value"].is_number()) {
            problems.push(format!("dimension {} never has a value", dim.name));
        }
    }
    let mut previous: Option<(u64, u64)> = None;
    for s in steps {
        let at = format!("t={}", s["t"]);
        let (Some(b), Some(w)) = (s["brokers"].as_u64(), s["workers"].as_u64()) else {
            problems.push(format!("{at}: no brokers/workers in {s}"));
            continue;
        };
        let action = s["action"].as_str().unwrap_or_default();
        if !(bmin..=bmax).contains(&b) {
            problems.push(format!("{at}: brokers {b} outside {bmin}..={bmax}"));
        }
        if !(wmin..=wmax).contains(&w) {
            problems.push(format!("{at}: workers {w} outside {wmin}..={wmax}"));
        }
        if let Some(k) = spec.workloads.max_workers_per_broker
            && w > b * k as u64
        {
            problems.push(format!("{at}: {w} workers, more than {b} × maxWorkersPerBroker {k}"));
        }
        if is_missing(s) {
            // Missing data never causes a scale-down, whatever the policy.
            let allow_down = spec.missing_data.policy == MissingDataPolicy::Renormalize
                && spec.missing_data.allow_scale_down_when_incomplete;
            if let Some((pb, pw)) = previous
                && (b < pb || w < pw)
                && !allow_down
            {
                problems.push(format!("{at}: scaled down while data was missing ({pb}/{pw} → {b}/{w})"));
            }
            match spec.missing_data.policy {
                MissingDataPolicy::Hold => {
                    if action != "Hold" || previous.is_some_and(|p| p != (b, w)) {
                        problems.push(format!("{at}: policy Hold acted while data was missing: {action} to {b}/{w}"));
                    }
                }
                MissingDataPolicy::Renormalize => {
                    if !allow_down && !matches!(action, "Hold" | "ScaleUp") {
                        problems.push(format!("{at}: policy Renormalize did {action} while data was missing"));
                    }
                }
                MissingDataPolicy::Fallback => {
                    let floor = spec.missing_data.fallback.as_ref().map(|f| (f.brokers as u64, f.workers as u64));
                    if !matches!(action, "Hold" | "Fallback") || floor.is_some_and(|(fb, fw)| b < fb || w < fw) {
                        problems.push(format!(
                            "{at}: policy Fallback did {action} to {b}/{w} while data was missing (fallback {floor:?})"
                        ));
                    }
                }
            }
        }
        previous = Some((b, w));
    }
    problems
}
