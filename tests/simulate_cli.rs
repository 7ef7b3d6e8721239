//! `fulfillment-operator simulate` as a user runs it: the shipped examples, the JSONL contract,
//! the plot, the baseline, a backtest over a backfilled Prometheus, and clear errors.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn operator(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fulfillment-operator"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("binary runs")
}

fn ok(args: &[&str]) -> String {
    let out = operator(args);
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let out = operator(args);
    assert!(!out.status.success(), "{args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    assert!(out.stdout.is_empty(), "nothing is printed on stdout on error");
    String::from_utf8(out.stderr).unwrap()
}

/// The evaluations of a JSONL replay (the final summary record is checked and dropped).
fn jsonl(args: &[&str]) -> Vec<Value> {
    let mut lines: Vec<Value> = ok(args).lines().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect();
    let summary = lines.pop().expect("a summary line");
    assert!(summary["summary"]["plan"]["replica_minutes"].is_number(), "the last line is the summary: {summary}");
    lines
}

const PLAN: &str = "examples/orders-plan.yaml";

#[test]
fn flash_sale_timeline_and_summary() {
    let out = ok(&["simulate", PLAN, "--trace", "examples/traces/flash-sale.csv", "--baseline", "hpa"]);
    assert!(out.contains("ScaleUp"), "{out}");
    assert!(out.contains("ScaleDown"), "{out}");
    assert!(out.contains("policy Hold changes nothing while data is missing"), "{out}");
    assert!(out.contains("summary") && out.contains("plan") && out.contains("hpa"), "{out}");
    assert!(out.contains("worker replica-minutes"), "{out}");
    assert!(out.contains("Replay is open-loop"), "{out}");
}

#[test]
fn the_summary_sets_plan_and_hpa_side_by_side_in_the_table_and_the_last_jsonl_record() {
    let args = ["simulate", PLAN, "--trace", "examples/traces/diurnal-day.csv", "--baseline", "hpa"];
    let table = ok(&args);
    for row in [
        "actions",
        "broker changes",
        "replica-minutes",
        "zero-worker minutes",
        "experience under-provisioned (min)",
        "business over-provisioned (min)",
    ] {
        assert!(table.lines().any(|l| l.starts_with(row)), "{row} missing:\n{table}");
    }
    let mut jsonl_args = args.to_vec();
    jsonl_args.extend(["--output", "jsonl"]);
    let out = ok(&jsonl_args);
    let last: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let (plan, hpa) = (&last["summary"]["plan"], &last["summary"]["hpa"]);
    for s in [plan, hpa] {
        let total = s["replica_minutes"].as_f64().unwrap();
        let parts = s["broker_replica_minutes"].as_f64().unwrap() + s["worker_replica_minutes"].as_f64().unwrap();
        assert!((total - parts).abs() < 1e-6, "{s}");
        assert_eq!(s["dimensions"].as_array().unwrap().len(), 3, "{s}");
        assert!(s["dimensions"][2]["under_provisioned_minutes"].as_f64().unwrap() >= 0.0);
        assert!(s["broker_changes"].as_u64().unwrap() <= s["actions"].as_u64().unwrap());
    }
    // The table prints the JSONL figures.
    let replica_row = table.lines().find(|l| l.starts_with("replica-minutes")).unwrap();
    assert!(replica_row.contains(&format!("{:.0}", plan["replica_minutes"].as_f64().unwrap())), "{replica_row}");
    // The day's minutes add up: under + over + within the band never exceed the day.
    let day = plan["duration_secs"].as_f64().unwrap() / 60.0;
    for d in plan["dimensions"].as_array().unwrap() {
        let used = d["under_provisioned_minutes"].as_f64().unwrap() + d["over_provisioned_minutes"].as_f64().unwrap();
        assert!(used <= day + 1e-6, "{d}");
    }
}

#[test]
fn the_hindsight_baseline_is_the_floor_beside_the_plan_and_the_hpa() {
    let args = [
        "simulate",
        PLAN,
        "--trace",
        "examples/traces/diurnal-day.csv",
        "--baseline",
        "hpa",
        "--baseline",
        "hindsight",
        "--output",
        "jsonl",
    ];
    let out = ok(&args);
    let last: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let s = &last["summary"];
    let rm = |k: &str| s[k]["replica_minutes"].as_f64().unwrap();
    // Never under-provisioned, and no policy that is not under-provisioned spends less.
    for d in s["hindsight"]["dimensions"].as_array().unwrap() {
        assert_eq!(d["under_provisioned_minutes"].as_f64(), Some(0.0), "{d}");
    }
    assert!(rm("hindsight") < rm("plan") && rm("hindsight") < rm("hpa"), "{s}");
    // The table has the three columns, in the order asked.
    let table = ok(&args[..args.len() - 2]);
    let header = table.lines().find(|l| l.starts_with("summary")).unwrap();
    let cols: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(cols, ["summary", "plan", "hpa", "hindsight"], "{header}");
}

#[test]
fn the_keda_baseline_scales_down_through_a_monitoring_outage_where_the_hpa_holds() {
    use fulfillment_operator::engine::Replicas;
    use fulfillment_operator::simulate::{self, ReplayOptions, Trace};
    let plan = fulfillment_operator::plan::load(&root().join(PLAN)).unwrap();
    let policy = fulfillment_operator::plan::CompiledPlan::new(&plan).policy;
    let file = std::fs::File::open(root().join("examples/traces/diurnal-day.csv")).unwrap();
    let trace = Trace::from_csv(std::io::BufReader::new(file), &policy).unwrap();
    let options = ReplayOptions::new(Replicas { brokers: policy.brokers.min, workers: policy.workers.min });
    let hpa = simulate::replay("hpa", &policy.hpa_baseline(), &policy, &trace, options).unwrap();
    let keda = simulate::replay("keda", &policy.hpa_baseline(), &policy, &trace.missing_as_zero(), options).unwrap();
    // The day's 14:00–14:14 has no data at all. Just before it both run the same policy on the
    // same data; by its end KEDA, reading the empty answers as 0, has gone to its minimum after
    // the 5-minute scale-down window, while the HPA (a failing metric blocks scale-down) held.
    let at = |r: &simulate::Replay, t: f64| {
        r.steps.iter().take_while(|s| s.t <= t).last().map(|s| s.decision.desired.workers).unwrap()
    };
    let (before, end) = (13.0 * 3600.0 + 59.0 * 60.0, 14.0 * 3600.0 + 13.0 * 60.0);
    assert_eq!(at(&hpa, before), at(&keda, before));
    assert!(at(&hpa, before) > policy.workers.min, "the outage starts above the minimum");
    assert_eq!(at(&hpa, end), at(&hpa, before), "the HPA holds through the outage");
    assert_eq!(at(&keda, end), policy.workers.min, "KEDA reads the outage as no load");
    // On the command line: its own column, and fewer replica-minutes than the HPA for it.
    let args =
        ["simulate", PLAN, "--trace", "examples/traces/diurnal-day.csv", "--baseline", "hpa", "--baseline", "keda"];
    let header = ok(&args).lines().find(|l| l.starts_with("summary")).unwrap().to_string();
    assert_eq!(header.split_whitespace().collect::<Vec<_>>(), ["summary", "plan", "hpa", "keda"], "{header}");
    let last: Value =
        serde_json::from_str(ok(&[&args[..], &["--output", "jsonl"]].concat()).lines().last().unwrap()).unwrap();
    let rm = |k: &str| last["summary"][k]["replica_minutes"].as_f64().unwrap();
    assert!(rm("keda") < rm("hpa"), "{last}");
}

#[test]
fn jsonl_contract_on_the_flash_sale() {
    let steps = jsonl(&["simulate", PLAN, "--trace", "examples/traces/flash-sale.csv", "--output", "jsonl"]);
    // Three hours at 15 s.
    assert_eq!(steps.len(), 720);
    for s in &steps {
        for key in ["t", "score", "dimensions", "brokers", "workers", "action", "reason"] {
            assert!(s.get(key).is_some(), "{key} missing in {s}");
        }
        let b = s["brokers"].as_u64().unwrap();
        let w = s["workers"].as_u64().unwrap();
        assert!((3..=12).contains(&b) && (12..=60).contains(&w), "{s}");
        assert!(w <= b * 5, "workers per broker bound: {s}");
        for dim in ["business", "infrastructure", "experience"] {
            let d = &s["dimensions"][dim];
            for key in ["value", "ratio", "sustained_ratio"] {
                assert!(d.get(key).is_some(), "{dim}.{key} missing in {s}");
            }
        }
    }
    let at = |secs: f64| steps.iter().find(|s| s["t"].as_f64() == Some(secs)).unwrap();
    assert_eq!(at(0.0)["action"], "Hold");
    assert_eq!(at(0.0)["workers"], 12);
    // The 60 s spike at 20:00 is shorter than every window: nothing happens through 25:00.
    assert!(steps.iter().take_while(|s| s["t"].as_f64().unwrap() < 1500.0).all(|s| s["action"] == "Hold"));
    assert!(at(1215.0)["score"].as_f64().unwrap() > 1.1, "the spike is visible in the score");
    // The ramp (30:00–45:00) into the plateau scales up, brokers and workers together.
    let first_up = steps.iter().find(|s| s["action"] == "ScaleUp").unwrap();
    let t = first_up["t"].as_f64().unwrap();
    assert!((1800.0..2700.0).contains(&t), "first scale-up at {t}");
    assert!(first_up["brokers"].as_u64().unwrap() > 3 && first_up["workers"].as_u64().unwrap() > 12);
    // The data gap (1:55–1:58) holds: no action while experience is missing.
    for s in steps.iter().filter(|s| (6920.0..7080.0).contains(&s["t"].as_f64().unwrap())) {
        assert_eq!(s["action"], "Hold", "{s}");
        assert_eq!(s["dimensions"]["experience"]["missing"]["kind"], "noData", "{s}");
    }
    // It ends back at the minimum after the decay.
    let last = steps.last().unwrap();
    assert_eq!((last["brokers"].as_u64(), last["workers"].as_u64()), (Some(3), Some(12)));
}

#[test]
fn diurnal_day_plot_and_initial_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("day.svg");
    let out = ok(&[
        "simulate",
        PLAN,
        "--trace",
        "examples/traces/diurnal-day.csv",
        "--baseline",
        "hpa",
        "--plot",
        svg.to_str().unwrap(),
        "--initial",
        "brokers=4,workers=20",
    ]);
    assert!(out.contains("Plot written to"), "{out}");
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg"), "an SVG document");
    for needle in ["Dimension ratios", "Composite score", "Replicas", "business", "workers (plan)", "workers (hpa)"] {
        assert!(text.contains(needle), "plot lacks {needle:?}");
    }
    let steps = jsonl(&[
        "simulate",
        PLAN,
        "--trace",
        "examples/traces/diurnal-day.csv",
        "--output",
        "jsonl",
        "--initial",
        "brokers=4,workers=20",
    ]);
    assert_eq!(steps[0]["workers"], 20);
    assert_eq!(steps.len(), 5757);
}

