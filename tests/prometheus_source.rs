//! The Prometheus source against a real Prometheus (Debian's package) on loopback.

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fulfillment_operator::engine::{Missing, Reading};
use fulfillment_operator::prometheus::{PrometheusConfig, PrometheusSource, QueryError};
use support::{Exporter, HttpStub, Prometheus};

fn source(url: &str) -> PrometheusSource {
    PrometheusSource::new(&PrometheusConfig {
        address: url.to_string(),
        timeout: Duration::from_secs(2),
        ..Default::default()
    })
    .expect("source builds")
}

/// Query until `accept` takes the answer, or fail after 20 s.
async fn until(
    src: &PrometheusSource,
    query: &str,
    accept: impl Fn(&Result<f64, QueryError>) -> bool,
) -> Result<f64, QueryError> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = src.instant(query, None).await;
        if accept(&r) {
            return r;
        }
        assert!(Instant::now() < deadline, "{query}: last answer {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_a_scraped_value_and_sees_it_change() {
    let exporter = Exporter::start();
    exporter.set("orders_per_minute 8500\n");
    let prom = Prometheus::scraping(&[exporter.target()]);
    let src = source(&prom.url());
    let v = until(&src, "orders_per_minute", |r| r.is_ok()).await.unwrap();
    assert_eq!(v, 8500.0);
    exporter.set("orders_per_minute 12000\n");
    let v = until(&src, "orders_per_minute", |r| r.as_ref().is_ok_and(|v| *v != 8500.0)).await.unwrap();
    assert_eq!(v, 12000.0);
    assert_eq!(src.reading("sum(orders_per_minute)").await, Reading::Value(12000.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn tells_no_data_nan_several_series_and_bad_promql_apart() {
    let exporter = Exporter::start();
    exporter.set("lag{partition=\"0\"} 10\nlag{partition=\"1\"} 30\n");
    let prom = Prometheus::scraping(&[exporter.target()]);
    let src = source(&prom.url());
    until(&src, "sum(lag)", |r| r.is_ok()).await.unwrap();

    match src.instant("lag", None).await {
        Err(QueryError::MultipleSeries { count, series, .. }) => {
            assert_eq!(count, 2);
            assert!(series.contains("partition=\"0\"") && series.contains("partition=\"1\""), "{series}");
        }
        other => panic!("expected several series, got {other:?}"),
    }
    let e = src.instant("lag", None).await.unwrap_err().to_string();
    assert!(e.contains("aggregate it"), "{e}");

    assert!(matches!(src.instant("no_such_metric", None).await, Err(QueryError::NoData { .. })));
    assert_eq!(src.reading("no_such_metric").await, Reading::Missing(Missing::NoData));

    let nan = src.instant("sum(lag) / 0 - sum(lag) / 0", None).await.unwrap();
    assert!(nan.is_nan());
    assert_eq!(src.reading("sum(lag) / 0 - sum(lag) / 0").await, Reading::Missing(Missing::NotANumber));

    match src.instant("sum(lag", None).await {
        Err(QueryError::Rejected { message, .. }) => assert!(message.contains("parse error"), "{message}"),
        other => panic!("expected a PromQL error, got {other:?}"),
    }
    // A scalar is one value.
    assert_eq!(src.instant("scalar(sum(lag))", None).await.unwrap(), 40.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_down_is_unreachable_and_recovers() {
    let exporter = Exporter::start();
    exporter.set("up_metric 1\n");
    let mut prom = Prometheus::scraping(&[exporter.target()]);
    let src = source(&prom.url());
    until(&src, "up_metric", |r| r.is_ok()).await.unwrap();
    prom.kill();
    match src.instant("up_metric", None).await {
        Err(e @ QueryError::Unreachable { .. }) => assert!(e.to_string().contains(&prom.addr), "{e}"),
        other => panic!("expected unreachable, got {other:?}"),
    }
    assert!(matches!(src.reading("up_metric").await, Reading::Missing(Missing::QueryFailed(_))));
    prom.restart();
    until(&src, "up_metric", |r| r.is_ok()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_server_times_out() {
    let stub = HttpStub::start(|_| None); // accepts, never answers
    let src = PrometheusSource::new(&PrometheusConfig {
        address: stub.url(),
        timeout: Duration::from_millis(300),
        ..Default::default()
    })
    .unwrap();
    let started = Instant::now();
    let r = src.instant("up", None).await;
    assert!(matches!(r, Err(QueryError::Timeout { .. })), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn sends_the_bearer_token_and_never_prints_it() {
    let body =
        r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"7"]}]}}"#;
    let stub = HttpStub::start(move |req| match req.header("authorization") {
        Some("Bearer s3cr3t-token") => Some((200, "application/json", body.to_string())),
        _ => Some((401, "text/plain", "unauthorized".to_string())),
    });
    let config = PrometheusConfig {
        address: stub.url(),
        timeout: Duration::from_secs(2),
        bearer_token: Some("s3cr3t-token\n".into()),
        ..Default::default()
    };
    assert!(!format!("{config:?}").contains("s3cr3t"));
    let src = PrometheusSource::new(&config).unwrap();
    assert!(!format!("{src:?}").contains("s3cr3t"));
    assert_eq!(src.instant("up", None).await.unwrap(), 7.0);

    let anonymous = source(&stub.url());
    let e = anonymous.instant("up", None).await.unwrap_err();
    assert!(e.to_string().contains("401"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn https_with_a_custom_ca() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server_params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();

    let prom = Prometheus::with_tls(&server_cert.pem(), &server_key.serialize_pem());
    let trusted = PrometheusSource::new(&PrometheusConfig {
        address: prom.https_url(),
        timeout: Duration::from_secs(2),
        ca_pem: Some(ca_cert.pem().into_bytes()),
        ..Default::default()
    })
    .unwrap();
    let v = until(&trusted, "vector(3)", |r| r.is_ok()).await.unwrap();
    assert_eq!(v, 3.0);

    let untrusted = source(&prom.https_url());
    let e = untrusted.instant("vector(3)", None).await.unwrap_err().to_string();
    assert!(e.to_lowercase().contains("certificate"), "{e}");

    let skip = PrometheusSource::new(&PrometheusConfig {
        address: prom.https_url(),
        timeout: Duration::from_secs(2),
        insecure_skip_verify: true,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(skip.instant("vector(3)", None).await.unwrap(), 3.0);

    let bad_ca = PrometheusSource::new(&PrometheusConfig {
        address: prom.https_url(),
        ca_pem: Some(b"not a certificate".to_vec()),
        ..Default::default()
    });
    assert!(bad_ca.unwrap_err().to_string().contains("CA bundle"));
}

#[tokio::test(flavor = "multi_thread")]
async fn range_queries_read_backfilled_history() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let start = now - 3 * 3600;
    let mut om = String::from("# TYPE orders_per_minute gauge\n");
    for i in 0..=120 {
        om.push_str(&format!("orders_per_minute {} {}\n", 1000 + i * 10, start + i * 60));
    }
    om.push_str("# EOF\n");
    let prom = Prometheus::backfilled(&om);
    let src = source(&prom.url());
    let samples = src.range("orders_per_minute", start, start + 120 * 60, 60.0).await.unwrap();
    assert_eq!(samples.len(), 121);
    assert_eq!(samples[0], (start as f64, 1000.0));
    assert_eq!(samples[120], ((start + 7200) as f64, 2200.0));
    // at(t): an instant query in the past sees the history too.
    assert_eq!(src.instant("orders_per_minute", Some(start + 600)).await.unwrap(), 1100.0);
    assert!(src.range("no_such_metric", start, start + 600, 60.0).await.unwrap().is_empty());
}
