//! The HTTP face of the service: webhook intake, the JSON API, metrics, health, and the status
//! page. Handlers are thin: checks and parsing live in [`crate::intake::webhook`], state in the store.

use super::fleets::{FleetInfo, Unrouted};
use super::Service;
use crate::intake::webhook::{self, Event, Provider, Rejection};
use crate::model::mirror::Trigger;
use crate::model::refs::RefMap;
use crate::model::remote::Secret;
use crate::service::mirror_page::RUNS_SHOWN;
use crate::service::page::{Filter, LfsSent, Listing};
use crate::service::status::{now_ms, view, RunSummary};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tower_http::timeout::TimeoutLayer;

type Svc = State<Arc<Service>>;

pub fn router(svc: Arc<Service>) -> Router {
    let hooks = Router::new()
        .route("/hooks/{mirror}", post(hook))
        .layer(DefaultBodyLimit::max(svc.serve.max_body_bytes))
        // The body must arrive (and be answered) in time, however it trickles in: 408 after.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            svc.serve.body_timeout,
        ))
        .layer(middleware::from_fn(count_webhook_statuses));
    Router::new()
        .route("/", get(page))
        .route("/mirrors/{*mirror}", get(mirror_page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/mirrors", get(list))
        .route("/api/nodes", get(nodes))
        .route("/api/fleets", get(fleets))
        .route("/api/mirrors/{mirror}", get(one))
        .route("/api/mirrors/{mirror}/runs", get(runs))
        .route("/api/mirrors/{mirror}/sync", post(manual))
        .merge(hooks)
        .with_state(svc)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn internal(e: anyhow::Error) -> Response {
    tracing::error!(error = %format!("{e:#}"), "request failed");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the store is unavailable; try again",
    )
}

/// `POST /hooks/{mirror}`: 202 once the event is committed, 200 for deliveries that need no
/// sync (pings, pull requests), 401/400/404/413 for rejected ones and 408 for bodies that do
/// not arrive within `body_timeout`, which queue nothing.
async fn hook(
    State(svc): Svc,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if svc.is_stopping() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ferry is shutting down; deliver again later",
        );
    }
    let headers: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let Some(configured) = svc.mirror(&name) else {
        if let Some(fleet) = svc.fleet(&name) {
            let fleet = fleet.clone();
            return fleet_hook(&svc, &fleet, &headers, &body).await;
        }
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "no mirror or fleet named '{name}' is configured (a fleet member's hook is \
                 /hooks/<fleet>%2F<path>; a fleet's own hook, for organisation or group \
                 webhooks, is /hooks/<fleet>)"
            ),
        );
    };
    let secret = configured
        .webhook_secret
        .as_ref()
        .map_or("", Secret::expose);
    let request = webhook::Request {
        headers: &headers,
        body: &body,
    };
    let expect = webhook::Expect {
        secret,
        provider: configured.webhook_provider,
    };
    match webhook::receive(&request, expect) {
        Err(Rejection::Unauthorized(message)) => error(StatusCode::UNAUTHORIZED, message),
        Err(Rejection::Malformed(message)) => error(StatusCode::BAD_REQUEST, message),
        Ok(Event::Ignored { provider, reason }) => (
            StatusCode::OK,
            Json(json!({ "queued": false, "provider": provider.as_str(), "ignored": reason })),
        )
            .into_response(),
        Ok(Event::Push {
            provider,
            refs,
            ids,
            olds,
        }) => queue_push(&svc, &name, provider, (&refs, &ids, &olds), "", false).await,
    }
}

/// Queues the sync a push asks for: 202 once the event is committed.
async fn queue_push(
    svc: &Service,
    mirror: &str,
    provider: Provider,
    (refs, ids, olds): (&[String], &RefMap, &RefMap),
    via: &str,
    discovering: bool,
) -> Response {
    let trigger = if provider == Provider::CodeCommit {
        Trigger::Codecommit
    } else {
        Trigger::Webhook
    };
    let detail = format!("{} push {}", provider.as_str(), refs.join(" "))
        .trim_end()
        .to_owned()
        + via;
    match svc.trigger(mirror, trigger, &detail, refs, (ids, olds)).await {
        Ok(id) => (
            StatusCode::ACCEPTED,
            Json(json!({ "queued": true, "event": id, "provider": provider.as_str(), "mirror": mirror, "discovering": discovering })),
        )
            .into_response(),
        Err(e) => internal(e),
    }
}

