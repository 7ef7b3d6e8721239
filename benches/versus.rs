//! The operator against the real HorizontalPodAutoscaler and the real KEDA on the same load,
//! side by side.
//!
//! One real Prometheus scraping one exporter, and two control planes (etcd, kube-apiserver with
//! the aggregation layer, kube-controller-manager with its HPA controller at a 1 s sync period):
//! a cluster has one `v1beta1.external.metrics.k8s.io`, and prometheus-adapter holds it on the
//! first, KEDA's metrics server on the second. Per scenario (the shipped flash-sale and
//! diurnal-day traces, compressed in time), a namespace with:
//! - the operator (the real binary, installed by the chart) running `examples/orders-plan.yaml`
//!   on its own workers and brokers Deployments;
//! - an `autoscaling/v2` HPA on another workers Deployment, one External `AverageValue` metric
//!   per plan dimension (target: the dimension's target), HPA default behavior;
//! - on the second control plane, a KEDA `ScaledObject` on a third workers Deployment, one
//!   `prometheus` trigger per plan dimension on the same series the HPA reads (threshold: the
//!   dimension's target), the same bounds and behavior, KEDA's defaults otherwise.
//!
//! The load model (`tests/support/versus.rs`) replays the trace and publishes for each system
//! what its own workers would report at the replica count the API server gives them. Every
//! time in the plan, the HPA and KEDA is divided by the compression factor: the plan's interval,
//! windows and step periods, the HPA's stabilization window and policy periods, KEDA's polling
//! interval (never below 1 s, the HPA's sync period and the plan's shortest interval).
//!
//! Then the same trace through `simulate --baseline hpa` (the library's replay of
//! `Policy::hpa_baseline`), at the real HPA's period in trace time, against the real HPA's curve,
//! and through `simulate --baseline keda` (the same policy on the trace with empty cells read as
//! 0, as KEDA's default `ignoreNullValues` reads them) against the real KEDA's.
//!
//!     cargo bench --bench versus
//!
//! Builds prometheus-adapter and KEDA on first use (`scripts/peers.sh build-keda`).
//! `VERSUS_FACTORS` (`flash-sale=15,diurnal-day=60`) sets the compression; `VERSUS_PLOT_DIR`
//! (default `target/versus`) where the SVGs go. A run takes the longest scenario's compressed
//! length (24 min by default) plus about a minute of set-up. Under `cargo test --all-targets` (no
//! `--bench`) it is a smoke run: the flash sale alone, compressed 180×, the operator and the HPA
//! only (it says so): KEDA's first build would add about ten minutes to the suite, and the
//! benchmark covers it. `VERSUS_KEDA=1` puts KEDA in the smoke run too.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fulfillment_operator::duration::GoDuration;
use fulfillment_operator::engine::{CapacityKind, Policy, Replicas, StepRules};
use fulfillment_operator::simulate::{self, ReplayOptions, Trace};
use plotters::prelude::*;
use serde_json::{Value, json};
use support::control_plane::{ControlPlane, Options};
use support::operator::Operator;
use support::peers::{Keda, PrometheusAdapter};
use support::tenant::{ChartOptions, Kube, Tenant};
use support::versus::{self, Curve, Figures};

const PLAN: &str = "examples/orders-plan.yaml";
/// The systems, in the order of their curves: their series carry these `system` labels.
const SYSTEMS: [&str; 3] = ["operator", "hpa", "keda"];
/// The HPA's defaults (autoscaling/v2): scale-down stabilization 300 s, policy period 15 s.
const HPA_DOWN_WINDOW: f64 = 300.0;
const HPA_PERIOD: f64 = 15.0;
/// KEDA's default polling interval (`ScaledObject.spec.pollingInterval`), seconds.
const KEDA_POLLING: f64 = 30.0;
/// A load step is a breach (at the initial workers) held this long, seconds of trace; a shorter
/// one is a spike.
const STEP_HOLD: f64 = 300.0;