#[test]
fn bad_input_gets_a_clear_error_and_a_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| -> String {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let trace = |text: &str| write("t.csv", text);

    let e = fails(&["simulate", PLAN, "--trace", &trace("time,business,orders\n0,1,2\n")]);
    assert!(e.contains("column \"orders\" is not a dimension"), "{e}");
    let e = fails(&["simulate", PLAN, "--trace", &trace("time,business\n0,1\n30,2\n15,3\n")]);
    assert!(e.contains("line 4, column time") && e.contains("increasing time order"), "{e}");
    let e = fails(&["simulate", PLAN, "--trace", &trace("time,business\n0,1\n15,12k\n")]);
    assert!(e.contains("line 3, column business") && e.contains("\"12k\" is not a number"), "{e}");
    let e = fails(&["simulate", PLAN, "--trace", "examples/traces/no-such.csv"]);
    assert!(e.contains("cannot read trace"), "{e}");

    let plan = std::fs::read_to_string(root().join(PLAN)).unwrap();
    let bad = write("bad.yaml", &plan.replace("minReplicas: 12", "minReplicas: 80"));
    let e = fails(&["simulate", &bad, "--trace", "examples/traces/flash-sale.csv"]);
    assert!(
        e.contains("spec.workloads.workers") && e.contains("minReplicas must be less than or equal to maxReplicas"),
        "{e}"
    );
    let bad = write("bad2.yaml", &plan.replace("weight: 0.40", "weight: heavy"));
    let e = fails(&["simulate", &bad, "--trace", "examples/traces/flash-sale.csv"]);
    assert!(e.contains("spec.dimensions[0].weight"), "{e}");
    let bad = write("bad3.yaml", &plan.replace("  interval: 15s", "  interval: 15s\n  intervall: 30s"));
    let e = fails(&["validate", &bad]);
    assert!(e.contains("unknown field spec.intervall"), "{e}");

    let e = fails(&["simulate", PLAN, "--trace", "examples/traces/flash-sale.csv", "--initial", "workers=lots"]);
    assert!(e.contains("--initial"), "{e}");
    let e = fails(&["simulate", PLAN, "--prometheus", "http://127.0.0.1:1", "--from", "now-1h", "--to", "now"]);
    assert!(e.contains("unreachable"), "{e}");
    let e = fails(&["simulate", PLAN, "--prometheus", "http://127.0.0.1:1", "--from", "yesterday", "--to", "now"]);
    assert!(e.contains("--from \"yesterday\" is not a time"), "{e}");
}

