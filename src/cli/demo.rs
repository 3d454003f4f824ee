//! `shadowdiff demo` (the example services, the proxy, the dashboard and steady traffic in one process) and its
//! parts for docker-compose: `demo-service` and `demo-traffic`.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::ExitCode;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::{AppSettings, Application};
use crate::cli::args::{DemoArgs, DemoServiceArgs, DemoTrafficArgs, TrafficArgs};
use crate::cli::driver::{self, Pace, Tally};
use crate::cli::progress::{Progress, Through};
use crate::cli::serve::shutdown_signal;
use crate::cli::{CommandError, Outcome, gate};
use crate::demo::service::DemoVariant;
use crate::demo::{self, service};
use crate::gate::render;
use crate::proxy::upstream::UpstreamSettings;
use crate::values::UpstreamUrl;

/// Requests in flight at most: the slow endpoint must not hold back the steady rate.
const DEMO_CONCURRENCY: usize = 64;

/// The demo's defaults: where its proxy and services listen, and how fast traffic goes.
pub struct DemoSettings;

impl DemoSettings {
    pub const DEFAULT_RATE: u32 = 20;
    pub const DEFAULT_LISTEN: SocketAddr =
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8880));
    pub const DEFAULT_SERVICE_LISTEN: SocketAddr =
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9000));
}

pub async fn run(args: DemoArgs) -> Outcome {
    if args.then_gate && args.traffic.duration.is_none() && args.traffic.requests.is_none() {
        return Err(CommandError::new(
            "--then-gate needs --duration or --requests: the gate judges once traffic stops",
        ));
    }
    let interrupted = interruption();

    let stop_services = CancellationToken::new();
    let mut urls = Vec::new();
    for variant in [
        DemoVariant::Current,
        DemoVariant::Current,
        DemoVariant::Candidate,
    ] {
        let addr = start_service(variant, stop_services.clone())
            .await
            .map_err(|error| {
                CommandError::new(format!("cannot start the demo's services: {error}"))
            })?;
        urls.push(proxy_url(addr));
    }
    let label = args.run.clone().unwrap_or_else(|| {
        format!(
            "demo@{}",
            humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        )
    });
    let mut settings = AppSettings::new(UpstreamSettings::new(
        urls[0].clone(),
        urls[1].clone(),
        urls[2].clone(),
    ));
    settings.proxy.listen = args.listen;
    settings.web.listen = args.admin_listen;
    settings.store = args.database.settings();
    settings.writer.run = Some(label.clone());
    let app = Application::build(settings).await?;
    let reports = app.reports();
    let (proxy, admin) = (app.proxy_addr(), app.admin_addr());
    let stop_app = CancellationToken::new();
    let serving = tokio::spawn(app.run_until(stop_app.clone().cancelled_owned()));

    eprintln!("shadowdiff demo");
    eprintln!(
        "  primary    {}   the current version of a small shop API",
        urls[0]
    );
    eprintln!(
        "  secondary  {}   the same code again: whatever differs from primary is noise",
        urls[1]
    );
    eprintln!("  candidate  {}   the new version:", urls[2]);
    for change in demo::CANDIDATE_CHANGES {
        eprintln!("               - {change}");
    }
    eprintln!("  proxy      http://{proxy}   try: curl http://{proxy}/users/42");
    eprintln!("  store      {} (run {label})", args.database.database_url);
    eprintln!();
    eprintln!("  Open the dashboard: http://{admin}/");
    eprintln!();
    eprintln!(
        "Sending {} requests/s through the proxy{}; Ctrl-C stops.",
        args.traffic.rate,
        limits(&args.traffic)
    );

    let tally = send_traffic(&proxy_url(proxy), &args.traffic, &interrupted).await;
    eprintln!("{}", sent_line(&tally));

    if !args.then_gate && !interrupted.is_cancelled() {
        eprintln!("Traffic stopped; the dashboard stays up at http://{admin}/ until Ctrl-C.");
        interrupted.cancelled().await;
    }
    stop_app.cancel();
    let _ = serving.await;
    stop_services.cancel();
    if !args.then_gate || interrupted.is_cancelled() {
        return Ok(ExitCode::SUCCESS);
    }
    let report = crate::gate::evaluate(&reports, &label, &args.gate.settings()).await?;
    print!("{}", render::render(&report, args.gate.format));
    Ok(gate::exit_code(&report))
}

