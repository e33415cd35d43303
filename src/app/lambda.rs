//! ferry as an AWS Lambda function (a custom runtime in a container image): the same binary,
//! started as `bootstrap` with `AWS_LAMBDA_RUNTIME_API` set, or as `ferry lambda`.
//!
//! One invocation is one decision and at most a few syncs, run to completion:
//! - EventBridge "CodeCommit Repository State Change" reference events sync the mirror of that
//!   repository; other CodeCommit events are ignored (logged);
//! - EventBridge scheduled events reconcile every mirror (EventBridge delivers events only
//!   best effort; this catches what was missed);
//! - Function URL / API Gateway HTTP requests to `/hooks/{mirror}` get the same checks as
//!   `ferry serve` ([`crate::intake::webhook`]) and sync before answering;
//! - a direct invoke `{"mirror": "NAME"}` syncs that mirror (or fleet member).
//!
//! Fleets in `FERRY_CONFIG` serve the function too (one function for a whole CodeCommit
//! account): their members are mirrors like the others, and a CodeCommit event reaches the
//! member of its repository ([`lambda_fleets`](super::lambda_fleets)).
//!
//! A sync that fails makes the invocation fail (an error for events and invokes, a 5xx for
//! HTTP), so Lambda's retries and the on-failure destination see it, except in a scheduled
//! reconcile: retrying it would sync every healthy mirror again, so it succeeds, lists the
//! failing mirrors in its answer and logs an error line for each; the next schedule tries them
//! again. The cache lives in `/tmp` and warm invocations reuse it. The sync records (what ferry last pushed to each
//! destination) live in the S3 bucket `FERRY_STATE_BUCKET` names, so a cold start, whose
//! `/tmp` is empty, still knows them; without one they sit beside the cache and a cold start
//! loses them. A CodeCommit reference event also says what its ref held before the change:
//! where a record has no entry for that ref, that is the value to expect on the destination.
//! Passwords may come from Secrets Manager (`FERRY_SOURCE_PASSWORD_SECRET`,
//! `FERRY_DEST_PASSWORD_SECRET`), read once per execution environment, at its cold start.

use super::lambda_fleets::{Discovered, KeptFiles, LambdaFleets};
use super::{runtime, AppError, Threads};
#[cfg(feature = "aws")]
use crate::aws::{s3::S3Records, secrets, Aws};
use crate::config::{self, Config, ConfigError, ConfiguredMirror, RawOptions};
use crate::engine::record::{FileStore, RecordStore};
use crate::engine::report::MirrorReport;
use crate::engine::sync::{run_mirror_with, Mode, Records};
use crate::intake::codecommit;
use crate::intake::webhook::{self, Event, Rejection};
use crate::model::mirror::{Settings, Trigger};
use crate::model::refs::RefMap;
#[cfg(feature = "aws")]
use crate::model::remote::Remote;
use anyhow::{anyhow, bail, Context};
use base64::Engine;
use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the cache lives unless `FERRY_CACHE_DIR` says otherwise: `/tmp` is the only
/// writable place in Lambda, and it survives between warm invocations.
pub const DEFAULT_CACHE_DIR: &str = "/tmp/ferry-cache";

/// The function's configuration, read once per cold start.
pub struct Function {
    mirrors: Vec<ConfiguredMirror>,
    fleets: LambdaFleets,
    settings: Settings,
    records: Arc<dyn RecordStore>,
}