#[test]
fn validate_accepts_every_shipped_example() {
    for entry in std::fs::read_dir(root().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let out = ok(&["validate", path.to_str().unwrap()]);
            assert!(out.contains("valid FulfillmentPlan"), "{out}");
        }
    }
}

#[test]
fn backtest_over_backfilled_prometheus_history() {
    // Three hours of history: orders ramp to 3× capacity for an hour; GPU memory and slow share
    // stay at target. The plan's own queries run as range queries.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let start = now - 4 * 3600;
    let mut om = String::from(
        "# TYPE orders_created_total counter\n# TYPE DCGM_FI_DEV_FB_USED gauge\n# TYPE DCGM_FI_DEV_FB_FREE gauge\n\
         # TYPE checkout_interaction_duration_seconds histogram\n",
    );
    let mut orders = 0.0;
    let mut fast = 0.0;
    let mut count = 0.0;
    let mut lines = Vec::new();
    for i in 0..=(3 * 3600 / 15) {
        let t = start + i * 15;
        let minute = (i * 15) as f64 / 60.0;
        let per_minute = if (60.0..120.0).contains(&minute) { 25_000.0 } else { 6_000.0 };
        orders += per_minute / 4.0;
        count += 100.0;
        fast += 88.0;
        lines.push(format!("orders_created_total{{app=\"checkout\"}} {orders} {t}"));
        lines.push(format!("DCGM_FI_DEV_FB_USED{{namespace=\"orders\"}} 88 {t}"));
        lines.push(format!("DCGM_FI_DEV_FB_FREE{{namespace=\"orders\"}} 12 {t}"));
        lines.push(format!("checkout_interaction_duration_seconds_bucket{{le=\"1\"}} {fast} {t}"));
        lines.push(format!("checkout_interaction_duration_seconds_count {count} {t}"));
    }
    // OpenMetrics wants each metric family's samples together.
    lines.sort_by_key(|l| l.split(['{', ' ']).next().unwrap().to_string());
    om.push_str(&lines.join("\n"));
    om.push_str("\n# EOF\n");
    let prom = support::Prometheus::backfilled(&om);
    let from = (start + 300).to_string();
    let to = (start + 3 * 3600).to_string();
    let steps =
        jsonl(&["simulate", PLAN, "--prometheus", &prom.url(), "--from", &from, "--to", &to, "--output", "jsonl"]);
    assert_eq!(steps.len(), (3 * 3600 - 300) / 15 + 1);
    let business = steps[10]["dimensions"]["business"]["value"].as_f64().unwrap();
    assert!((business - 6000.0).abs() < 50.0, "orders per minute from rate(): {business}");
    let infra = steps[10]["dimensions"]["infrastructure"]["value"].as_f64().unwrap();
    assert!((infra - 0.88).abs() < 1e-9, "{infra}");
    let up = steps.iter().find(|s| s["action"] == "ScaleUp").expect("the hour at 25,000/min scales up");
    let t = up["t"].as_f64().unwrap() + 300.0; // seconds from `start`
    assert!((3600.0..3600.0 + 300.0).contains(&t), "scale-up at {t}s into the history");
    assert!(steps.iter().any(|s| s["action"] == "ScaleDown"), "and back down after it");
}