/// `shadowdiff demo-service`: one version of the example service, until SIGINT or SIGTERM.
pub async fn run_service(args: DemoServiceArgs) -> Outcome {
    let signal = shutdown_signal();
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|error| CommandError::new(format!("cannot listen on {}: {error}", args.listen)))?;
    tracing::info!(listen = %args.listen, variant = ?args.variant, "demo service serving");
    service::serve(listener, args.variant, signal)
        .await
        .map_err(|error| CommandError::new(format!("demo service failed: {error}")))?;
    Ok(ExitCode::SUCCESS)
}

/// `shadowdiff demo-traffic`: the demo's requests sent to a proxy.
pub async fn run_traffic(args: DemoTrafficArgs) -> Outcome {
    let interrupted = interruption();
    eprintln!(
        "Sending {} requests/s to {}{}; Ctrl-C stops.",
        args.traffic.rate,
        args.target,
        limits(&args.traffic)
    );
    let tally = send_traffic(&args.target, &args.traffic, &interrupted).await;
    eprintln!("{}", sent_line(&tally));
    Ok(ExitCode::SUCCESS)
}

/// Sends the demo's mix at the steady rate until the duration passes, the count is reached or `interrupted`.
async fn send_traffic(
    target: &UpstreamUrl,
    traffic: &TrafficArgs,
    interrupted: &CancellationToken,
) -> Arc<Tally> {
    let stop = interrupted.child_token();
    if let Some(duration) = traffic.duration {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            stop.cancel();
        });
    }
    let tally = Arc::new(Tally::default());
    let progress = Progress::start(
        "demo traffic",
        Through::Requests(traffic.requests),
        tally.clone(),
    );
    let requests =
        demo::traffic::requests().take(traffic.requests.map_or(usize::MAX, |n| n as usize));
    driver::drive(
        target,
        futures_util::stream::iter(requests),
        Pace {
            concurrency: DEMO_CONCURRENCY,
            rate: Some(traffic.rate),
            speed: None,
        },
        tally.clone(),
        stop,
        || async {},
    )
    .await;
    progress.finish().await;
    tally
}

/// What traffic got: `Sent N requests: N answered (classes), N failed.`
fn sent_line(tally: &Tally) -> String {
    format!(
        "Sent {} requests: {} answered ({}), {} failed.",
        tally.sent(),
        tally.answered(),
        tally.classes(),
        tally.failed()
    )
}

/// Cancelled on the first SIGINT (Ctrl-C) or SIGTERM.
fn interruption() -> CancellationToken {
    let interrupted = CancellationToken::new();
    let signal = shutdown_signal();
    let on_signal = interrupted.clone();
    tokio::spawn(async move {
        signal.await;
        on_signal.cancel();
    });
    interrupted
}

fn limits(traffic: &TrafficArgs) -> String {
    let mut parts = Vec::new();
    if let Some(duration) = traffic.duration {
        parts.push(format!("for {}", humantime::format_duration(duration)));
    }
    if let Some(requests) = traffic.requests {
        parts.push(format!("up to {requests} requests"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

async fn start_service(
    variant: DemoVariant,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(error) = service::serve(listener, variant, stop.cancelled_owned()).await {
            tracing::error!(%error, "demo service failed");
        }
    });
    Ok(addr)
}

fn proxy_url(addr: SocketAddr) -> UpstreamUrl {
    format!("http://{addr}")
        .parse()
        .expect("a socket address makes a valid URL")
}
