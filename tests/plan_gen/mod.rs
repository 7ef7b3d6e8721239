//! A proptest generator of FulfillmentPlans near every limit of the CRD, valid and invalid, for
//! tests that compare verdicts: local validation against the intended limits
//! (`tests/plan_validation.rs`), and local validation against a real API server
//! (`kubectl apply --dry-run=server`).
//!
//! Use it from a test crate with `mod plan_gen;` and
//! `proptest!(|(p in plan_gen::plan())| { ... p.yaml ..., p.expected_valid(), p.broken ... })`.
//! Against a real API server compare with `p.expected_valid_on_server()` (the server does not
//! parse PromQL) and create the namespace `shop` first; print `p.yaml` on a disagreement.
//! Every field the generator varies is picked from values on both sides of its limit; the
//! others are fixed to valid values, so the plan is valid exactly when nothing is listed in
//! `broken`.

#![allow(dead_code)]

use proptest::prelude::*;

/// A generated plan: its YAML and the limits it breaks on purpose.
#[derive(Clone, Debug)]
pub struct GeneratedPlan {
    /// The plan, as one would `kubectl apply` it.
    pub yaml: String,
    /// Which limits it breaks (empty: a valid plan), e.g. `spec.dimensions: more than 16`.
    pub broken: Vec<String>,
}

/// Marks a broken rule that only the operator checks (a query that is not PromQL returning one
/// value): the API server accepts such a plan.
pub const OPERATOR_ONLY: &str = "(operator only)";

impl GeneratedPlan {
    /// Whether local validation (`plan::parse`, `validate`, the controller) must accept it.
    pub fn expected_valid(&self) -> bool {
        self.broken.is_empty()
    }

    /// Whether the API server must accept it (`kubectl apply --dry-run=server`): it checks
    /// everything but the operator-only rules.
    pub fn expected_valid_on_server(&self) -> bool {
        self.broken.iter().all(|b| b.ends_with(OPERATOR_ONLY))
    }
}

/// A value for a field and whether it is within the field's limit.
type Pick = (String, bool);

fn pick(values: &[(&str, bool)]) -> impl Strategy<Value = Pick> {
    // Each value within the limit is drawn far more often than each one beyond it, so that a
    // plan of many fields is still valid often enough for both verdicts to be compared.
    let weighted: Vec<(u32, Pick)> =
        values.iter().map(|(v, ok)| (if *ok { VALID_WEIGHT } else { 1 }, (v.to_string(), *ok))).collect();
    proptest::sample::select(
        weighted.iter().flat_map(|(w, p)| std::iter::repeat_n(p.clone(), *w as usize)).collect::<Vec<_>>(),
    )
}

/// How much more often a value within a limit is drawn than one beyond it.
const VALID_WEIGHT: u32 = 40;

/// A name of `len` characters matching `^[a-z][a-z0-9_-]*$` (dimensions) or the cluster/gate
/// pattern `^[a-z]([-a-z0-9]*[a-z0-9])?$`, or breaking it.
fn name(max: usize, underscore_ok: bool) -> impl Strategy<Value = Pick> {
    let good = proptest::string::string_regex(if underscore_ok {
        "[a-z][a-z0-9_-]{0,8}[a-z0-9]"
    } else {
        "[a-z][-a-z0-9]{0,8}[a-z0-9]"
    })
    .expect("regex");
    prop_oneof![
        VALID_WEIGHT => good.prop_map(|s| (s, true)),
        4 => Just(("a".repeat(max), true)),
        1 => Just(("a".repeat(max + 1), false)),
        1 => Just(("9lives".to_string(), false)),
        1 => Just(("Upper".to_string(), false)),
        1 => Just((String::new(), false)),
    ]
}

fn query() -> impl Strategy<Value = Pick> {
    prop_oneof![
        VALID_WEIGHT => Just(("sum(rate(orders_total[1m]))".to_string(), true)),
        4 => Just((format!("sum(x{{a=\"{}\"}})", "y".repeat(4096 - 12)), true)),
        1 => Just((format!("sum(x{{a=\"{}\"}})", "y".repeat(4096 - 11)), false)),
        1 => Just(("sum(x".to_string(), false)),
        1 => Just(("x[5m]".to_string(), false)),
    ]
}