#[test]
fn crd_subcommand_prints_what_crds_ships() {
    let printed = ok(&["crd"]);
    let shipped = std::fs::read_to_string(root().join("crds/fulfillment.dev_fulfillmentplans.yaml")).unwrap();
    assert_eq!(printed, shipped);
}

#[test]
fn backtest_through_basic_auth_a_path_prefix_and_a_header() {
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let prom = support::Prometheus::with_web(
        &format!("basic_auth_users:\n  alice: '{hash}'\n"),
        &[],
        &["--web.route-prefix=/prometheus"],
    );
    let dir = tempfile::tempdir().unwrap();
    let right = dir.path().join("right");
    let wrong = dir.path().join("wrong");
    std::fs::write(&right, "s3cret\n").unwrap();
    std::fs::write(&wrong, "guess").unwrap();
    let (right, wrong) = (right.to_str().unwrap(), wrong.to_str().unwrap());
    let url = prom.url();
    let base =
        ["simulate", PLAN, "--prometheus", &url, "--from", "now-10m", "--to", "now", "--path-prefix", "/prometheus"];
    // Wait until Prometheus answers (the listener is up before the API is).
    let args = joined(
        &base,
        &[
            "--basic-auth-user",
            "alice",
            "--basic-auth-password-file",
            right,
            "--header",
            "X-Scope-OrgID=orders",
            "--output",
            "jsonl",
        ],
    );
    support::wait_for("Prometheus to answer simulate", std::time::Duration::from_secs(20), || {
        operator(&args).status.success().then_some(())
    });
    let steps = jsonl(&args);
    assert_eq!(steps.len(), 10 * 60 / 15 + 1, "one evaluation per interval over the 10 minutes");

    let e = fails(&joined(&base, &["--basic-auth-user", "alice", "--basic-auth-password-file", wrong]));
    assert!(e.contains("answered HTTP 401: unauthorized with basic auth"), "{e}");
    assert!(!e.contains("guess"), "the password is printed: {e}");
    let e = fails(&base);
    assert!(e.contains("unauthorized with no credentials"), "{e}");
    let e = fails(&joined(
        &base,
        &["--bearer-token-file", right, "--basic-auth-user", "alice", "--basic-auth-password-file", right],
    ));
    assert!(e.contains("cannot be used with"), "{e}");
    let e = fails(&joined(&base, &["--header", "X-Scope-OrgID"]));
    assert!(e.contains("--header \"X-Scope-OrgID\" must be NAME=VALUE"), "{e}");
}