impl Function {
    /// From `FERRY_CONFIG` (a ferry.toml as text, or a path to one) or the classic function's
    /// variables (`SRC_REPO`, `SRC_USER`, `SRC_PASS`, `DEST_REPO`, `DEST_USER`, `DEST_PASS`)
    /// plus `FERRY_MIRROR`, `FERRY_INCLUDE`, `FERRY_EXCLUDE` (comma-separated),
    /// `FERRY_DIVERGENCE`, `FERRY_PRUNE`, `FERRY_WEBHOOK_SECRET`, and instead of the
    /// passwords `FERRY_SOURCE_PASSWORD_SECRET` and `FERRY_DEST_PASSWORD_SECRET` (Secrets
    /// Manager references, see [`secrets`]); the records' bucket from `FERRY_STATE_BUCKET` and
    /// `FERRY_STATE_PREFIX`.
    pub async fn from_env() -> Result<Function, ConfigError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let from_file = var("FERRY_CONFIG").is_some();
        let (mut mirrors, fleets, file_cache, file_timeout) = match var("FERRY_CONFIG") {
            Some(config) => {
                let inline = config.contains('\n')
                    || config.contains("[[mirror]]")
                    || config.contains("[[fleet]]");
                let cfg = if inline {
                    Config::parse(
                        &config,
                        Path::new("/tmp/FERRY_CONFIG.toml"),
                        &RawOptions::default(),
                    )
                } else {
                    Config::load(Path::new(&config), &RawOptions::default())
                }
                .map_err(|e| ConfigError(format!("FERRY_CONFIG: {e}")))?;
                (cfg.mirrors, cfg.fleets, cfg.cache_dir, cfg.timeout)
            }
            None => (vec![config::classic_mirror()?], Vec::new(), None, None),
        };
        let cache_dir = var("FERRY_CACHE_DIR")
            .map(PathBuf::from)
            .or(file_cache)
            .unwrap_or_else(|| DEFAULT_CACHE_DIR.into());
        let timeout = match var("FERRY_TIMEOUT") {
            Some(t) => config::parse_duration(&t)
                .map_err(|e| ConfigError(format!("FERRY_TIMEOUT: {e}")))?,
            None => file_timeout.unwrap_or(Settings::DEFAULT_TIMEOUT),
        };
        let (records, kept) = cloud_state(&var, from_file, &mut mirrors, &cache_dir).await?;
        let codecommit = super::codecommit::api_for(&fleets).await;
        Ok(Function {
            mirrors,
            fleets: LambdaFleets::new(fleets, codecommit, kept, cache_dir.clone()),
            settings: Settings {
                cache_dir,
                timeout,
                progress: false,
            },
            records,
        })
    }

    /// Handles one invocation. `Ok` is the response; `Err` fails the invocation.
    pub async fn handle(&self, event: Value) -> anyhow::Result<Value> {
        if let Some(name) = event.get("mirror").and_then(Value::as_str) {
            let (mirror, discovered) = self.named(name).await?;
            return self
                .sync_all(
                    &[&mirror],
                    Trigger::Manual,
                    Told::NOTHING,
                    discovered.as_ref(),
                )
                .await;
        }
        if event.get("requestContext").is_some() || event.get("httpMethod").is_some() {
            return Ok(self.http(&event).await);
        }
        let source = event.get("source").and_then(Value::as_str).unwrap_or("");
        let detail_type = event
            .get("detail-type")
            .and_then(Value::as_str)
            .unwrap_or("");
        match (source, detail_type) {
            ("aws.codecommit", _) => self.codecommit(&event).await,
            ("aws.events", "Scheduled Event") => Ok(self.reconcile().await),
            _ => bail!(
                "unrecognised event (expected a CodeCommit or scheduled EventBridge event, a Function URL / API Gateway request, or {{\"mirror\": \"NAME\"}}): {}",
                crate::engine::git::truncate(&event.to_string(), 300)
            ),
        }
    }

    /// A configured mirror (not a fleet member: webhook paths name configured mirrors).
    fn configured(&self, name: &str) -> Option<&ConfiguredMirror> {
        self.mirrors.iter().find(|m| m.mirror.name == name)
    }

    /// A configured mirror or a fleet member (then with the discovery this took, if any).
    async fn named(&self, name: &str) -> anyhow::Result<(ConfiguredMirror, Option<Discovered>)> {
        if let Some(m) = self.configured(name) {
            return Ok((m.clone(), None));
        }
        let mut known: Vec<String> = self.mirrors.iter().map(|m| m.mirror.name.clone()).collect();
        if !self.fleets.is_empty() {
            let (members, discovered) = self.fleets.members().await;
            if let Some(m) = members.mirrors.iter().find(|m| m.mirror.name == name) {
                return Ok((m.clone(), discovered));
            }
            known.extend(members.mirrors.iter().map(|m| m.mirror.name.clone()));
        }
        bail!(
            "no mirror named '{name}' is configured or a fleet member (known: {})",
            known.join(", ")
        )
    }

    async fn codecommit(&self, event: &Value) -> anyhow::Result<Value> {
        let body = event
            .as_object()
            .context("a CodeCommit event is a JSON object")?;
        let repository = codecommit::repository(body).unwrap_or("");
        let (focus, claimed) = match codecommit::classify(body).map_err(|e| anyhow!("{e}"))? {
            Event::Ignored { reason, .. } => {
                tracing::info!(repository, %reason, "ignoring a CodeCommit event");
                return Ok(json!({ "ignored": reason }));
            }
            Event::Push { refs, ids, .. } => (refs, ids),
        };
        let mut matching: Vec<&ConfiguredMirror> = self
            .mirrors
            .iter()
            .filter(|m| codecommit::repository_name(&m.mirror.source) == repository)
            .collect();
        let (members, discovered) = self.members_of(body, repository).await;
        matching.extend(members.iter());
        if matching.is_empty() {
            let fleets = if self.fleets.is_empty() {
                ""
            } else {
                ", and no fleet has it (a fleet's discovery ran again and did not find it: check the fleet's source, include and exclude)"
            };
            bail!(
                "no configured mirror has the CodeCommit repository '{repository}' as its source{fleets}; check SRC_REPO (or the sources in FERRY_CONFIG) against the EventBridge rule"
            );
        }
        let assumed: RefMap = codecommit::previous_value(body).into_iter().collect();
        let told = Told {
            assumed: &assumed,
            focus: &focus,
            claimed: &claimed,
        };
        self.sync_all(&matching, Trigger::Codecommit, told, discovered.as_ref())
            .await
    }

    /// The fleet members a CodeCommit event is about (by `repositoryId`, else by name): a
    /// repository no discovery found yet makes the fleets discover again.
    async fn members_of(
        &self,
        body: &serde_json::Map<String, Value>,
        repository: &str,
    ) -> (Vec<ConfiguredMirror>, Option<Discovered>) {
        if self.fleets.is_empty() {
            return (Vec::new(), None);
        }
        let id = body
            .get("detail")
            .and_then(|d| d.get("repositoryId"))
            .and_then(Value::as_str);
        let name = Some(repository).filter(|r| !r.is_empty());
        let (mut members, mut discovered) = self.fleets.members().await;
        let mut names = LambdaFleets::route(&members, id, name);
        if names.is_empty() && discovered.is_none() {
            tracing::info!(
                repository,
                "a repository no discovery found yet: discovering"
            );
            let fresh = self.fleets.discover().await;
            members = fresh.members.clone();
            names = LambdaFleets::route(&members, id, name);
            discovered = Some(fresh);
        }
        let mirrors = members
            .mirrors
            .iter()
            .filter(|m| names.contains(&m.mirror.name))
            .cloned()
            .collect();
        (mirrors, discovered)
    }

    /// A sync of one mirror with the function's records and what an event told.
    async fn sync(&self, mirror: &ConfiguredMirror, told: Told<'_>) -> MirrorReport {
        let records = Records {
            store: self.records.as_ref(),
            assumed: told.assumed,
        };
        run_mirror_with(
            &mirror.mirror,
            &self.settings,
            Mode::Sync,
            records,
            told.focus,
            told.claimed,
            // One event, one invocation: no queue to take later pushes from.
            None,
        )
        .await
    }

    /// Syncs the mirrors one after another, logging each report.
    async fn run_all(
        &self,
        mirrors: &[&ConfiguredMirror],
        trigger: Trigger,
        told: Told<'_>,
    ) -> Vec<MirrorReport> {
        let mut reports = Vec::new();
        for m in mirrors {
            let report = self.sync(m, told).await;
            log_report(&report, trigger);
            reports.push(report);
        }
        reports
    }

    /// The scheduled reconcile: every mirror, and an answer rather than an error whatever they
    /// did, because a failed invocation is retried whole and would sync every healthy mirror
    /// again. `ok` is false when a mirror failed; `failed` names each with its failure, and
    /// each gets an error line in the log.
    async fn reconcile(&self) -> Value {
        // Fleets are discovered again first: new repositories join, deleted ones leave.
        let discovered = if self.fleets.is_empty() {
            None
        } else {
            Some(self.fleets.discover().await)
        };
        let members = discovered.iter().flat_map(|d| d.members.mirrors.iter());
        // The full comparison: every destination is listed again after its push.
        let verifying: Vec<ConfiguredMirror> = self
            .mirrors
            .iter()
            .chain(members)
            .map(|m| {
                let mut m = m.clone();
                m.mirror.verify = true;
                m
            })
            .collect();
        let all: Vec<&ConfiguredMirror> = verifying.iter().collect();
        let reports = self.run_all(&all, Trigger::Reconcile, Told::NOTHING).await;
        let failed: Vec<Value> = reports
            .iter()
            .filter(|r| !r.ok)
            .map(|r| {
                let error = r.failure_summary();
                tracing::error!(mirror = %r.name, error = %error, "a mirror failed to reconcile");
                json!({ "mirror": r.name, "error": error })
            })
            .collect();
        let mut fleet_problems = Vec::new();
        if let Some(d) = &discovered {
            fleet_problems.extend(d.problems.iter().cloned());
            fleet_problems.extend(self.fleets.after_sync(d, &reports).await);
        }
        let mut answer = json!({
            "ok": failed.is_empty() && fleet_problems.is_empty(),
            "trigger": Trigger::Reconcile.as_str(),
            "failed": failed,
            "mirrors": reports,
        });
        if discovered.is_some() {
            answer["fleet_problems"] = json!(fleet_problems);
        }
        answer
    }

    /// Syncs the mirrors one after another; fails if any of them failed. After an
    /// invocation that discovered the fleets, the destinations that discovery created get
    /// their default branch; the fleets' problems are in the answer (and the log) but fail
    /// nothing: retrying the invocation would not mend them.
    async fn sync_all(
        &self,
        mirrors: &[&ConfiguredMirror],
        trigger: Trigger,
        told: Told<'_>,
        discovered: Option<&Discovered>,
    ) -> anyhow::Result<Value> {
        let reports = self.run_all(mirrors, trigger, told).await;
        let failed: Vec<String> = reports
            .iter()
            .filter(|r| !r.ok)
            .map(MirrorReport::failure_summary)
            .collect();
        if !failed.is_empty() {
            bail!("{}", failed.join("; "))
        }
        let mut answer = json!({ "ok": true, "trigger": trigger.as_str(), "mirrors": reports });
        if let Some(d) = discovered {
            let mut problems = d.problems.clone();
            problems.extend(self.fleets.after_sync(d, &reports).await);
            answer["fleet_problems"] = json!(problems);
        }
        Ok(answer)
    }

    /// A Function URL (or API Gateway, payload 1.0 or 2.0) request: the response object.
    async fn http(&self, event: &Value) -> Value {
        let method = event["requestContext"]["http"]["method"]
            .as_str()
            .or(event["httpMethod"].as_str())
            .unwrap_or("");
        let path = event["rawPath"]
            .as_str()
            .or(event["path"].as_str())
            .unwrap_or("");
        let respond = |status: u16, body: Value| json!({ "statusCode": status, "headers": { "content-type": "application/json" }, "body": body.to_string() });
        if method == "GET" && path == "/healthz" {
            return respond(200, json!({ "ok": true }));
        }
        let Some(name) = path
            .strip_prefix("/hooks/")
            .filter(|n| !n.is_empty() && !n.contains('/'))
        else {
            return respond(
                404,
                json!({ "error": format!("no route for {method} {path}; webhooks go to POST /hooks/<mirror>") }),
            );
        };
        if method != "POST" {
            return respond(405, json!({ "error": "webhooks must be POSTed" }));
        }
        let Some(configured) = self.configured(name) else {
            return respond(
                404,
                json!({ "error": format!("no mirror named '{name}' is configured") }),
            );
        };
        let body = match request_body(event) {
            Ok(b) => b,
            Err(e) => return respond(400, json!({ "error": e.to_string() })),
        };
        let headers: Vec<(String, String)> = event["headers"]
            .as_object()
            .map(|h| {
                h.iter()
                    .filter_map(|(k, v)| Some((k.to_ascii_lowercase(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        let secret = configured
            .webhook_secret
            .as_ref()
            .map_or("", crate::model::remote::Secret::expose);
        match webhook::receive(
            &webhook::Request {
                headers: &headers,
                body: &body,
            },
            webhook::Expect {
                secret,
                provider: configured.webhook_provider,
            },
        ) {
            Err(Rejection::Unauthorized(m)) => respond(401, json!({ "error": m })),
            Err(Rejection::Malformed(m)) => respond(400, json!({ "error": m })),
            Ok(Event::Ignored { provider, reason }) => respond(
                200,
                json!({ "synced": false, "provider": provider.as_str(), "ignored": reason }),
            ),
            // One event, one run: old ids matter only where events are coalesced (the
            // service's queue).
            Ok(Event::Push {
                provider,
                refs,
                ids,
                olds: _,
            }) => {
                let told = Told {
                    focus: &refs,
                    claimed: &ids,
                    ..Told::NOTHING
                };
                let report = self.sync(configured, told).await;
                log_report(&report, Trigger::Webhook);
                let status = if report.ok { 200 } else { 502 };
                respond(
                    status,
                    json!({ "synced": report.ok, "provider": provider.as_str(), "report": report }),
                )
            }
        }
    }
}

/// What an event told of the refs it changed: their names (the run's focus, as in
/// [`run_mirror_with`]), what they held before (`assumed`, as in [`Records`]) and what they
/// hold now (`claimed`).
#[derive(Clone, Copy)]
struct Told<'a> {
    assumed: &'a RefMap,
    focus: &'a [String],
    claimed: &'a RefMap,
}

impl Told<'static> {
    /// No event: the whole selection, no assumptions.
    const NOTHING: Told<'static> = Told {
        assumed: &RefMap::new(),
        focus: &[],
        claimed: &RefMap::new(),
    };
}

fn request_body(event: &Value) -> anyhow::Result<Vec<u8>> {
    let body = event["body"].as_str().unwrap_or("");
    if event["isBase64Encoded"].as_bool().unwrap_or(false) {
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .context("the request body is not valid base64")
    } else {
        Ok(body.as_bytes().to_vec())
    }
}

/// One JSON line per mirror run, for CloudWatch.
fn log_report(report: &MirrorReport, trigger: Trigger) {
    match serde_json::to_string(report) {
        Ok(json) => {
            tracing::info!(mirror = %report.name, ok = report.ok, trigger = trigger.as_str(), report = %json, "sync finished")
        }
        Err(e) => tracing::error!(error = %e, "cannot encode a report"),
    }
}

/// What needs AWS: passwords from Secrets Manager (`FERRY_SOURCE_PASSWORD_SECRET`,
/// `FERRY_DEST_PASSWORD_SECRET`, into the mirrors) and where the records live (the S3 bucket
/// `FERRY_STATE_BUCKET` names, else beside the cache).
#[cfg(feature = "aws")]
async fn cloud_state(
    var: &impl Fn(&str) -> Option<String>,
    from_file: bool,
    mirrors: &mut [ConfiguredMirror],
    cache_dir: &Path,
) -> Result<(Arc<dyn RecordStore>, Option<Arc<dyn KeptFiles>>), ConfigError> {
    // The SDK's configuration is loaded only when something needs AWS.
    let aws = tokio::sync::OnceCell::new();
    for (variable, classic, source) in [
        (
            "FERRY_SOURCE_PASSWORD_SECRET",
            "SRC_PASS (or FERRY_SOURCE_PASSWORD)",
            true,
        ),
        (
            "FERRY_DEST_PASSWORD_SECRET",
            "DEST_PASS (or FERRY_DEST_PASSWORD)",
            false,
        ),
    ] {
        let Some(reference) = var(variable) else {
            continue;
        };
        if from_file {
            return Err(ConfigError(format!(
                "{variable} goes with the classic variables (SRC_REPO, DEST_REPO); with FERRY_CONFIG give each repository a password_env or password_file"
            )));
        }
        let password = secrets::password(aws.get_or_init(Aws::load).await, &reference)
            .await
            .map_err(|e| ConfigError(format!("{variable}: {e}")))?;
        tracing::info!(variable, secret = %reference, "password read from Secrets Manager");
        for m in mirrors.iter_mut() {
            let remotes: Vec<&mut Remote> = if source {
                vec![&mut m.mirror.source]
            } else {
                m.mirror.destinations.iter_mut().collect()
            };
            for remote in remotes {
                if remote.credentials.password.is_some() {
                    return Err(ConfigError(format!(
                        "{variable} and {classic} or a password in the URL both give the password of {}; keep one",
                        remote.display()
                    )));
                }
                remote.credentials.password = Some(password.clone());
            }
        }
    }
    let state = match var("FERRY_STATE_BUCKET") {
        Some(bucket) => {
            let mut prefix = var("FERRY_STATE_PREFIX").unwrap_or_default();
            if !prefix.is_empty() && !prefix.ends_with('/') {
                prefix.push('/');
            }
            tracing::info!(
                bucket,
                prefix,
                "sync records and fleet inventories are kept in S3"
            );
            let s3 = Arc::new(S3Records::new(
                aws.get_or_init(Aws::load).await,
                &bucket,
                &prefix,
            ));
            (
                s3.clone() as Arc<dyn RecordStore>,
                Some(s3 as Arc<dyn KeptFiles>),
            )
        }
        None => {
            tracing::warn!(
                cache_dir = %cache_dir.display(),
                "FERRY_STATE_BUCKET is not set: sync records (and fleet inventories) are kept beside the cache and a cold start loses them (deleted branches are then kept and upstream force-pushes reported as diverged)"
            );
            (
                Arc::new(FileStore::new(cache_dir)) as Arc<dyn RecordStore>,
                None,
            )
        }
    };
    Ok(state)
}

/// Built without AWS support (the `aws` cargo feature, on by default): the variables that
/// need it are refused, and the records live beside the cache.
#[cfg(not(feature = "aws"))]
async fn cloud_state(
    var: &impl Fn(&str) -> Option<String>,
    _from_file: bool,
    _mirrors: &mut [ConfiguredMirror],
    cache_dir: &Path,
) -> Result<(Arc<dyn RecordStore>, Option<Arc<dyn KeptFiles>>), ConfigError> {
    for variable in [
        "FERRY_SOURCE_PASSWORD_SECRET",
        "FERRY_DEST_PASSWORD_SECRET",
        "FERRY_STATE_BUCKET",
    ] {
        if var(variable).is_some() {
            return Err(ConfigError(format!(
                "{variable} needs AWS support, and this ferry was built without it (the cargo feature `aws`, on by default)"
            )));
        }
    }
    Ok((Arc::new(FileStore::new(cache_dir)), None))
}

/// Runs the Lambda runtime loop until the runtime API goes away. A configuration error is
/// printed where Lambda's init error reporting and CloudWatch see it.
pub fn run() -> Result<bool, AppError> {
    let rt = runtime(Threads::Pool)?;
    let function = Arc::new(rt.block_on(Function::from_env()).map_err(AppError::Usage)?);
    rt.block_on(lambda_runtime::run(service_fn(
        move |event: LambdaEvent<Value>| {
            let function = function.clone();
            async move {
                tracing::debug!(request_id = %event.context.request_id, "invocation");
                function.handle(event.payload).await.map_err(|e| {
                    tracing::error!(error = %format!("{e:#}"), "invocation failed");
                    lambda_runtime::Diagnostic {
                        error_type: "ferry.InvocationFailed".into(),
                        error_message: format!("{e:#}"),
                    }
                })
            }
        },
    )))
    .map_err(|e| anyhow!("the Lambda runtime stopped: {e}"))?;
    Ok(true)
}