/// `POST /hooks/{fleet}`: an organisation's or group's webhook (or CodeCommit events) for
/// every repository of a fleet, authenticated with the fleet's secret. A push is queued for
/// the member whose source repository it names; a push for a repository no discovery has
/// found makes the fleet discover now (202, then the push is routed).
async fn fleet_hook(
    svc: &Service,
    fleet: &FleetInfo,
    headers: &[(String, String)],
    body: &[u8],
) -> Response {
    let secret = fleet.webhook_secret.as_ref().map_or("", Secret::expose);
    let request = webhook::Request { headers, body };
    let expect = webhook::Expect {
        secret,
        provider: fleet.webhook_provider,
    };
    match webhook::receive_for_fleet(&request, expect) {
        Err(Rejection::Unauthorized(message)) => error(StatusCode::UNAUTHORIZED, message),
        Err(Rejection::Malformed(message)) => error(StatusCode::BAD_REQUEST, message),
        Ok((Event::Ignored { provider, reason }, _)) => (
            StatusCode::OK,
            Json(json!({ "queued": false, "provider": provider.as_str(), "ignored": reason })),
        )
            .into_response(),
        Ok((Event::Push { provider, .. }, None)) => error(
            StatusCode::BAD_REQUEST,
            format!(
                "this {} push names no repository, so it cannot be routed to a member of the \
                 fleet '{}'; point the repository's own webhook at /hooks/<fleet>%2F<path>",
                provider.label(),
                fleet.name
            ),
        ),
        Ok((
            Event::Push {
                provider,
                refs,
                ids,
                olds,
            },
            Some(origin),
        )) => {
            match svc.route(&fleet.name, &origin) {
                Some(route) if !route.moved => {
                    let via = format!(" (fleet hook, {origin})");
                    return queue_push(
                        svc,
                        &route.member,
                        provider,
                        (&refs, &ids, &olds),
                        &via,
                        false,
                    )
                    .await;
                }
                Some(route) => {
                    // Renamed since the last discovery: the member syncs now, and a discovery
                    // makes it follow the rename (then the push is routed again).
                    let via = format!(" (fleet hook, {origin}: renamed, discovering)");
                    let queued = queue_push(
                        svc,
                        &route.member,
                        provider,
                        (&refs, &ids, &olds),
                        &via,
                        true,
                    )
                    .await;
                    let push = Unrouted {
                        origin,
                        provider,
                        refs,
                        ids,
                        olds,
                    };
                    if let Err(e) = svc.discover_for(&fleet.name, push).await {
                        return internal(e);
                    }
                    return queued;
                }
                None => {}
            }
            tracing::info!(fleet = %fleet.name, repository = %origin, "a push for a repository no discovery has found: discovering");
            let push = Unrouted {
                origin,
                provider,
                refs,
                ids,
                olds,
            };
            match svc.discover_for(&fleet.name, push).await {
                Ok(()) => (
                    StatusCode::ACCEPTED,
                    Json(json!({ "queued": false, "discovering": true, "provider": provider.as_str() })),
                )
                    .into_response(),
                Err(e) => internal(e),
            }
        }
    }
}

async fn count_webhook_statuses(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    metrics::counter!("ferry_webhook_requests_total", "status" => response.status().as_u16().to_string()).increment(1);
    response
}

/// `POST /api/mirrors/{mirror}/sync` with `Authorization: Bearer <admin token>`.
async fn manual(State(svc): Svc, Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some(token) = &svc.serve.admin_token else {
        return error(
            StatusCode::FORBIDDEN,
            "manual syncs are disabled: set serve.admin_token_env or serve.admin_token_file",
        );
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, token)| token.trim());
    if !bool::from(given.as_bytes().ct_eq(token.expose().as_bytes())) {
        return error(
            StatusCode::UNAUTHORIZED,
            "send the admin token as 'Authorization: Bearer <token>'",
        );
    }
    if svc.mirror(&name).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            format!("no mirror named '{name}' is configured"),
        );
    }
    match svc
        .trigger(
            &name,
            Trigger::Manual,
            "requested through the API",
            &[],
            (&RefMap::new(), &RefMap::new()),
        )
        .await
    {
        Ok(id) => (
            StatusCode::ACCEPTED,
            Json(json!({ "queued": true, "event": id })),
        )
            .into_response(),
        Err(e) => internal(e),
    }
}

async fn list(State(svc): Svc) -> Response {
    match svc.store.mirrors().await {
        Ok(all) => {
            let now = now_ms();
            Json(all.into_iter().map(|m| view(m, now)).collect::<Vec<_>>()).into_response()
        }
        Err(e) => internal(e),
    }
}

