//! `--notify-url`: messages to chat or any webhook when a change first appears, when a run's verdict
//! flips, and when the process stops; sent from a bounded queue with retries, never on the caller's path.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::analysis::compat::Compat;
use crate::gate::verdict::Verdict;
use crate::instruments::registered;
use crate::paths::{RUN, link};
use crate::report::changes::Change;

/// How messages are written.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum NotifyFormat {
    /// A Slack incoming webhook's `{"text", "blocks"}` (Mattermost and others take it too).
    #[default]
    Slack,
    /// One JSON object per event, for scripts and other tools.
    Json,
}

/// Where messages go.
#[derive(Clone, Debug, Default)]
pub struct NotifySettings {
    /// Each message is posted to every one of these.
    pub urls: Vec<http::Uri>,
    pub format: NotifyFormat,
    /// The dashboard's URL, for links (by default `--admin-public-url`).
    pub dashboard: Option<http::Uri>,
}

/// What happened.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A change (failing places with one cause) appeared in the run: told once, however many places it has.
    Change { run: String, change: ChangeNotice },
    /// The run's verdict changed (`before` and `now` are `passed`, `failed` or `waiting`).
    VerdictChanged {
        before: String,
        now: String,
        verdict: Verdict,
    },
    /// The process is stopping: its run's verdict as it stands.
    Summary { verdict: Verdict },
}

/// What a message says of a new change.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangeNotice {
    pub id: String,
    pub title: String,
    pub compat: Compat,
    /// Failing requests so far.
    pub requests: u64,
    pub endpoints: Vec<String>,
    /// Its places (and consequences), `endpoint path kind`.
    pub places: usize,
    pub sample: Option<String>,
}

impl ChangeNotice {
    pub fn of(change: &Change) -> Self {
        Self {
            id: change.id.clone(),
            title: change.title.clone(),
            compat: change.compat,
            requests: change.requests,
            endpoints: change.endpoints.clone(),
            places: change.places.len() + change.consequences.len(),
            sample: change.sample.clone(),
        }
    }
}

/// Events waiting to be sent at most; past it new ones are dropped and counted.
const QUEUE: usize = 64;
/// Attempts per message and receiver, the waits between them doubling from the first.
const ATTEMPTS: u32 = 4;
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// The longest one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// Messages sent, failed (after every retry) and dropped (the queue was full).
#[derive(Clone, Default)]
pub struct NotifyMetrics {
    outcomes: Family<OutcomeLabel, Counter>,
}

impl NotifyMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let outcomes = registered(
            registry,
            "notifications",
            "Messages to --notify-url receivers, by outcome: sent, failed (after retries) or dropped (queue full)",
            Family::default(),
        );
        Self { outcomes }
    }

    fn count(&self, outcome: &'static str) {
        self.outcomes.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Messages with this outcome so far.
    pub fn outcome(&self, outcome: &'static str) -> u64 {
        self.outcomes.get_or_create(&OutcomeLabel { outcome }).get()
    }
}

/// The sending end: cheap to call, never waits.
#[derive(Clone)]
pub struct Notifier {
    queue: mpsc::Sender<Event>,
    metrics: NotifyMetrics,
}

impl Notifier {
    /// The notifier and its sending task, which ends once every notifier is dropped and the queue is empty.
    pub fn start(
        settings: NotifySettings,
        tls: rustls::ClientConfig,
        metrics: NotifyMetrics,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (queue, rx) = mpsc::channel(QUEUE);
        let sender = send_all(settings, tls, rx, metrics.clone());
        (Self { queue, metrics }, sender)
    }

    /// Queues an event; a full queue drops it (counted).
    pub fn tell(&self, event: Event) {
        if self.queue.try_send(event).is_err() {
            self.metrics.count("dropped");
        }
    }
}

async fn send_all(
    settings: NotifySettings,
    tls: rustls::ClientConfig,
    mut rx: mpsc::Receiver<Event>,
    metrics: NotifyMetrics,
) {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(ATTEMPT_TIMEOUT));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    while let Some(event) = rx.recv().await {
        let body = Bytes::from(message(&event, &settings).to_string());
        // Every receiver at once: one that is slow or down does not hold up the others.
        let sent = futures_util::future::join_all(
            settings
                .urls
                .iter()
                .map(|url| post(&client, url, body.clone())),
        )
        .await;
        for delivered in sent {
            metrics.count(if delivered { "sent" } else { "failed" });
        }
    }
}

/// Posts with retries and backoff; true once a receiver took it (2xx).
async fn post<C>(client: &Client<C, Full<Bytes>>, url: &http::Uri, body: Bytes) -> bool
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let mut wait = FIRST_RETRY;
    for attempt in 1..=ATTEMPTS {
        let request = http::Request::post(url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "shadowdiff")
            .body(Full::new(body.clone()));
        let Ok(request) = request else {
            return false;
        };
        let outcome = tokio::time::timeout(ATTEMPT_TIMEOUT, client.request(request)).await;
        let problem = match outcome {
            Ok(Ok(response)) if response.status().is_success() => return true,
            // A receiver that refuses the message as it is (bad payload, gone) will not take it later.
            Ok(Ok(response))
                if response.status().is_client_error()
                    && response.status() != http::StatusCode::TOO_MANY_REQUESTS =>
            {
                tracing::warn!(url = %redacted(url), status = %response.status(), "a notification receiver refused the message");
                return false;
            }
            Ok(Ok(response)) => format!("answered {}", response.status()),
            Ok(Err(error)) => error.to_string(),
            Err(_) => "timed out".to_string(),
        };
        if attempt == ATTEMPTS {
            tracing::warn!(url = %redacted(url), %problem, "notification not delivered after retries");
            return false;
        }
        tracing::debug!(url = %redacted(url), %problem, attempt, "notification failed; retrying");
        tokio::time::sleep(wait).await;
        wait *= 2;
    }
    false
}