fn joined<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<&'a str> {
    [a, b].concat()
}

#[test]
fn a_dns_router_shows_when_resolvers_follow_each_route_change() {
    // The two-region example behind a DNSEndpoint with a 60 s TTL instead of an HTTPRoute.
    let example = std::fs::read_to_string(root().join("examples/failover-two-region-plan.yaml")).unwrap();
    assert!(example.contains("httpRoute: {name: checkout, index: 0}"), "the example's router line moved");
    let plan = example.replace("httpRoute: {name: checkout, index: 0}", "dnsEndpoint: {name: checkout, ttl: 60s}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dns.yaml");
    std::fs::write(&path, plan).unwrap();
    let path = path.to_str().unwrap();
    let out = ok(&["simulate", path, "--trace", "examples/traces/failover-two-region.csv"]);
    let shifted = out.lines().find(|l| l.contains("TrafficShifted")).expect("the route moves");
    let first = out.lines().find(|l| l.contains("DNS") && l.contains("resolvers follow")).expect("resolvers follow");
    let clock = |l: &str| l.split_whitespace().next().unwrap().to_string();
    let secs = |c: String| c.split(':').fold(0, |acc, p| acc * 60 + p.parse::<i64>().unwrap());
    assert_eq!(secs(clock(first)) - secs(clock(shifted)), 60, "one TTL later:\n{shifted}\n{first}");
    // JSONL carries what resolvers follow beside the route's weights.
    let steps = jsonl(&["simulate", path, "--trace", "examples/traces/failover-two-region.csv", "--output", "jsonl"]);
    let moved = steps.iter().position(|s| s["traffic"]["eu"] != 50).expect("traffic moves");
    assert_eq!(steps[moved]["resolved_traffic"]["eu"], 50, "resolvers still on the old answer");
    // A TTL longer than the failback step interval is warned about.
    let long = example.replace("httpRoute: {name: checkout, index: 0}", "dnsEndpoint: {name: checkout, ttl: 5m}");
    let long_path = dir.path().join("dns-long.yaml");
    std::fs::write(&long_path, long).unwrap();
    let run =
        operator(&["simulate", long_path.to_str().unwrap(), "--trace", "examples/traces/failover-two-region.csv"]);
    assert!(run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("warning: spec.traffic.failback.stepInterval: the DNS records' TTL (5m)"), "{stderr}");
}