/// How a generated query breaks the rules, if it does: too long for the schema, or (operator
/// only) not PromQL returning one value.
fn query_broken(owner: &str, query: &Pick) -> Option<String> {
    match (query.1, query.0.len() > 4096) {
        (true, _) => None,
        (false, true) => Some(format!("{owner} query longer than 4096")),
        (false, false) => Some(format!("{owner} query not PromQL returning one value {OPERATOR_ONLY}")),
    }
}

prop_compose! {
    fn dimension()(
        name in name(63, true),
        weight in pick(&[("0.4", true), ("1000", true), ("0", false), ("1000.5", false), ("-1", false)]),
        target in pick(&[("700", true), ("0.000000001", true), ("0", false), ("1000000000000000", false)]),
        sustain in pick(&[("2m", true), ("0s", true), ("1h", true), ("1h0m1s", false), ("2 minutes", false), ("''", false)]),
        kind in pick(&[("Demand", true), ("Utilization", true), ("Throughput", false)]),
        query in query(),
    ) -> (String, Vec<String>, String) {
        let mut broken = Vec::new();
        for (field, ok) in [("name", name.1), ("weight", weight.1), ("target", target.1), ("for", sustain.1), ("kind", kind.1)] {
            if !ok {
                broken.push(format!("dimension {field}"));
            }
        }
        broken.extend(query_broken("dimension", &query));
        let yaml = format!(
            "    - name: '{}'\n      kind: {}\n      weight: {}\n      target: {}\n      for: {}\n      query: '{}'\n",
            name.0, kind.0, weight.0, target.0, sustain.0, query.0.replace('\'', "''")
        );
        (yaml, broken, name.0)
    }
}

prop_compose! {
    fn cluster()(
        name in name(63, false),
        weight in pick(&[("50", true), ("1", true), ("1000", true), ("0", false), ("1001", false)]),
        backend in pick(&[("checkout", true), ("''", false)]),
        threshold in pick(&[("0.2", true), ("-1000000000000000", true), ("10000000000000000", false)]),
    ) -> (String, Vec<String>, String, String) {
        let mut broken = Vec::new();
        for (field, ok) in [("name", name.1), ("weight", weight.1), ("backend", backend.1), ("threshold", threshold.1)] {
            if !ok {
                broken.push(format!("cluster {field}"));
            }
        }
        (format!(
            "    - name: '{}'\n      weight: {}\n      backend: BACKEND\n      kubeconfigSecretRef: {{name: k, key: kubeconfig}}\n      health: {{query: 'max(up)', threshold: {}, for: 30s}}\n",
            name.0, weight.0, threshold.0
        ), broken, name.0, backend.0)
    }
}

prop_compose! {
    fn gate()(
        name in name(63, false),
        max in pick(&[("0.01", true), ("1000000000000000", true), ("-10000000000000000", false)]),
        query in query(),
    ) -> (String, Vec<String>, String) {
        let mut broken = Vec::new();
        for (field, ok) in [("name", name.1), ("max", max.1)] {
            if !ok {
                broken.push(format!("gate {field}"));
            }
        }
        broken.extend(query_broken("gate", &query));
        (format!("        - {{name: '{}', query: '{}', max: {}, for: 1m}}\n", name.0, query.0.replace('\'', "''"), max.0), broken, name.0)
    }
}