const ADAPTER_RULES: &str = "externalRules:
- seriesQuery: 'versus_pod_sum'
  resources:
    namespaced: false
  metricsQuery: 'sum(<<.Series>>{<<.LabelMatchers>>})'
";

struct Scenario {
    name: String,
    factor: f64,
    trace: Trace,
    tenant: Tenant,
    _operator: Operator,
    /// One per system in use (the first [`Scenario::curves`]`.len()` of [`SYSTEMS`]).
    curves: Vec<Curve>,
    done: bool,
}

/// KEDA's side: its own control plane, KEDA on it, a client.
struct KedaSide {
    keda: Keda,
    kube: Kube,
    // Last: stopped after KEDA.
    _cp: ControlPlane,
}

fn is_bench() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// KEDA runs in the benchmark, and in the smoke run when `VERSUS_KEDA=1`.
fn with_keda() -> bool {
    is_bench() || std::env::var("VERSUS_KEDA").is_ok_and(|v| v == "1")
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn factors() -> Vec<(String, f64)> {
    // `cargo test --all-targets` runs this without `--bench`: a smoke run of the flash sale alone,
    // compressed 180× (a minute of replay), so the suite proves the set-up works end to end.
    let default = if is_bench() { "flash-sale=15,diurnal-day=60" } else { "flash-sale=180" };
    let text = std::env::var("VERSUS_FACTORS").unwrap_or_else(|_| default.into());
    text.split(',')
        .map(|part| {
            let (name, f) =
                part.split_once('=').unwrap_or_else(|| panic!("VERSUS_FACTORS: {part:?} is not NAME=FACTOR"));
            let f: f64 = f.parse().unwrap_or_else(|_| panic!("VERSUS_FACTORS: {f:?} is not a number"));
            assert!(f >= 1.0, "VERSUS_FACTORS: {name}'s factor must be at least 1");
            (name.trim().to_string(), f)
        })
        .collect()
}

/// A Go duration divided by `factor`, in whole milliseconds, at least `floor` seconds unless 0.
fn compress(text: &str, factor: f64, floor: f64) -> String {
    let d: GoDuration = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
    let secs = d.as_secs_f64();
    if secs == 0.0 {
        return "0s".into();
    }
    format!("{}ms", ((secs / factor).max(floor) * 1000.0).round() as u64)
}

/// The example plan for one scenario: its queries on the operator's own series, its workloads
/// Deployments in `ns`, every time divided by `factor`.
fn plan(ns: &str, scenario: &str, prometheus: &str, factor: f64) -> Value {
    let text = std::fs::read_to_string(root().join(PLAN)).unwrap();
    let mut plan: Value = serde_yaml::from_str(&text).unwrap();
    plan["metadata"] = json!({"name": "orders", "namespace": ns});
    let spec = &mut plan["spec"];
    spec["prometheus"]["address"] = json!(prometheus);
    spec["interval"] = json!(compress(spec["interval"].as_str().unwrap_or("15s"), factor, 1.0));
    for role in ["brokers", "workers"] {
        spec["workloads"][role]["targetRef"] =
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": format!("{role}-operator")});
    }
    for dim in spec["dimensions"].as_array_mut().unwrap() {
        let name = dim["name"].as_str().unwrap().to_string();
        let agg = if dim["kind"] == "Demand" { "sum" } else { "max" };
        dim["query"] =
            json!(format!("{agg}(versus_value{{scenario=\"{scenario}\",system=\"operator\",dimension=\"{name}\"}})"));
        for key in ["for", "ceilingFor"] {
            if let Some(d) = dim[key].as_str() {
                dim[key] = json!(compress(d, factor, 0.0));
            }
        }
    }
    for dir in ["scaleUp", "scaleDown"] {
        let rules = &mut spec["scaling"][dir];
        if let Some(d) = rules["stabilizationWindow"].as_str() {
            rules["stabilizationWindow"] = json!(compress(d, factor, 0.0));
        }
        if let Some(d) = rules["stepPeriod"].as_str() {
            rules["stepPeriod"] = json!(compress(d, factor, 1.0));
        }
    }
    plan
}

/// The HPA's default behavior (autoscaling/v2) with its times divided by `factor`: what both
/// the HPA and KEDA's HPA get.
fn hpa_behavior(factor: f64) -> Value {
    let period = (HPA_PERIOD / factor).round().max(1.0) as u64;
    let window = (HPA_DOWN_WINDOW / factor).round() as u64;
    json!({
        "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
            {"type": "Percent", "value": 100, "periodSeconds": period}, {"type": "Pods", "value": 4, "periodSeconds": period}]},
        "scaleDown": {"stabilizationWindowSeconds": window, "selectPolicy": "Max", "policies": [
            {"type": "Percent", "value": 100, "periodSeconds": period}]}})
}

