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
pub fn block<F>(future: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    futures::executor::block_on(runtime().spawn(future)).expect("support task panicked")
}