/// `GET /api/nodes`: every node sharing the store, with its last heartbeat.
async fn nodes(State(svc): Svc) -> Response {
    match svc.store.nodes().await {
        Ok(nodes) => Json(nodes).into_response(),
        Err(e) => internal(e),
    }
}

/// `GET /api/fleets`: each fleet's last discovery (when, members, what went wrong).
async fn fleets(State(svc): Svc) -> Response {
    match svc.store.fleets().await {
        Ok(fleets) => Json(fleets).into_response(),
        Err(e) => internal(e),
    }
}

async fn one(State(svc): Svc, Path(name): Path<String>) -> Response {
    match svc.store.mirror(&name).await {
        Ok(Some(m)) => Json(view(m, now_ms())).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("no mirror named '{name}' is configured"),
        ),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
struct RunsQuery {
    limit: Option<usize>,
}

async fn runs(State(svc): Svc, Path(name): Path<String>, Query(q): Query<RunsQuery>) -> Response {
    if svc.mirror(&name).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            format!("no mirror named '{name}' is configured"),
        );
    }
    match svc
        .store
        .runs(&name, q.limit.unwrap_or(20).clamp(1, 500))
        .await
    {
        Ok(runs) => Json(runs).into_response(),
        Err(e) => internal(e),
    }
}

async fn readyz(State(svc): Svc) -> Response {
    if svc.is_stopping() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    match svc.store.queue_depth().await {
        Ok(_) => "ready\n".into_response(),
        Err(e) => internal(e),
    }
}

/// Prometheus text format. Gauges that describe the store's state are refreshed per scrape.
async fn metrics(State(svc): Svc) -> Response {
    match (
        svc.store.queue_depth().await,
        svc.store.mirrors().await,
        svc.store.nodes().await,
    ) {
        (Ok(depth), Ok(mirrors), Ok(nodes)) => {
            metrics::gauge!("ferry_queue_depth").set(depth as f64);
            let now = now_ms();
            for n in &nodes {
                metrics::gauge!("ferry_node_heartbeat_age_seconds", "node" => n.id.clone())
                    .set((now - n.heartbeat_at).max(0) as f64 / 1000.0);
            }
            for m in &mirrors {
                metrics::gauge!("ferry_mirror_lag_seconds", "mirror" => m.name.clone())
                    .set(m.lag_seconds(now));
            }
            (
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                svc.metrics.render(),
            )
                .into_response()
        }
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => internal(e),
    }
}

async fn page(State(svc): Svc, Query(filter): Query<Filter>) -> Response {
    match (
        svc.store.mirrors().await,
        svc.store.nodes().await,
        svc.store.fleets().await,
    ) {
        (Ok(mirrors), Ok(nodes), Ok(fleets)) => {
            let mut recent: Vec<RunSummary> =
                mirrors.iter().filter_map(|m| m.last_run.clone()).collect();
            recent.sort_by_key(|r| std::cmp::Reverse(r.finished_at));
            recent.truncate(20);
            // Each mirror's last run, read for the Git LFS objects it sent.
            let mut lfs = std::collections::BTreeMap::new();
            for r in &recent {
                if let Ok(runs) = svc.store.runs(&r.mirror, 1).await {
                    if let Some(sent) = runs
                        .first()
                        .filter(|d| d.summary.id == r.id)
                        .and_then(|d| LfsSent::of(&d.report))
                    {
                        lfs.insert(r.id, sent);
                    }
                }
            }
            let listing = Listing {
                fleets: &fleets,
                filter,
            };
            Html(crate::service::page::status_page(
                &mirrors,
                &recent,
                &nodes,
                &lfs,
                &listing,
                now_ms(),
                5,
            ))
            .into_response()
        }
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => internal(e),
    }
}

/// `GET /mirrors/{name}` (the name may hold `/`): one mirror's page.
async fn mirror_page(State(svc): Svc, Path(name): Path<String>) -> Response {
    let status = match svc.store.mirror(&name).await {
        Ok(Some(status)) => status,
        Ok(None) => {
            return (
                StatusCode::NOT_FOUND,
                Html(format!(
                    "<!DOCTYPE html><title>not found</title><p>No mirror named {} is configured. <a href=\"/\">All mirrors</a></p>",
                    maud::html! { (name) }.into_string()
                )),
            )
                .into_response()
        }
        Err(e) => return internal(e),
    };
    match svc.store.runs(&name, RUNS_SHOWN).await {
        Ok(runs) => Html(crate::service::mirror_page::mirror_page(
            &status,
            &runs,
            now_ms(),
            5,
        ))
        .into_response(),
        Err(e) => internal(e),
    }
}