#[test]
fn drill_and_drain_flags_name_what_is_wrong() {
    let plan = "examples/failover-two-region-plan.yaml";
    let trace = "examples/traces/failover-two-region.csv";
    let e = fails(&["simulate", plan, "--trace", trace, "--drill", "asia@10m"]);
    assert!(e.contains("--drill \"asia@10m\": \"asia\" is not a cluster of the plan (eu, us)"), "{e}");
    let e = fails(&["simulate", plan, "--trace", trace, "--drain", "eu"]);
    assert!(e.contains("--drain \"eu\": write CLUSTER@FROM[-TO], e.g. eu@30m-1h"), "{e}");
    let e = fails(&["simulate", plan, "--trace", trace, "--drill", "eu@20m-10m"]);
    assert!(e.contains("the end must come after the start"), "{e}");
    let e = fails(&["simulate", plan, "--trace", trace, "--drill", "eu@100h"]);
    assert!(e.contains("starts at or after the end of the trace"), "{e}");
    let e = fails(&["simulate", PLAN, "--trace", "examples/traces/flash-sale.csv", "--drill", "eu@1m"]);
    assert!(e.contains("the plan has no clusters"), "{e}");
    let e = fails(&["simulate", plan, "--trace", trace, "--survivor-ready-delay", "soon"]);
    assert!(e.contains("--survivor-ready-delay"), "{e}");
}

