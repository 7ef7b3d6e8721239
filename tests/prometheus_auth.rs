//! Every common way to reach Prometheus, against the real Prometheus (Debian's package) with its
//! own web configuration (`--web.config.file`): basic auth users, a required client certificate
//! (mutual TLS), a tenant header checked by a loopback proxy in front of it (as Mimir, Cortex and
//! multi-tenant Thanos check `X-Scope-OrgID`), and a path prefix (`--web.route-prefix`). Each
//! failure must say what it is: "unauthorized" or a TLS error naming the setting, never
//! "unreachable".

mod support;

use std::time::{Duration, Instant};

use fulfillment_operator::prometheus::{
    AuthMode, BasicCredentials, ClientIdentity, ExtraHeader, PrometheusConfig, PrometheusSource, QueryError,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use support::{HttpStub, Prometheus, http_get};

/// Query `vector(1)` until it answers, or fail after 20 s with the last error.
async fn until_up(src: &PrometheusSource) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match src.instant("vector(1)", None).await {
            Ok(v) => {
                assert_eq!(v, 1.0);
                return;
            }
            Err(e) => assert!(Instant::now() < deadline, "Prometheus did not answer: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until Prometheus answers `path` with anything (used where the client under test must
/// fail: first make sure the server is up, so the failure is the one under test).
fn listening(prom: &Prometheus) {
    support::wait_for("Prometheus listening", Duration::from_secs(20), || {
        std::net::TcpStream::connect(&prom.addr).ok()
    });
}

fn config(address: String) -> PrometheusConfig {
    PrometheusConfig { address, timeout: Duration::from_secs(3), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_users_and_a_wrong_password_is_unauthorized_not_unreachable() {
    // Prometheus 2.42's web config takes bcrypt hashes of the passwords.
    let hash = bcrypt::hash("correct horse battery", 4).unwrap();
    let prom = Prometheus::with_web(&format!("basic_auth_users:\n  alice: '{hash}'\n"), &[], &[]);
    listening(&prom);

    let right = PrometheusConfig {
        basic_auth: Some(BasicCredentials { username: "alice".into(), password: "correct horse battery\n".into() }),
        ..config(prom.url())
    };
    let printed = format!("{right:?}");
    assert!(!printed.contains("correct horse"), "the password is printed: {printed}");
    assert!(printed.contains("alice"), "{printed}");
    let src = PrometheusSource::new(&right).unwrap();
    assert!(!format!("{src:?}").contains("correct horse"));
    until_up(&src).await;

    let wrong = PrometheusSource::new(&PrometheusConfig {
        basic_auth: Some(BasicCredentials { username: "alice".into(), password: "wrong".into() }),
        ..config(prom.url())
    })
    .unwrap();
    let e = wrong.instant("vector(1)", None).await.unwrap_err();
    match &e {
        QueryError::Unauthorized { status, auth, .. } => {
            assert_eq!(*status, 401);
            assert_eq!(*auth, AuthMode::BasicAuth);
        }
        other => panic!("expected unauthorized, got {other:?}"),
    }
    assert_eq!(e.metric_label(), "unauthorized");
    assert!(e.is_credentials());
    let text = e.to_string();
    assert!(text.contains("unauthorized with basic auth"), "{text}");
    assert!(text.contains("basicAuth Secret"), "{text}");
    assert!(!text.contains("unreachable"), "{text}");
    assert!(!text.contains("wrong"), "the password leaks into the error: {text}");
    // What the plan's status and events show for the dimension.
    assert!(e.to_missing().to_string().contains("unauthorized"), "{}", e.to_missing());

    let anonymous = PrometheusSource::new(&config(prom.url())).unwrap();
    let e = anonymous.instant("vector(1)", None).await.unwrap_err();
    assert!(matches!(e, QueryError::Unauthorized { auth: AuthMode::None, .. }), "{e:?}");
    assert!(e.to_string().contains("set bearerTokenSecretRef, basicAuth"), "{e}");
}

/// A CA, a server certificate for 127.0.0.1 it signs, and a client certificate it signs.
struct Pki {
    ca_pem: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params.distinguished_name.push(DnType::CommonName, "fulfillment-operator");
    let client_cert = client_params.signed_by(&client_key, &issuer).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        server: (server_cert.pem(), server_key.serialize_pem()),
        client: (client_cert.pem(), client_key.serialize_pem()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn client_certificate_required_and_a_missing_one_is_a_clear_tls_error() {
    let pki = pki();
    let web = "tls_server_config:\n  cert_file: {dir}/server.crt\n  key_file: {dir}/server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {dir}/ca.crt\n";
    let prom = Prometheus::with_web(
        web,
        &[("server.crt", &pki.server.0), ("server.key", &pki.server.1), ("ca.crt", &pki.ca_pem)],
        &[],
    );
    listening(&prom);

    let with_cert = PrometheusConfig {
        ca_pem: Some(pki.ca_pem.clone().into_bytes()),
        client_identity: Some(ClientIdentity {
            cert_pem: pki.client.0.clone().into_bytes(),
            key_pem: pki.client.1.clone().into_bytes(),
        }),
        ..config(prom.https_url())
    };
    let printed = format!("{with_cert:?}");
    assert!(!printed.contains("PRIVATE KEY"), "the key is printed: {printed}");
    let src = PrometheusSource::new(&with_cert).unwrap();
    until_up(&src).await;

    // No client certificate: the server ends the handshake.
    let without = PrometheusSource::new(&PrometheusConfig {
        ca_pem: Some(pki.ca_pem.clone().into_bytes()),
        ..config(prom.https_url())
    })
    .unwrap();
    let e = without.instant("vector(1)", None).await.unwrap_err();
    assert!(matches!(e, QueryError::Tls { .. }), "{e:?}");
    assert_eq!(e.metric_label(), "tls");
    let text = e.to_string();
    assert!(text.contains("requires a client certificate: set tls.clientCertificate"), "{text}");
    assert!(!text.contains("unreachable"), "{text}");

    // A certificate from another CA: refused.
    let other = pki_client_from_another_ca();
    let refused = PrometheusSource::new(&PrometheusConfig {
        ca_pem: Some(pki.ca_pem.clone().into_bytes()),
        client_identity: Some(ClientIdentity { cert_pem: other.0.into_bytes(), key_pem: other.1.into_bytes() }),
        ..config(prom.https_url())
    })
    .unwrap();
    let e = refused.instant("vector(1)", None).await.unwrap_err();
    assert!(matches!(e, QueryError::Tls { .. }), "{e:?}");
    assert!(e.to_string().contains("refused the client certificate"), "{e}");

    // The server's certificate not trusted: a TLS error that names tls.caSecretRef.
    let untrusted = PrometheusSource::new(&PrometheusConfig {
        client_identity: Some(ClientIdentity {
            cert_pem: pki.client.0.clone().into_bytes(),
            key_pem: pki.client.1.clone().into_bytes(),
        }),
        ..config(prom.https_url())
    })
    .unwrap();
    let e = untrusted.instant("vector(1)", None).await.unwrap_err();
    assert!(matches!(e, QueryError::Tls { .. }), "{e:?}");
    assert!(e.to_string().contains("set tls.caSecretRef"), "{e}");

    // A key that is not PEM is refused when the connection is set up, naming the fix.
    let bad = PrometheusSource::new(&PrometheusConfig {
        client_identity: Some(ClientIdentity {
            cert_pem: pki.client.0.clone().into_bytes(),
            key_pem: b"not a key".to_vec(),
        }),
        ..config(prom.https_url())
    });
    let e = bad.unwrap_err().to_string();
    assert!(e.contains("client certificate or key is not usable") && e.contains("not a PEM private key"), "{e}");
}

fn pki_client_from_another_ca() -> (String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(Vec::<String>::new()).unwrap().signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A loopback proxy in front of `prom` that forwards only requests carrying
/// `X-Scope-OrgID: tenant`, and answers 401 "no org id" otherwise (as Mimir does).
fn tenant_proxy(prom: &Prometheus, tenant: &'static str) -> HttpStub {
    let upstream = prom.addr.clone();
    HttpStub::start(move |req| {
        if req.header("x-scope-orgid") != Some(tenant) {
            return Some((401, "text/plain", "no org id\n".to_string()));
        }
        let path = req.line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let (status, body) = http_get(&upstream, &path).unwrap_or((502, "upstream down".into()));
        Some((status, "application/json", body))
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_header_reaches_a_proxy_that_refuses_requests_without_it() {
    let prom = Prometheus::scraping(&[]);
    let proxy = tenant_proxy(&prom, "tenant-a");

    let tenant = PrometheusConfig {
        headers: vec![ExtraHeader { name: "X-Scope-OrgID".into(), value: "tenant-a".into(), sensitive: false }],
        ..config(proxy.url())
    };
    let src = PrometheusSource::new(&tenant).unwrap();
    until_up(&src).await;
    assert!(proxy.seen.lock().unwrap().iter().any(|r| r.header("x-scope-orgid") == Some("tenant-a")));

    let no_tenant = PrometheusSource::new(&config(proxy.url())).unwrap();
    let e = no_tenant.instant("vector(1)", None).await.unwrap_err();
    assert!(matches!(e, QueryError::Unauthorized { status: 401, auth: AuthMode::None, .. }), "{e:?}");
    assert!(e.to_string().contains("X-Scope-OrgID"), "{e}");

    // A header value from a Secret is never printed.
    let secret = PrometheusConfig {
        headers: vec![ExtraHeader { name: "X-Scope-OrgID".into(), value: "tenant-a\n".into(), sensitive: true }],
        ..config(proxy.url())
    };
    assert!(!format!("{secret:?}").contains("tenant-a"), "{secret:?}");
    // ...and a trailing newline from `echo` into the Secret does not break it.
    assert_eq!(PrometheusSource::new(&secret).unwrap().instant("vector(2)", None).await.unwrap(), 2.0);

    // Headers that would fight the connection's own are refused at set-up.
    for name in ["Authorization", "host", "Bad Header"] {
        let e = PrometheusSource::new(&PrometheusConfig {
            headers: vec![ExtraHeader { name: name.into(), value: "x".into(), sensitive: false }],
            ..config(proxy.url())
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains(&format!("header {name:?} cannot be sent")), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_path_prefix_reaches_an_api_that_is_not_at_the_root() {
    let prom = Prometheus::with_web("", &[], &["--web.route-prefix=/prometheus"]);
    listening(&prom);
    let prefixed =
        PrometheusSource::new(&PrometheusConfig { path_prefix: "/prometheus/".into(), ..config(prom.url()) }).unwrap();
    assert_eq!(prefixed.address(), format!("{}/prometheus", prom.url()));
    until_up(&prefixed).await;
    // Without it the API is not found.
    let root = PrometheusSource::new(&config(prom.url())).unwrap();
    let e = root.instant("vector(1)", None).await.unwrap_err().to_string();
    assert!(e.contains("HTTP 404"), "{e}");

    let bad = PrometheusSource::new(&PrometheusConfig { path_prefix: "prometheus".into(), ..config(prom.url()) });
    assert!(bad.unwrap_err().to_string().contains("pathPrefix \"prometheus\" must start with /"));
}