/// The series of one dimension for the HPA-style systems: the workers' per-pod values summed
/// (what an External `AverageValue` target divides by the replicas).
fn pod_sum_query(scenario: &str, system: &str, dimension: &str) -> String {
    format!("sum(versus_pod_sum{{scenario=\"{scenario}\",system=\"{system}\",dimension=\"{dimension}\"}})")
}

/// KEDA's ScaledObject: one `prometheus` trigger per plan dimension on the sum the HPA reads,
/// its threshold the dimension's target (an `AverageValue` target, KEDA's default), the HPA's
/// bounds and behavior, the default polling interval divided by `factor`; the rest KEDA's
/// defaults.
fn scaled_object(ns: &str, scenario: &str, policy: &Policy, prometheus: &str, factor: f64) -> Value {
    let triggers: Vec<Value> = policy
        .dimensions
        .iter()
        .map(|d| {
            json!({"type": "prometheus", "metadata": {
                "serverAddress": prometheus, "query": pod_sum_query(scenario, "keda", &d.name), "threshold": d.target.to_string()}})
        })
        .collect();
    json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "workers", "namespace": ns},
        "spec": {"scaleTargetRef": {"name": "workers-keda"},
                 "pollingInterval": (KEDA_POLLING / factor).round().max(1.0) as u64,
                 "minReplicaCount": policy.workers.min, "maxReplicaCount": policy.workers.max,
                 "advanced": {"horizontalPodAutoscalerConfig": {"behavior": hpa_behavior(factor)}},
                 "triggers": triggers}})
}

/// The HPA: one External AverageValue metric per plan dimension, HPA default behavior with its
/// times divided by `factor`.
fn hpa(ns: &str, scenario: &str, policy: &Policy, factor: f64) -> Value {
    let metrics: Vec<Value> = policy
        .dimensions
        .iter()
        .map(|d| {
            json!({"type": "External", "external": {
                "metric": {"name": "versus_pod_sum", "selector": {"matchLabels": {"scenario": scenario, "system": "hpa", "dimension": d.name}}},
                "target": {"type": "AverageValue", "averageValue": format!("{}m", (d.target * 1000.0).round() as u64)}}})
        })
        .collect();
    json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "workers", "namespace": ns},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "workers-hpa"},
                 "minReplicas": policy.workers.min, "maxReplicas": policy.workers.max, "metrics": metrics,
                 "behavior": hpa_behavior(factor)}})
}

fn replicas(kube: &Kube, ns: &str, name: &str) -> u32 {
    kube.get("apps/v1", "Deployment", Some(ns), name).expect("the Deployment exists")["spec"]["replicas"]
        .as_u64()
        .unwrap_or(0) as u32
}

