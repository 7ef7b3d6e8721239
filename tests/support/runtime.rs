//! One Tokio runtime for the support code of a test binary (the fault proxies and the tests'
//! own Kubernetes clients), separate from each test's runtime, so support calls stay
//! synchronous and usable inside the tests' polling closures.

use std::future::Future;
use std::sync::OnceLock;

/// The support runtime (two worker threads, alive as long as the process).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-support")
            .enable_all()
            .build()
            .expect("the support runtime starts")
    })
}

/// Run `future` on the support runtime and wait for it, from sync or async test code alike.
///
/// The wait is a plain channel receive: polling a Tokio `JoinHandle` from inside a test's own
/// runtime would spend that task's cooperative budget and then spin on a self-wake.
pub fn block<F>(future: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime().spawn(async move {
        let _ = tx.send(future.await);
    });
    rx.recv().expect("support task panicked")
}
