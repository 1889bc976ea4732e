//! Clients for the local application: HTTP/1.1 and HTTP/2 (prior knowledge), pooled.

use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};

/// Pooled connections to the app.
#[derive(Clone, Debug)]
pub struct AppClient {
    /// HTTP/1.1.
    pub http1: Client<HttpConnector, Incoming>,
    /// HTTP/2 with prior knowledge (gRPC).
    pub http2: Client<HttpConnector, Incoming>,
}

impl AppClient {
    /// Clients with the given timeouts and pool bounds.
    pub fn new(connect_timeout: Duration, pool_idle: Duration, pool_max_idle: usize) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        connector.enforce_http(true);
        let base = || {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_idle_timeout(pool_idle)
                .pool_max_idle_per_host(pool_max_idle)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new());
            b
        };
        let http1 = base().build(connector.clone());
        // The app's HTTP/2 connection is shared by the requests of many mesh streams: the
        // same windows as the mesh side, so one stalled response cannot hold the others.
        let http2 = base()
            .http2_only(true)
            .http2_initial_stream_window_size(crate::http_util::STREAM_WINDOW)
            .http2_initial_connection_window_size(crate::http_util::connection_window(
                APP_MAX_STREAMS,
            ))
            .build(connector);
        Self { http1, http2 }
    }
}

/// Concurrent streams assumed on the app's HTTP/2 connection when sizing its window.
const APP_MAX_STREAMS: u32 = 100;
