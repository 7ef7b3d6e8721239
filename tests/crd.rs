//! The CRD in `crds/` is generated from the Rust types; this fails when they drift apart.

use std::path::Path;

#[test]
fn checked_in_crd_matches_the_generated_one() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/fulfillment.dev_fulfillmentplans.yaml");
    let checked_in = std::fs::read_to_string(&path).expect("crds/ holds the CRD");
    let generated = fulfillment_operator::plan::crd_yaml();
    assert!(
        checked_in == generated,
        "{} is stale: regenerate it with `cargo run -- crd > {}`",
        path.display(),
        path.display()
    );
}

#[test]
fn crd_has_the_names_and_columns_users_type() {
    let crd = fulfillment_operator::plan::crd_yaml();
    for needle in [
        "name: fulfillmentplans.fulfillment.dev",
        "- fp",
        "- fplan",
        "scope: Namespaced",
        "status: {}",
        "name: Score",
        "name: Brokers",
        "name: Workers",
        "name: Ready",
        "name: Age",
        "x-kubernetes-validations",
    ] {
        assert!(crd.contains(needle), "CRD lacks {needle:?}");
    }
}
