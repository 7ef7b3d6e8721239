//! The binary against hostile input: every bad file, flag or stream ends in exit code 2 with a
//! message naming what to fix, never a panic (101) or an abort (134), and within bounded time
//! and memory.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fulfillment-operator"))
        .args(args)
        .current_dir(root())
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .expect("binary runs")
}

/// Exit code 2 and a message on stderr containing every one of `wanted`.
fn refused(args: &[&str], wanted: &[&str]) -> String {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{args:?}: exit {:?}, stderr:\n{stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
    for w in wanted {
        assert!(stderr.contains(w), "{args:?}: stderr lacks {w:?}:\n{stderr}");
    }
    stderr
}

fn temp_file(name: &str, text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    let p = path.display().to_string();
    (dir, p)
}

const PLAN: &str = "examples/orders-plan.yaml";
const HUGE: &str = "99999999999999999999s";

#[test]
fn overflowing_durations_are_refused_not_panics() {
    let plan = std::fs::read_to_string(root().join(PLAN)).unwrap();
    for (from, field) in [("interval: 15s", "interval"), ("for: 2m", "for"), ("timeout: 5s", "timeout")] {
        let (_d, p) = temp_file("plan.yaml", &plan.replacen(from, &format!("{field}: {HUGE}"), 1));
        refused(&["validate", &p], &["too long"]);
    }
    let prometheus = ["simulate", PLAN, "--prometheus", "http://127.0.0.1:9", "--from", "0", "--to", "60"];
    refused(&[&prometheus[..], &["--step", HUGE]].concat(), &["--step", "too long"]);
    let from = format!("now-{HUGE}");
    refused(
        &["simulate", PLAN, "--prometheus", "http://127.0.0.1:9", "--from", &from, "--to", "now"],
        &["--from", "too long"],
    );
    for flag in ["--lease-duration", "--renew-deadline", "--retry-period"] {
        refused(&["run", flag, HUGE], &[flag, "too long"]);
    }
}

#[test]
fn trace_spans_that_would_size_huge_replays_are_refused() {
    for end in ["1e12", "1e18", "1e300"] {
        let (_d, p) = temp_file("t.csv", &format!("time,business\n0,8500\n{end},8600\n"));
        let start = Instant::now();
        refused(&["simulate", PLAN, "--trace", &p], &["evaluations", "--max-evaluations"]);
        assert!(start.elapsed() < Duration::from_secs(10), "{end}: took {:?}", start.elapsed());
    }
}

#[test]
fn a_one_year_gap_is_refused_within_bounds_and_a_long_gap_is_warned_about() {
    let (_d, p) = temp_file("t.csv", "time,business\n0,8500\n31536000,8600\n");
    let start = Instant::now();
    refused(&["simulate", PLAN, "--trace", &p, "--output", "jsonl"], &["2102401 evaluations", "--max-evaluations"]);
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());

    // A six-hour hole in an otherwise regular trace is replayed, with a warning naming its lines.
    let mut csv = String::from("time,business\n");
    for i in 0..20 {
        csv.push_str(&format!("{},8500\n", i * 15));
    }
    csv.push_str(&format!("{},8500\n", 19 * 15 + 6 * 3600));
    let (_d2, p2) = temp_file("gap.csv", &csv);
    let out = run(&["simulate", PLAN, "--trace", &p2]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("warning") && stderr.contains("gap of 6h") && stderr.contains("line 21"), "{stderr}");
}

#[test]
fn plots_of_long_replays_are_downsampled() {
    // 30 days at 15 s: 172,801 evaluations. The SVG stays small.
    let (dir, p) = temp_file("t.csv", "time,business\n0,8500\n2592000,8600\n");
    let svg = dir.path().join("plot.svg");
    let out = run(&["simulate", PLAN, "--trace", &p, "--plot", svg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let size = std::fs::metadata(&svg).unwrap().len();
    assert!(size < 2_000_000, "plot is {size} bytes");
}

#[test]
fn prometheus_history_is_capped_before_any_query() {
    // Nothing listens on port 9: the cap must be reported before a request is made.
    refused(
        &["simulate", PLAN, "--prometheus", "http://127.0.0.1:9", "--from", "0", "--to", "now", "--step", "1s"],
        &["evaluations", "--max-evaluations"],
    );
}

#[test]
fn a_full_stdout_is_an_error_not_a_panic() {
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        panic!("/dev/full is needed for this test (Linux)");
    };
    for args in
        [vec!["validate", PLAN], vec!["crd"], vec!["simulate", PLAN, "--trace", "examples/traces/flash-sale.csv"]]
    {
        let out = Command::new(env!("CARGO_BIN_EXE_fulfillment-operator"))
            .args(&args)
            .current_dir(root())
            .stdout(Stdio::from(full.try_clone().unwrap()))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {:?}\n{stderr}", out.status);
        assert!(stderr.contains("cannot write output") && !stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn plans_far_beyond_the_limits_are_refused_fast() {
    let plan = std::fs::read_to_string(root().join(PLAN)).unwrap();
    let dim = "    - {name: dNUM, kind: Demand, weight: 1, target: 1, query: 'sum(rate(x_total[1m]))'}\n";
    let many: String = (0..5000).map(|i| dim.replace("NUM", &i.to_string())).collect();
    let big = plan.replacen("  dimensions:\n", &format!("  dimensions:\n{many}"), 1);
    let (_d, p) = temp_file("plan.yaml", &big);
    let start = Instant::now();
    refused(&["validate", &p], &["spec.dimensions", "at most 16"]);
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());

    let query = format!("sum(x{{a=\"{}\"}})", "y".repeat(1 << 20));
    let big = plan.replacen(
        "query: sum(rate(orders_created_total{app=\"checkout\"}[1m])) * 60",
        &format!("query: '{query}'"),
        1,
    );
    let (_d, p) = temp_file("plan.yaml", &big);
    let start = Instant::now();
    refused(&["validate", &p], &["spec.dimensions[0].query", "4096"]);
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());

    // A file larger than the API server would ever accept is not even parsed.
    let (_d, p) = temp_file("plan.yaml", &format!("{plan}# {}\n", "x".repeat(4 << 20)));
    refused(&["validate", &p], &["larger than"]);
}

#[test]
fn alias_expansion_is_bounded() {
    // A billion-laughs document: nine levels of nine aliases each.
    let mut bomb = String::from("apiVersion: fulfillment.dev/v1alpha1\nkind: FulfillmentPlan\nmetadata: {name: x}\n");
    bomb.push_str("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let prev = format!("*a{}", i - 1);
        bomb.push_str(&format!("a{i}: &a{i} [{}]\n", [prev.as_str(); 9].join(", ")));
    }
    bomb.push_str("spec: {annotations: *a9}\n");
    let (_d, p) = temp_file("plan.yaml", &bomb);
    let start = Instant::now();
    refused(&["validate", &p], &["alias"]);
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
}