/// A receiver's URL without its path and query, which for chat webhooks are the secret.
fn redacted(url: &http::Uri) -> String {
    format!(
        "{}://{}/…",
        url.scheme_str().unwrap_or("http"),
        url.authority().map_or("", |a| a.as_str())
    )
}

/// The message of an event in the chosen format.
pub fn message(event: &Event, settings: &NotifySettings) -> Value {
    let dashboard = |path: String| {
        settings
            .dashboard
            .as_ref()
            .map(|base| format!("{}{path}", base.to_string().trim_end_matches('/')))
    };
    let (kind, run, link_to, text, fields) = match event {
        Event::Change { run, change } => (
            "change",
            run.as_str(),
            dashboard(format!("{}#change-{}", link(RUN, &[run]), change.id)),
            format!(
                "New change in run {run}: {} ({}; {} failing requests so far)",
                change.title,
                change.compat.as_str(),
                change.requests
            ),
            json!({"id": change.id, "title": change.title, "compat": change.compat.as_str(),
                   "requests": change.requests, "endpoints": change.endpoints, "places": change.places,
                   "sample": change.sample}),
        ),
        Event::VerdictChanged {
            before,
            now,
            verdict,
        } => (
            "verdict",
            verdict.run.as_str(),
            dashboard(link(RUN, &[&verdict.run])),
            format!(
                "Run {}: verdict {before} → {now}: {}",
                verdict.run, verdict.reason
            ),
            json!({"before": before, "now": now, "verdict": verdict}),
        ),
        Event::Summary { verdict } => (
            "summary",
            verdict.run.as_str(),
            dashboard(link(RUN, &[&verdict.run])),
            format!(
                "shadowdiff stopped; run {}: {} over {} compared requests: {}",
                verdict.run,
                state(verdict),
                verdict.requests,
                verdict.reason
            ),
            json!({"verdict": verdict}),
        ),
    };
    match settings.format {
        NotifyFormat::Json => {
            let mut object = json!({"event": kind, "run": run, "text": text, "dashboard": link_to});
            if let (Some(object), Value::Object(fields)) = (object.as_object_mut(), fields) {
                object.extend(fields);
            }
            object
        }
        NotifyFormat::Slack => {
            let mut shown = slack_text(&text);
            if let Some(url) = &link_to {
                shown.push_str(&format!(" <{}|dashboard>", slack_escape(url)));
            }
            json!({
                "text": slack_text(&text),
                "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": shown}}],
            })
        }
    }
}

/// `passed`, `failed`, or `waiting` (too little data): what a verdict flip is between.
pub fn state(verdict: &Verdict) -> &'static str {
    if verdict.passed {
        "passed"
    } else if verdict.enough_data {
        "failed"
    } else {
        "waiting"
    }
}

/// Characters of a Slack section's text kept (Slack refuses more than 3 000), leaving room for the link.
const SLACK_TEXT: usize = 2_800;

/// `text` escaped for Slack and cut to fit a section, never in the middle of an escape.
fn slack_text(text: &str) -> String {
    let escaped = slack_escape(text);
    let Some((at, _)) = escaped.char_indices().nth(SLACK_TEXT) else {
        return escaped;
    };
    let mut kept = &escaped[..at];
    if let Some(amp) = kept.rfind('&')
        && !kept[amp..].contains(';')
    {
        kept = &kept[..amp];
    }
    format!("{kept}…")
}

/// Slack reads `<`, `>` and `&` as markup: a path a caller chose must not become a link or a mention.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_messages_escape_what_callers_chose_and_link_the_dashboard() {
        let settings = NotifySettings {
            urls: Vec::new(),
            format: NotifyFormat::Slack,
            dashboard: Some("https://shadowdiff.example/".parse().unwrap()),
        };
        let event = Event::Change {
            run: "r1".into(),
            change: ChangeNotice {
                id: "ch-0123456789ab".into(),
                title: "`body/a&b` missing on GET /<!channel>".into(),
                compat: Compat::Breaking,
                requests: 25,
                endpoints: vec!["GET /<!channel>".into()],
                places: 1,
                sample: None,
            },
        };
        let message = message(&event, &settings);
        let shown = message["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(shown.contains("GET /&lt;!channel&gt;"), "{shown}");
        assert!(shown.contains("body/a&amp;b"), "{shown}");
        assert!(
            shown
                .ends_with("<https://shadowdiff.example/runs/r1#change-ch-0123456789ab|dashboard>"),
            "{shown}"
        );
    }

    #[test]
    fn long_slack_texts_are_cut_to_fit_and_never_inside_an_escape() {
        let long = "&".repeat(5_000);
        let shown = slack_text(&long);
        assert!(shown.chars().count() <= SLACK_TEXT + 1, "{}", shown.len());
        assert!(shown.ends_with("&amp;…"), "{}", &shown[shown.len() - 12..]);
        let short = slack_text("a < b");
        assert_eq!(short, "a &lt; b");
    }
}
