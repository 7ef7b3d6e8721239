"""Static tests of the Helm chart, rendered with Helm's own Go SDK (the helm-python-sdk wheel):
lint, hardening, values schema, yamllint, the Dockerfile. Run by ./scripts/test.sh after the Rust
tests. The chart's RBAC is proven where it matters, on a real API server: every end-to-end test
installs the chart with the real helm CLI and runs the operator as its ServiceAccount (any 403
fails the test), and tests/e2e.rs removes a rule to show the failure is clear."""

import os
import re
import subprocess
from pathlib import Path

import helm_python as helm
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "fulfillment-operator"
OPERATOR = ROOT / "target" / "debug" / "fulfillment-operator"

VALUE_SETS = {
    "defaults": {},
    "namespaced": {"watchNamespaces": ["orders", "payments"], "rbac": {"secretNamespaces": ["orders"]}, "planSelector": "shard=a"},
    "observability": {"serviceMonitor": {"enabled": True}, "networkPolicy": {"enabled": True, "apiServerCIDRs": ["10.0.0.1/32"]},
                      "grafanaDashboard": {"enabled": True}, "prometheusRule": {"enabled": True}},
    "single": {"replicaCount": 1, "leaderElection": {"enabled": False}, "logFormat": "text"},
}


def render(values, namespace="ops"):
    chart = helm.Chart.load(str(CHART))
    out = chart.render(values, name="fo", namespace=namespace, is_install=True)
    docs = []
    for path, text in out.items():
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs, out


def of_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def container(docs):
    deploy = of_kind(docs, "Deployment")
    assert len(deploy) == 1
    return deploy[0], deploy[0]["spec"]["template"]["spec"]["containers"][0]


def crate_version():
    text = (ROOT / "Cargo.toml").read_text()
    return re.search(r'^version = "([^"]+)"', text, re.M).group(1)


def test_chart_versions_follow_the_crate():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == crate_version()
    assert chart["version"] == crate_version()


def test_the_chart_ships_the_generated_crd():
    assert (CHART / "crds" / "fulfillment.dev_fulfillmentplans.yaml").read_text() == \
        (ROOT / "crds" / "fulfillment.dev_fulfillmentplans.yaml").read_text(), \
        "charts/fulfillment-operator/crds is stale: copy crds/fulfillment.dev_fulfillmentplans.yaml"


@pytest.mark.parametrize("name", VALUE_SETS)
def test_lints_strict_and_renders(name):
    result = helm.lint(str(CHART), strict=True, kube_version="v1.33.0", values=VALUE_SETS[name])
    assert result["errors"] == [], result
    assert not [m for m in result["messages"] if m["severity"] > 1], result
    docs, _ = render(VALUE_SETS[name])
    for d in docs:
        labels = d["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/name") == "fulfillment-operator", d["metadata"]
        assert labels.get("app.kubernetes.io/instance") == "fo"
        assert labels.get("app.kubernetes.io/version") == crate_version()