/// Wait until the HPA `name` in `ns` reads its metrics (`ScalingActive`).
fn wait_active(kube: &Kube, ns: &str, name: &str, log: &dyn Fn() -> String) {
    support::wait_for(
        &format!("the HPA {ns}/{name} to read its metrics (log:\n{})", log()),
        Duration::from_secs(120),
        || {
            let h = kube.get("autoscaling/v2", "HorizontalPodAutoscaler", Some(ns), name)?;
            let active = h["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "ScalingActive" && c["status"] == "True");
            std::thread::sleep(Duration::from_millis(200));
            active.then_some(())
        },
    );
}

/// Build the control plane unless it is cached or named (one command on a fresh machine).
fn ensure_control_plane() {
    if std::env::var_os("FO_CONTROL_PLANE_BIN").is_some() {
        return;
    }
    let out = std::process::Command::new("bash")
        .arg(root().join("scripts/control-plane.sh"))
        .arg("build")
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("bash runs");
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(out.status.success() && !dir.is_empty(), "scripts/control-plane.sh build failed (see above)");
    // SAFETY: at the start of main, before any other thread exists.
    unsafe { std::env::set_var("FO_CONTROL_PLANE_BIN", dir) };
}

fn main() {
    ensure_control_plane();
    let keda_on = with_keda();
    if keda_on {
        support::peers::keda_bin_dir();
    } else {
        support::peers::bin_dir();
    }
    let systems = &SYSTEMS[..if keda_on { 3 } else { 2 }];
    let compiled = fulfillment_operator::plan::CompiledPlan::new(
        &fulfillment_operator::plan::load(&root().join(PLAN)).expect("the example plan loads"),
    );
    let policy = compiled.policy.clone();
    let initial = policy.workers.min;
    let exporter = support::Exporter::start();
    let prometheus = support::Prometheus::scraping(&[exporter.target()]);
    let begun = Instant::now();
    let cp = ControlPlane::start_with(Options { aggregation: true });
    let adapter = PrometheusAdapter::start(&cp, &prometheus.url(), ADAPTER_RULES);
    let keda_side = keda_on.then(|| {
        let cp = ControlPlane::start_with(Options { aggregation: true });
        let keda = Keda::start(&cp);
        let kube = Kube::from_kubeconfig(&cp.admin_kubeconfig);
        KedaSide { keda, kube, _cp: cp }
    });
    let mut scenarios: Vec<Scenario> = factors()
        .into_iter()
        .map(|(name, factor)| {
            let path = root().join(format!("examples/traces/{name}.csv"));
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let trace = Trace::from_csv(std::io::BufReader::new(file), &policy).expect("the trace reads");
            let tenant = Tenant::new(&cp, &name, ChartOptions::default());
            let ns = tenant.ns.clone();
            tenant.kube.create(support::deployment(&ns, "workers-operator", initial));
            tenant.kube.create(support::deployment(&ns, "brokers-operator", policy.brokers.min));
            tenant.kube.create(support::deployment(&ns, "workers-hpa", initial));
            tenant.kube.create(hpa(&ns, &name, &policy, factor));
            tenant.kube.create(plan(&ns, &name, &prometheus.url(), factor));
            if let Some(k) = &keda_side {
                k.kube.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
                k.kube.create(support::deployment(&ns, "workers-keda", initial));
                k.kube.create(scaled_object(&ns, &name, &policy, &prometheus.url(), factor));
            }
            let operator = Operator::start(&tenant, "versus", &["--leader-election=false"]);
            operator.wait_ready();
            let curves = vec![Curve::default(); systems.len()];
            Scenario { name, factor, trace, tenant, _operator: operator, curves, done: false }
        })
        .collect();
    // Publish the first row and wait until every system reads it: the HPAs' metrics are active.
    let publish = |scenarios: &[Scenario], at: &dyn Fn(&Scenario) -> f64, current: &[Vec<u32>]| {
        let text: String = scenarios
            .iter()
            .zip(current)
            .filter(|(s, _)| !s.done)
            .map(|(s, r)| {
                let row = s.trace.row_at(at(s));
                let reported: Vec<(&str, u32)> = systems.iter().copied().zip(r.iter().copied()).collect();
                versus::exposition(&s.name, &policy.dimensions, row, initial, &reported)
            })
            .collect();
        exporter.set(&text);
    };
    publish(&scenarios, &|_| 0.0, &vec![vec![initial; systems.len()]; scenarios.len()]);
    for s in &scenarios {
        wait_active(&s.tenant.kube, &s.tenant.ns, "workers", &|| adapter.log());
        if let Some(k) = &keda_side {
            // KEDA names the HPA it makes for a ScaledObject `keda-hpa-<name>`.
            wait_active(&k.kube, &s.tenant.ns, "keda-hpa-workers", &|| k.keda.log());
        }
    }
    eprintln!("set up in {:.0} s; replaying", begun.elapsed().as_secs_f64());
    let start = Instant::now();
    while scenarios.iter().any(|s| !s.done) {
        let elapsed = start.elapsed().as_secs_f64();
        let mut current = Vec::new();
        for s in &mut scenarios {
            let t = elapsed * s.factor;
            let mut r = vec![
                replicas(&s.tenant.kube, &s.tenant.ns, "workers-operator"),
                replicas(&s.tenant.kube, &s.tenant.ns, "workers-hpa"),
            ];
            if let Some(k) = &keda_side {
                r.push(replicas(&k.kube, &s.tenant.ns, "workers-keda"));
            }
            if t > s.trace.duration() {
                s.done = true;
            } else {
                for (curve, &r) in s.curves.iter_mut().zip(&r) {
                    curve.push((t, r));
                }
            }
            current.push(r);
        }
        publish(&scenarios, &|s| start.elapsed().as_secs_f64() * s.factor, &current);
        std::thread::sleep(Duration::from_millis(100));
    }
    let keda_text = if keda_on {
        format!(" and the real KEDA ({}, on a second control plane)", support::peers::keda_version())
    } else {
        String::new()
    };
    println!(
        "\nThe operator (examples/orders-plan.yaml) vs the real HPA (kube-controller-manager v1.35.4, prometheus-adapter v0.12.0){keda_text}, on the same closed-loop load."
    );
    println!(
        "Times are trace times; every window, period and interval of every system divided by the compression factor.\n"
    );
    if !keda_on {
        println!("This smoke run leaves KEDA out (`cargo bench --bench versus` runs it, or set VERSUS_KEDA=1).\n");
    }
    let plot_dir = std::env::var_os("VERSUS_PLOT_DIR").map_or_else(|| root().join("target/versus"), PathBuf::from);
    std::fs::create_dir_all(&plot_dir).unwrap();
    for s in &scenarios {
        report(s, &policy, initial, &plot_dir);
    }
    drop(adapter);
    drop(keda_side);
}

fn report(s: &Scenario, policy: &Policy, initial: u32, plot_dir: &Path) {
    let end = s.trace.duration();
    let step = versus::load_step(&policy.dimensions, &s.trace.rows, initial, policy.tolerance, STEP_HOLD);
    let window = policy.scale_down.stabilization_secs.max(HPA_DOWN_WINDOW);
    let yardstick =
        versus::Yardstick { dims: &policy.dimensions, initial, tolerance: policy.tolerance, step, window_secs: window };
    let figures = |curve: &Curve| versus::figures(curve, end, |t| s.trace.row_at(t), yardstick);
    let options = ReplayOptions::new(Replicas { brokers: policy.brokers.min, workers: initial });
    // `simulate` evaluates as often as the real systems did in trace time (1 s × factor, and
    // never less often than the policy says), with step periods no shorter.
    let replayed = |label: &str, mut p: Policy, trace: &Trace, every: f64| -> Curve {
        p.interval_secs = p.interval_secs.max(every);
        for rules in [&mut p.scale_up, &mut p.scale_down, &mut p.broker_scale_up, &mut p.broker_scale_down] {
            *rules = StepRules { period_secs: rules.period_secs.max(every), ..*rules };
        }
        let replay = simulate::replay(label, &p, policy, trace, options).expect("the replay fits");
        let decided: Curve = replay.steps.iter().map(|st| (st.t, st.decision.desired.workers)).collect();
        // Judged on every row of the trace, as the real curves are on their dense samples (on
        // its own evaluation times alone, a replay that fits each row it decides on would never
        // look under-provisioned between them).
        let mut times: Vec<f64> = decided.iter().map(|c| c.0).chain(s.trace.rows.iter().map(|r| r.t)).collect();
        times.sort_by(f64::total_cmp);
        times.dedup();
        times.into_iter().map(|t| (t, versus::at(&decided, t))).collect()
    };
    let period = HPA_PERIOD.max(s.factor);
    let simulated = replayed("hpa", policy.hpa_baseline(), &s.trace, s.factor);
    let simulated_keda = replayed("keda", policy.hpa_baseline(), &s.trace.missing_as_zero(), s.factor);
    let simulated_plan = replayed("plan", policy.clone(), &s.trace, s.factor);
    let keda = s.curves.get(2);
    let simulated_figures = figures(&simulated);
    let simulated_keda_figures = figures(&simulated_keda);
    let simulated_plan_figures = figures(&simulated_plan);
    let mut rows: Vec<(&str, &Figures)> = Vec::new();
    let real: Vec<Figures> = s.curves.iter().map(figures).collect();
    rows.push(("operator", &real[0]));
    rows.push(("HPA (real)", &real[1]));
    if let Some(k) = real.get(2) {
        rows.push(("KEDA (real)", k));
    }
    rows.push(("simulate --baseline hpa", &simulated_figures));
    rows.push(("simulate --baseline keda", &simulated_keda_figures));
    rows.push(("simulate (the plan)", &simulated_plan_figures));
    println!(
        "## {} — {} of trace compressed {}× (to {}); the operator's interval and the HPA's sync: 1 s = {} s of trace; load step (a breach at the initial workers held 5 min) at {}",
        s.name,
        clock(end),
        s.factor,
        clock(end / s.factor),
        s.factor,
        step.map_or("none".into(), clock)
    );
    let dims: Vec<&str> = policy.dimensions.iter().map(|d| d.name.as_str()).collect();
    println!(
        "\n| system | worker replica-min | peak | {} | actions | load step → first scale-up | flaps |",
        dims.iter().map(|d| format!("under-prov. min: {d}")).collect::<Vec<_>>().join(" | ")
    );
    println!("|---|---:|---:|{}---:|---:|---:|", "---:|".repeat(dims.len()));
    for (name, f) in &rows {
        println!(
            "| {name} | {:.0} | {} | {} | {} | {} | {} |",
            f.replica_minutes,
            f.peak,
            f.under_minutes.iter().map(|m| format!("{m:.1}")).collect::<Vec<_>>().join(" | "),
            f.actions,
            f.reaction_secs.map_or("—".into(), |r| format!("{r:.0} s")),
            f.flaps
        );
    }
    // One line per pair of curves: `title`: replica-minutes `difference` (of `a` minus `b`, and
    // in percent of `b`'s), and the largest pointwise gap.
    let compare = |title: &str, difference: &str, a: &Curve, b: &Curve, b_minutes: f64| {
        let (minutes, largest, when) = versus::gap(a, b, end);
        println!(
            "{title}: replica-minutes {difference} = {minutes:+.0} ({:+.1} %), largest pointwise gap {largest} workers at {}.\n",
            100.0 * minutes / b_minutes.max(1.0),
            clock(when)
        );
    };
    compare(
        &format!("\nFidelity of `simulate --baseline hpa` (evaluating every {period} s of trace) against the real HPA"),
        "real − simulated",
        &s.curves[1],
        &simulated,
        simulated_figures.replica_minutes,
    );
    if let Some(keda) = keda {
        compare(
            "Fidelity of `simulate --baseline keda` against the real KEDA",
            "real − simulated",
            keda,
            &simulated_keda,
            simulated_keda_figures.replica_minutes,
        );
        compare(
            "`simulate --baseline hpa` against the real KEDA",
            "real − simulated",
            keda,
            &simulated,
            simulated_figures.replica_minutes,
        );
        compare("KEDA against the HPA", "KEDA − HPA", keda, &s.curves[1], real[1].replica_minutes);
    }
    compare(
        "Fidelity of `simulate` (the plan) against the operator",
        "real − simulated",
        &s.curves[0],
        &simulated_plan,
        simulated_plan_figures.replica_minutes,
    );
    let csv = plot_dir.join(format!("{}.csv", s.name));
    let mut text = String::from("t,operator,hpa,keda,simulate_hpa,simulate_keda,simulate_plan\n");
    for &(t, hpa) in &s.curves[1] {
        let (op, sim, sim_keda, sim_plan) = (
            versus::at(&s.curves[0], t),
            versus::at(&simulated, t),
            versus::at(&simulated_keda, t),
            versus::at(&simulated_plan, t),
        );
        let keda = keda.map_or(String::new(), |k| versus::at(k, t).to_string());
        text.push_str(&format!("{t:.1},{op},{hpa},{keda},{sim},{sim_keda},{sim_plan}\n"));
    }
    std::fs::write(&csv, text).unwrap_or_else(|e| panic!("{}: {e}", csv.display()));
    let path = plot_dir.join(format!("{}.svg", s.name));
    plot(&path, s, policy, initial, [&simulated, &simulated_keda])
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    println!("Plot: {} (curves: {})\n", path.display(), csv.display());
}

fn clock(secs: f64) -> String {
    let s = secs.round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn plot(
    path: &Path,
    s: &Scenario,
    policy: &Policy,
    initial: u32,
    [simulated, simulated_keda]: [&Curve; 2],
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1280, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let end_min = s.trace.duration() / 60.0;
    // Workers the load needs: the largest of the dimensions' needs at the recorded replicas.
    let needed: Vec<(f64, f64)> = s
        .trace
        .rows
        .iter()
        .map(|row| {
            let recorded = row.workers.unwrap_or(initial);
            let need = policy
                .dimensions
                .iter()
                .zip(&row.values)
                .filter_map(|(d, v)| {
                    let v = (*v)?;
                    Some(match d.kind {
                        CapacityKind::Demand => v / d.target,
                        CapacityKind::Utilization => v * f64::from(recorded) / d.target,
                    })
                })
                .fold(0.0, f64::max);
            (row.t / 60.0, need)
        })
        .collect();
    let top = needed
        .iter()
        .map(|p| p.1)
        .chain(s.curves.iter().flatten().map(|c| f64::from(c.1)))
        .fold(f64::from(policy.workers.max), f64::max)
        * 1.05;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{} (compressed {}×): workers", s.name, s.factor), ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..end_min, 0.0..top)?;
    chart.configure_mesh().x_desc("trace minutes").y_desc("workers").draw()?;
    let grey = RGBColor(150, 150, 150);
    chart
        .draw_series(LineSeries::new(needed, grey.stroke_width(1)))?
        .label("workers the load needs (largest dimension)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey));
    let stairs = |curve: &Curve| -> Vec<(f64, f64)> {
        let mut out = Vec::new();
        for (i, &(t, r)) in curve.iter().enumerate() {
            if i > 0 {
                out.push((t / 60.0, f64::from(curve[i - 1].1)));
            }
            out.push((t / 60.0, f64::from(r)));
        }
        out
    };
    let labels = [
        ("operator", RGBColor(31, 119, 180)),
        ("HPA (real)", RGBColor(214, 39, 40)),
        ("KEDA (real)", RGBColor(255, 127, 14)),
    ];
    for ((label, color), curve) in labels.into_iter().zip(&s.curves) {
        chart
            .draw_series(LineSeries::new(stairs(curve), color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    let dashed =
        [("simulate --baseline hpa", RGBColor(44, 160, 44)), ("simulate --baseline keda", RGBColor(148, 103, 189))];
    for ((label, color), curve) in dashed.into_iter().zip([simulated, simulated_keda]) {
        chart
            .draw_series(DashedLineSeries::new(stairs(curve), 5, 4, color.stroke_width(1)))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}