prop_compose! {
    /// A plan near the CRD's limits: valid when `broken` is empty.
    pub fn plan()(
        dimensions in prop_oneof![12 => 1usize..=3, 2 => 15usize..=16, 1 => Just(17usize), 1 => Just(0usize)]
            .prop_flat_map(|n| proptest::collection::vec(dimension(), n)),
        clusters in prop_oneof![3 => Just(0usize), 2 => 2usize..=8, 1 => Just(1usize), 1 => Just(9usize)]
            .prop_flat_map(|n| proptest::collection::vec(cluster(), n)),
        gates in prop_oneof![8 => 0usize..=2, 1 => Just(8usize), 1 => Just(9usize)]
            .prop_flat_map(|n| proptest::collection::vec(gate(), n)),
        interval in pick(&[("15s", true), ("1s", true), ("999ms", false)]),
        min_replicas in pick(&[("1", true), ("0", false)]),
        max_replicas in pick(&[("60", true), ("10000", true), ("10001", false)]),
        tolerance in pick(&[("0.1", true), ("0", true), ("0.5", true), ("0.51", false)]),
        up in pick(&[("1.0", true), ("10", true), ("10.5", false)]),
        name in pick(&[("orders", true), ("a.b-c", true), ("Orders", false)]),
        router in pick(&[
            ("{httpRoute: {name: checkout}}", true),
            ("{virtualService: {name: checkout, index: 63}}", true),
            ("{dnsEndpoint: {name: checkout}}", true),
            ("{dnsEndpoint: {name: checkout, weightProperty: azure/weight, ttl: 48h}}", true),
            ("{dnsEndpoint: {name: checkout, ttl: 49h}}", false),
            ("{dnsEndpoint: {name: checkout, weightProperty: ''}}", false),
            ("{httpRoute: {name: checkout}, dnsEndpoint: {name: checkout}}", false),
            ("{httpRoute: {name: checkout}, virtualService: {name: checkout}, dnsEndpoint: {name: checkout}}", false),
            ("{}", false),
        ]),
        approval in pick(&[("Automatic", true), ("Manual", true), ("manual", false)]),
    ) -> GeneratedPlan {
        let mut broken: Vec<String> = Vec::new();
        let mut note = |ok: bool, what: &str| if !ok { broken.push(what.to_string()) };
        note(interval.1, "interval");
        note(min_replicas.1, "minReplicas");
        note(max_replicas.1, "maxReplicas");
        note(tolerance.1, "tolerance");
        note(up.1, "scaleUpThreshold");
        note(name.1, "metadata.name");
        let mut yaml = format!(
            "apiVersion: fulfillment.dev/v1alpha1\nkind: FulfillmentPlan\nmetadata: {{name: '{}', namespace: shop}}\nspec:\n  \
             prometheus: {{address: 'http://prometheus:9090'}}\n  interval: {}\n  workloads:\n    \
             brokers: {{targetRef: {{apiVersion: apps/v1, kind: StatefulSet, name: kafka}}, minReplicas: {}, maxReplicas: 12}}\n    \
             workers: {{targetRef: {{apiVersion: apps/v1, kind: Deployment, name: worker}}, minReplicas: 12, maxReplicas: {}}}\n  \
             scaling: {{scaleUpThreshold: {}, scaleDownThreshold: 1.0, tolerance: {}}}\n  dimensions:\n",
            name.0, interval.0, min_replicas.0, max_replicas.0, up.0, tolerance.0
        );
        if dimensions.is_empty() {
            yaml = yaml.replace("  dimensions:\n", "  dimensions: []\n");
            broken.push("spec.dimensions: fewer than 1".into());
        }
        if dimensions.len() > 16 {
            broken.push("spec.dimensions: more than 16".into());
        }
        let mut seen = std::collections::HashSet::new();
        for (text, b, n) in &dimensions {
            yaml.push_str(text);
            broken.extend(b.iter().cloned());
            if !seen.insert(n.clone()) {
                broken.push("dimension names unique".into());
            }
        }
        if !clusters.is_empty() {
            yaml.push_str("  clusters:\n");
            let mut names = std::collections::HashSet::new();
            for (i, (text, b, n, backend)) in clusters.iter().enumerate() {
                let backend = if backend == "''" { backend.clone() } else { format!("{backend}-{i}") };
                yaml.push_str(&text.replace("BACKEND", &backend));
                broken.extend(b.iter().cloned());
                if !names.insert(n.clone()) {
                    broken.push("cluster names unique".into());
                }
            }
            if clusters.len() < 2 {
                broken.push("spec.clusters: fewer than 2".into());
            }
            if clusters.len() > 8 {
                broken.push("spec.clusters: more than 8".into());
            }
            yaml.push_str(&format!(
                "  traffic:\n    router: {}\n    failback:\n      approval: {}\n      steps: [1, 5, 25, 50, 100]\n      gates:\n",
                router.0, approval.0
            ));
            if !router.1 {
                broken.push(format!("router {}", router.0));
            }
            if !approval.1 {
                broken.push("failback.approval".into());
            }
            if gates.is_empty() {
                yaml = yaml.replace("      gates:\n", "      gates: []\n");
            }
            if gates.len() > 8 {
                broken.push("gates: more than 8".into());
            }
            let mut names = std::collections::HashSet::new();
            for (text, b, n) in &gates {
                yaml.push_str(text);
                broken.extend(b.iter().cloned());
                if !names.insert(n.clone()) {
                    broken.push("gate names unique".into());
                }
            }
        }
        broken.sort();
        broken.dedup();
        GeneratedPlan { yaml, broken }
    }
}