@pytest.mark.parametrize("name", VALUE_SETS)
def test_the_pod_is_hardened(name):
    docs, _ = render(VALUE_SETS[name])
    deploy, c = container(docs)
    pod = deploy["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "limits" in c["resources"] and "requests" in c["resources"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"


def granted(docs):
    """(group, resource, verb) triples the rendered RBAC grants."""
    out = set()
    for role in of_kind(docs, "ClusterRole") + of_kind(docs, "Role"):
        for rule in role["rules"]:
            for g in rule["apiGroups"]:
                for r in rule["resources"]:
                    for v in rule["verbs"]:
                        out.add((g, r, v))
    return out


def test_rbac_is_scoped_by_the_values():
    # By default no Secret may be read and no route changed; without leader election no Lease.
    docs, _ = render({"leaderElection": {"enabled": False}})
    grants = granted(docs)
    assert not any(r == "secrets" for _, r, _ in grants)
    assert not any(r == "leases" for _, r, _ in grants)
    assert not any(r in ("httproutes", "virtualservices", "dnsendpoints") for _, r, _ in grants)
    docs, _ = render({"rbac": {"routers": {"istio": True}}})
    assert ("networking.istio.io", "virtualservices", "patch") in granted(docs)
    assert not any(r == "dnsendpoints" for _, r, _ in granted(docs)), "each router is granted on its own"
    docs, _ = render({"rbac": {"routers": {"externalDNS": True}}})
    grants = granted(docs)
    assert {("externaldns.k8s.io", "dnsendpoints", v) for v in ("get", "patch")} <= grants
    assert not any(r in ("httproutes", "virtualservices") for _, r, _ in grants)
    assert not any(r == "dnsendpoints" and v not in ("get", "patch") for _, r, v in grants)
    # Failover reads the survivors' ready count through /status of the apps kinds only, never writes it.
    docs, _ = render({})
    grants = granted(docs)
    assert {("apps", "deployments/status", "get"), ("apps", "statefulsets/status", "get")} <= grants
    assert not any(r.endswith("/status") and g != "fulfillment.dev" and v != "get" for g, r, v in grants)
    assert not any(r == "kafkanodepools/status" for _, r, _ in grants)
    # Namespaced install: Roles in the watched namespaces only, no ClusterRole.
    docs, _ = render({"watchNamespaces": ["orders", "payments"]})
    assert of_kind(docs, "ClusterRole") == []
    assert sorted(r["metadata"]["namespace"] for r in of_kind(docs, "Role") if "leader" not in r["metadata"]["name"]) == ["orders", "payments"]
    # Every rule says why.
    rbac = (CHART / "templates" / "rbac.yaml").read_text() + (CHART / "templates" / "_helpers.tpl").read_text()
    for match in re.finditer(r"\n(\s*)- apiGroups:", rbac):
        before = rbac[:match.start()].rstrip().splitlines()[-1].strip()
        assert before.startswith("#") or before.startswith("{{- range") or before == "rules:", f"rule without a comment before: {rbac[match.start():match.start()+80]!r}"


@pytest.mark.parametrize("values,field", [
    ({"replicaCount": "two"}, "replicaCount"),
    ({"replicaCount": 0}, "replicaCount"),
    ({"logFormat": "xml"}, "logFormat"),
    ({"watchNamespaces": ["Not_A_Namespace"]}, "watchNamespaces"),
    ({"leaderElection": {"leaseDuration": "fifteen seconds"}}, "leaseDuration"),
    ({"replicas": 2}, "replicas"),
    ({"rbac": {"scaleTargets": [{"apiGroup": "apps"}]}}, "resources"),
])
def test_values_schema_rejects_bad_values(values, field):
    chart = helm.Chart.load(str(CHART))
    with pytest.raises(Exception) as err:
        chart.validate_schema(values)
    assert field in str(err.value), str(err.value)


def run_help():
    return subprocess.run([str(OPERATOR), "run", "--help"], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("name", VALUE_SETS)
def test_the_args_the_chart_passes_are_flags_the_binary_accepts(name):
    docs, _ = render(VALUE_SETS[name])
    _, c = container(docs)
    assert c["args"][0] == "run"
    help_text = run_help()
    for arg in c["args"][1:]:
        flag = arg.split("=", 1)[0]
        assert f"{flag} <" in help_text, f"{flag} is not a flag of `fulfillment-operator run`"


@pytest.mark.parametrize("name", VALUE_SETS)
def test_rendered_yaml_passes_yamllint(name, tmp_path):
    _, out = render(VALUE_SETS[name])
    for path, text in out.items():
        if path.endswith(".yaml") and text.strip():
            f = tmp_path / Path(path).name
            f.write_text(text)
            r = subprocess.run([str(Path(os.sys.executable).parent / "yamllint"), "-d", "{extends: relaxed, rules: {line-length: disable}}", str(f)],
                               capture_output=True, text=True)
            assert r.returncode == 0, f"{path}:\n{r.stdout}{r.stderr}"


def test_the_dockerfile_builds_the_binary_on_a_non_root_distroless_base():
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\S+))?", text, re.M)
    assert len(stages) == 2, "multi-stage: build, then runtime"
    assert stages[-1][0].startswith("gcr.io/distroless/") and stages[-1][0].endswith(":nonroot")
    user = re.findall(r"^USER (\S+)", text, re.M)[-1]
    assert re.fullmatch(r"[1-9][0-9]*:[1-9][0-9]*", user), f"numeric non-root user, got {user}"
    assert 'ENTRYPOINT ["/usr/local/bin/fulfillment-operator"]' in text
    assert 'CMD ["run"]' in text
    cargo = (ROOT / "Cargo.toml").read_text()
    assert re.search(r'\[\[bin\]\]\nname = "fulfillment-operator"', cargo)
    # The dependency layer stubs every target Cargo.toml declares, or `cargo build` fails there.
    benches = set(re.findall(r'\[\[bench\]\]\nname = "([^"]+)"', cargo))
    stubbed = set(re.search(r"for b in ([^;]+); do", text).group(1).split())
    assert benches == stubbed, f"benches {benches} vs stubbed {stubbed}"
    for src in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
        assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
    assert "--locked" in text and "--bin fulfillment-operator" in text


# --- Alerts: the optional PrometheusRule -------------------------------------------------------

ALERTS = ["FulfillmentPlanNotReady", "FulfillmentPlanMetricsUnavailable", "FulfillmentOperatorReconcileFailures",
          "FulfillmentOperatorNoLeader", "FulfillmentClusterFailedOver", "FulfillmentFailbackStuck",
          "FulfillmentPlanScaleDownBlocked"]


def promtool():
    for d in os.environ.get("PATH", "").split(":"):
        p = Path(d) / "promtool"
        if p.is_file():
            return str(p)
    pytest.fail("promtool is not installed: apt-get install -y prometheus (./scripts/test.sh does it)")


def rule_groups(values=None):
    docs, _ = render({"prometheusRule": {"enabled": True, **(values or {})}})
    rules = of_kind(docs, "PrometheusRule")
    assert len(rules) == 1
    return rules[0]["spec"]["groups"]