#[test]
fn a_drill_rehearses_the_failover_and_waits_for_ready_survivors() {
    let args = [
        "simulate",
        "examples/failover-two-region-plan.yaml",
        "--trace",
        "examples/traces/failover-two-region.csv",
        "--drill",
        "eu@5m-15m",
        "--survivor-ready-delay",
        "45s",
    ];
    let table = ok(&args);
    assert!(table.contains("DrillStarted(eu)"), "{table}");
    assert!(table.contains("ready +45s → route moved +45s"), "{table}");
    assert!(table.contains("Drill of cluster eu completed, back at its full share: route moved after 45s"), "{table}");
    let mut jsonl_args = args.to_vec();
    jsonl_args.extend(["--output", "jsonl"]);
    let steps = jsonl(&jsonl_args);
    let at = |t: f64| steps.iter().find(|s| s["t"].as_f64() == Some(t)).unwrap();
    // Survivors asked at 5m, the route still at its normal split until they are ready 45 s later.
    assert_eq!(at(300.0)["traffic"]["eu"], 50, "{}", at(300.0));
    assert!(at(300.0)["traffic_events"].to_string().contains("SurvivorsScaled"), "{}", at(300.0));
    assert_eq!(at(330.0)["traffic"]["eu"], 50);
    assert!(at(330.0)["ready"]["us"].as_u64().unwrap() < at(330.0)["survivors"]["us"].as_u64().unwrap());
    assert_eq!(at(345.0)["traffic"]["eu"], 15, "{}", at(345.0));
    // The drill is over (the same gated failback) before the real failure at 30m.
    let done = steps.iter().position(|s| s["traffic_events"].to_string().contains("DrillCompleted(eu)")).unwrap();
    assert!(steps[done]["t"].as_f64().unwrap() < 1800.0);
    assert_eq!(steps[done]["traffic"]["eu"], 50);
}

#[test]
fn a_drain_walks_the_failback_steps_in_reverse_and_back() {
    let steps = jsonl(&[
        "simulate",
        "examples/failover-two-region-plan.yaml",
        "--trace",
        "examples/traces/failover-two-region.csv",
        "--drain",
        "us@1h10m-1h40m",
        "--output",
        "jsonl",
    ]);
    let us: Vec<(f64, u64)> =
        steps.iter().map(|s| (s["t"].as_f64().unwrap(), s["traffic"]["us"].as_u64().unwrap())).collect();
    // eu's real failure and failback are over by 1h05m; the drain starts at 1h10m.
    let before: Vec<u64> = us.iter().filter(|(t, _)| (3900.0..4200.0).contains(t)).map(|(_, w)| *w).collect();
    assert!(before.iter().all(|w| *w == 50), "{before:?}");
    let changes: Vec<(f64, u64)> =
        us.windows(2).filter(|w| w[0].1 != w[1].1 && w[1].0 >= 4200.0).map(|w| w[1]).collect();
    let drained = changes.iter().position(|(_, w)| *w == 0).expect("us reaches 0 %");
    assert!(drained >= 3, "progressively, not at once: {changes:?}");
    assert!(changes[..drained].windows(2).all(|w| w[1].1 < w[0].1), "down only while drained: {changes:?}");
    // One step per step interval (1m in the example), never faster.
    for w in changes.windows(2) {
        assert!(w[1].0 - w[0].0 >= 60.0 - 1e-9, "{changes:?}");
    }
    assert_eq!(changes.last().unwrap().1, 50, "back at its share once the field is removed: {changes:?}");
    assert!(changes.last().unwrap().0 > 6000.0, "the return starts after 1h40m: {changes:?}");
    let completed = steps.iter().find(|s| s["traffic_events"].to_string().contains("DrainCompleted(us)")).unwrap();
    assert_eq!(completed["drain_kept"]["us"], 0.0, "{completed}");
}
