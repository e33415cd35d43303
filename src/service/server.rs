//! Serving the router on the listener: HTTP/1 connections under a cap, a header read timeout,
//! and a shutdown that waits only for requests being answered.
//!
//! - At most `max_connections` connections are served at once; the acceptor takes the next
//!   one only when a slot is free, so newcomers wait in the listen backlog instead of a slow
//!   crowd exhausting the process's file descriptors or memory.
//! - A connection has `header_timeout` to send a request's headers, counted from its opening
//!   and, on a keep-alive connection, from the end of the previous response; then it is
//!   closed. Slow or silent clients, idle keep-alives included, hold a slot that long at most.
//!   (The webhook body's deadline, `body_timeout`, is a layer of the router.)
//! - On shutdown the acceptor stops, idle connections are closed, and so are connections whose
//!   request has not fully arrived (half-sent headers or body: nothing was acknowledged on
//!   them). A request that has arrived is answered, and its connection then closed, within the
//!   grace period; whatever is still open after it is dropped.

use crate::config::ServeSettings;
use axum::body::{Body, Bytes, HttpBody};
use axum::http::Request;
use axum::Router;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tower::ServiceExt;

/// How long the acceptor pauses after a failed accept (out of file descriptors, say) before
/// trying again, so that it does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` until `shutdown` resolves, then drains as described in the
/// module documentation and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: &ServeSettings,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout);
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break };
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match stream {
            Ok((stream, _)) => {
                let (builder, router) = (builder.clone(), router.clone());
                connections.spawn(connection(builder, stream, router, slot, stopping.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(ACCEPT_RETRY) => {}
                }
            }
        }
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    stop.send_replace(true);
    let drained = tokio::time::timeout(settings.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "requests still being answered after the grace period; closing their connections"
        );
        connections.shutdown().await;
    }
}

/// Serves one connection, holding its slot until it closes.
async fn connection(
    builder: auto::Builder<TokioExecutor>,
    stream: TcpStream,
    router: Router,
    _slot: OwnedSemaphorePermit,
    mut stopping: watch::Receiver<bool>,
) {
    let (answering, mut answered) = watch::channel(false);
    let answering = Arc::new(answering);
    let service = tower::service_fn(move |request: Request<Incoming>| {
        let answering = answering.clone();
        let router = router.clone();
        async move {
            let _answered = Answered(answering.clone());
            let request = request.map(|body| Body::new(Arrival::new(body, answering)));
            router.oneshot(request).await
        }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    tokio::pin!(conn);
    tokio::select! {
        done = conn.as_mut() => return log_end(done),
        _ = stopping.wait_for(|stop| *stop) => {}
    }
    // Idle: closed at once. Answering: the response goes out, then the connection closes.
    // Anything else (a request still arriving) is dropped.
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        biased;
        done = conn.as_mut() => log_end(done),
        _ = answered.wait_for(|answering| !*answering) => {}
    }
}

fn log_end<E: std::fmt::Display>(done: Result<(), E>) {
    if let Err(e) = done {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Clears the connection's "answering" flag when the request's handling ends.
struct Answered(Arc<watch::Sender<bool>>);

impl Drop for Answered {
    fn drop(&mut self) {
        self.0.send_replace(false);
    }
}

/// A request body that sets the connection's "answering" flag once it has arrived in full.
struct Arrival {
    body: Incoming,
    answering: Option<Arc<watch::Sender<bool>>>,
}

impl Arrival {
    fn new(body: Incoming, answering: Arc<watch::Sender<bool>>) -> Arrival {
        let mut arrival = Arrival {
            body,
            answering: Some(answering),
        };
        arrival.check(false);
        arrival
    }

    fn check(&mut self, ended: bool) {
        if ended || self.body.is_end_stream() {
            if let Some(answering) = self.answering.take() {
                answering.send_replace(true);
            }
        }
    }
}

impl HttpBody for Arrival {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        self.check(matches!(polled, Poll::Ready(None)));
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