def exported_series():
    """Every sample name the operator exports, as the binary's own registry lists them."""
    assert OPERATOR.exists(), "build first: cargo build"
    out = subprocess.run([str(OPERATOR), "metrics"], capture_output=True, text=True, check=True).stdout
    return {line.split("\t")[0] for line in out.splitlines() if line}


def test_the_prometheus_rule_is_off_by_default_like_the_service_monitor():
    docs, _ = render({})
    assert of_kind(docs, "PrometheusRule") == []
    assert of_kind(docs, "ServiceMonitor") == []


def test_every_alert_is_there_with_a_summary_a_description_and_a_runbook_in_the_readme():
    groups = rule_groups()
    alerts = {r["alert"]: r for g in groups for r in g["rules"]}
    assert sorted(alerts) == sorted(ALERTS)
    readme = (ROOT / "README.md").read_text()
    # GitHub's heading anchors: lower case, spaces to '-', punctuation dropped.
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", readme, re.M)}
    for name, rule in alerts.items():
        a = rule["annotations"]
        assert a["summary"].strip() and len(a["description"]) > 80, name
        url, anchor = a["runbook_url"].split("#")
        assert url.endswith("/README.md") and anchor == name.lower(), a["runbook_url"]
        assert anchor in anchors, f"README has no runbook section for {name} (#{anchor})"
        assert rule["labels"]["severity"] in ("critical", "warning", "info")


def test_alerts_name_only_metrics_the_operator_exports():
    exported = exported_series()
    assert "fulfillment_plan_ready" in exported and "fulfillment_reconcile_runs_total" in exported
    for g in rule_groups():
        for r in g["rules"]:
            # Every metric the operator exports starts with fulfillment_; the rules select no other.
            names = set(re.findall(r"\b(fulfillment_[a-z0-9_]+)\b", r["expr"]))
            assert names, r["alert"]
            assert names <= exported, f"{r['alert']} uses {names - exported}, which the operator does not export"
            selectors = re.findall(r"\b[a-z_]+\{[^}]*\}", r["expr"])
            assert all('job="fo-fulfillment-operator"' in s for s in selectors), (r["alert"], selectors)


def promtool_test_rules(groups, tmp_path):
    """`promtool test rules` of tests/alerts/alerts_test.yaml against `groups`. The unit tests compare
    the summary; the long descriptions and links are checked elsewhere."""
    for g in groups:
        for r in g["rules"]:
            r["annotations"] = {"summary": r["annotations"]["summary"]}
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    (tmp_path / "alerts_test.yaml").write_text((ROOT / "tests" / "alerts" / "alerts_test.yaml").read_text())
    return subprocess.run([promtool(), "test", "rules", str(tmp_path / "alerts_test.yaml")], capture_output=True, text=True)


def test_promtool_checks_the_rules_and_their_unit_tests_pass(tmp_path):
    groups = rule_groups()
    (tmp_path / "full.yaml").write_text(yaml.safe_dump({"groups": groups}))
    check = subprocess.run([promtool(), "check", "rules", str(tmp_path / "full.yaml")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in check.stdout, check.stdout
    result = promtool_test_rules(groups, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_can_fail(tmp_path):
    """The unit tests would notice a changed threshold: render with a later notReadyFor."""
    result = promtool_test_rules(rule_groups({"notReadyFor": "1h"}), tmp_path)
    assert result.returncode != 0
    assert "FulfillmentPlanNotReady" in result.stdout + result.stderr


def test_the_rule_selector_and_thresholds_follow_the_values():
    groups = rule_groups({"selector": 'service="fo", namespace="ops"', "metricsUnavailableIntervals": 3,
                          "labels": {"release": "kube-prometheus-stack"}})
    exprs = {r["alert"]: r["expr"] for g in groups for r in g["rules"]}
    assert 'fulfillment_plan_ready{service="fo", namespace="ops"} == 0' in exprs["FulfillmentPlanNotReady"]
    assert "fulfillment_plan_interval_seconds" in exprs["FulfillmentPlanMetricsUnavailable"]
    assert exprs["FulfillmentPlanMetricsUnavailable"].rstrip().endswith("* 3")
    docs, _ = render({"prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}})
    assert of_kind(docs, "PrometheusRule")[0]["metadata"]["labels"]["release"] == "kube-prometheus-stack"


@pytest.mark.parametrize("values,field", [
    ({"prometheusRule": {"enabled": "yes"}}, "enabled"),
    ({"prometheusRule": {"notReadyFor": "fifteen minutes"}}, "notReadyFor"),
    ({"prometheusRule": {"metricsUnavailableIntervals": 0}}, "metricsUnavailableIntervals"),
    ({"prometheusRule": {"reconcileFailureRatio": 2}}, "reconcileFailureRatio"),
    ({"prometheusRule": {"selector": "job=fo"}}, "selector"),
    ({"prometheusRule": {"severities": {}}}, "severities"),
])
def test_values_schema_rejects_bad_alert_values(values, field):
    chart = helm.Chart.load(str(CHART))
    with pytest.raises(Exception) as err:
        chart.validate_schema(values)
    assert field in str(err.value), str(err.value)
