//! The Grafana dashboard the chart ships cannot rot: its JSON parses, every panel query (and the
//! variable query) parses as PromQL, and every metric it selects is one the operator's registry
//! exports (names taken from the registry itself, not from a list kept by hand).

use std::collections::BTreeSet;

use fulfillment_operator::telemetry::{METRIC_NAMES, Metrics};
use prometheus_client::metrics::MetricType;
use promql_parser::parser::{self, Expr};
use promql_parser::util::{ExprVisitor, walk_expr};

const DASHBOARD: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/charts/fulfillment-operator/dashboards/fulfillment-operator.json");

/// Every sample name the operator can expose.
fn exported_series() -> BTreeSet<String> {
    Metrics::default().exported().iter().flat_map(|m| m.series_names()).collect()
}

/// Metric names a PromQL expression selects.
fn selected_metrics(expr: &Expr) -> BTreeSet<String> {
    struct Names(BTreeSet<String>);
    impl ExprVisitor for Names {
        type Error = ();
        fn pre_visit(&mut self, expr: &Expr) -> Result<bool, ()> {
            let selector = match expr {
                Expr::VectorSelector(vs) => Some(vs),
                Expr::MatrixSelector(ms) => Some(&ms.vs),
                _ => None,
            };
            if let Some(name) = selector.and_then(|vs| vs.name.clone()) {
                self.0.insert(name);
            }
            Ok(true)
        }
    }
    let mut names = Names(BTreeSet::new());
    let _ = walk_expr(&mut names, expr);
    names.0
}

/// Grafana's variables replaced by values PromQL accepts.
fn without_grafana_variables(query: &str) -> String {
    query
        .replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
        .replace("${namespace}", ".*")
        .replace("$namespace", ".*")
}

/// Every `expr` in the dashboard's panels (nested rows included), with its panel's title.
fn panel_queries(panels: &[serde_json::Value], out: &mut Vec<(String, String)>) {
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("(untitled)").to_string();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_else(|| panic!("panel {title:?} has a target without expr"));
            out.push((title.clone(), expr.to_string()));
        }
        if let Some(nested) = panel["panels"].as_array() {
            panel_queries(nested, out);
        }
    }
}

#[test]
fn the_dashboard_parses_and_every_query_selects_only_exported_metrics() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).expect("the dashboard is valid JSON");
    let exported = exported_series();
    let mut queries = Vec::new();
    panel_queries(dashboard["panels"].as_array().expect("the dashboard has panels"), &mut queries);
    assert!(queries.len() >= 8, "the dashboard lost its panels: {queries:?}");
    // Template variables of type query: `label_values(metric, label)`.
    for var in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if var["type"] == "query" {
            let q = var["query"].as_str().unwrap();
            let inner = q.strip_prefix("label_values(").and_then(|r| r.strip_suffix(')')).unwrap_or(q);
            let metric = inner.split(',').next().unwrap().trim();
            queries.push((format!("variable {}", var["name"]), metric.to_string()));
        }
    }
    let mut used = BTreeSet::new();
    for (title, query) in &queries {
        let expr = parser::parse(&without_grafana_variables(query))
            .unwrap_or_else(|e| panic!("panel {title:?}: {query:?} is not PromQL: {e}"));
        let names = selected_metrics(&expr);
        assert!(!names.is_empty(), "panel {title:?}: {query:?} selects no metric by name");
        for name in names {
            assert!(exported.contains(&name), "panel {title:?} queries {name}, which the operator does not export");
            used.insert(name);
        }
    }
    assert!(used.len() >= 8, "{used:?}");
}

#[test]
fn the_checker_itself_catches_a_wrong_name_and_bad_promql() {
    let exported = exported_series();
    let expr = parser::parse("sum(rate(fulfillment_reconcile_failure_total[5m]))").unwrap();
    let names = selected_metrics(&expr);
    assert_eq!(names.iter().collect::<Vec<_>>(), ["fulfillment_reconcile_failure_total"]);
    assert!(!exported.contains("fulfillment_reconcile_failure_total"));
    assert!(parser::parse("sum(rate(fulfillment_reconcile_failures_total[5m])").is_err());
}

#[test]
fn the_listed_metric_names_are_exactly_what_the_registry_exports() {
    let from_registry: BTreeSet<String> = Metrics::default()
        .exported()
        .iter()
        .map(|m| match m.kind {
            MetricType::Counter => format!("{}_total", m.family),
            _ => m.family.clone(),
        })
        .collect();
    let listed: BTreeSet<String> = METRIC_NAMES.iter().map(|s| s.to_string()).collect();
    assert_eq!(listed, from_registry, "telemetry::METRIC_NAMES (README's list) and the registry differ");
}
