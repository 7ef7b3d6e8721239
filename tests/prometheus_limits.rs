//! The Prometheus source against hostile or overloaded servers: an endless body is cut at a
//! stated limit, and a 429 with Retry-After is waited out (within the query's timeout) instead of
//! being reported as a failure at once.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fulfillment_operator::prometheus::{PrometheusConfig, PrometheusSource, QueryError};

/// A loopback HTTP/1.1 server; `reply` gets the request number (0-based) and writes the whole
/// response itself.
fn serve(reply: impl Fn(usize, &mut TcpStream) + Send + Sync + 'static) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let reply = Arc::new(reply);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let reply = reply.clone();
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line.trim().is_empty() {
                            break;
                        }
                    }
                    let n = seen.fetch_add(1, Ordering::SeqCst);
                    reply(n, &mut stream);
                }
            });
        }
    });
    (url, count)
}

fn source(url: &str, timeout: Duration) -> PrometheusSource {
    PrometheusSource::new(&PrometheusConfig { address: url.into(), timeout, ..Default::default() }).unwrap()
}

const ONE: &str =
    r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"42"]}]}}"#;

fn ok(stream: &mut TcpStream, body: &str) {
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_body_is_cut_at_the_limit() {
    let (url, _) = serve(|_, stream| {
        let _ = write!(stream, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n");
        let _ = stream.write_all(br#"{"status":"success","data":{"resultType":"vector","result":["#);
        let chunk = vec![b' '; 1 << 20];
        // Up to 4 GiB of whitespace, as fast as the client reads it.
        for _ in 0..4096 {
            if stream.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let src = source(&url, Duration::from_secs(20));
    let start = Instant::now();
    let err = src.instant("up", None).await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    assert!(matches!(err, QueryError::Failed { .. }), "{err:?}");
    assert!(err.to_string().contains("larger than"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_429_with_retry_after_is_waited_out() {
    let (url, count) = serve(|n, stream| {
        if n == 0 {
            let body = r#"{"status":"error","errorType":"too_many_requests","error":"slow down"}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 429 Too Many Requests\r\nretry-after: 1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
        } else {
            ok(stream, ONE);
        }
    });
    let src = source(&url, Duration::from_secs(5));
    let start = Instant::now();
    assert_eq!(src.instant("up", None).await.unwrap(), 42.0);
    assert!(start.elapsed() >= Duration::from_millis(950), "did not wait: {:?}", start.elapsed());
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_after_beyond_the_timeout_is_reported_with_its_delay() {
    let (url, count) = serve(|_, stream| {
        let _ = write!(stream, "HTTP/1.1 429 Too Many Requests\r\nretry-after: 120\r\ncontent-length: 0\r\n\r\n");
    });
    let src = source(&url, Duration::from_secs(2));
    let start = Instant::now();
    match src.instant("up", None).await {
        Err(QueryError::RateLimited { retry_after, .. }) => assert_eq!(retry_after, Some(Duration::from_secs(120))),
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(2), "waited beyond its timeout: {:?}", start.elapsed());
    assert_eq!(count.load(Ordering::SeqCst), 1);
    // Honoured: until the delay has passed, no request is sent at all.
    assert!(matches!(src.instant("up", None).await, Err(QueryError::RateLimited { .. })));
    assert!(matches!(src.range("up", 0, 60, 15.0).await, Err(QueryError::RateLimited { .. })));
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn long_ranges_are_split_under_prometheus_point_limit() {
    // Prometheus refuses more than 11,000 points per series; 30,000 steps take three requests.
    let (url, count) = serve(|_, stream| {
        ok(stream, r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#);
    });
    let src = source(&url, Duration::from_secs(5));
    let samples = src.range("up", 0, 30_000, 1.0).await.unwrap();
    assert!(samples.is_empty());
    assert_eq!(count.load(Ordering::SeqCst), 3);
}
