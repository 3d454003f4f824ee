//! `shadowdiff demo` (the example services, the proxy, the dashboard and steady traffic in one process) and its
//! parts for docker-compose: `demo-service` and `demo-traffic`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::Application;
use crate::cli::driver::{self, Pace, Tally};
use crate::cli::progress::Progress;
use crate::cli::serve::shutdown_signal;
use crate::cli::{EXIT_USAGE, gate};
use crate::config::{
    Cli, Command, DemoArgs, DemoServiceArgs, DemoTrafficArgs, DemoVariant, ServeArgs, TrafficArgs,
    UpstreamUrl,
};
use crate::demo::{self, service};
use crate::gate::render;

/// Requests in flight at most: the slow endpoint must not hold back the steady rate.
const DEMO_CONCURRENCY: usize = 64;

pub async fn run(args: DemoArgs) -> ExitCode {
    if args.then_gate && args.traffic.duration.is_none() && args.traffic.requests.is_none() {
        return error_exit(
            "--then-gate needs --duration or --requests: the gate judges once traffic stops",
        );
    }
    let interrupted = interruption();

    let stop_services = CancellationToken::new();
    let mut urls = Vec::new();
    for variant in [
        DemoVariant::Current,
        DemoVariant::Current,
        DemoVariant::Candidate,
    ] {
        match start_service(variant, stop_services.clone()).await {
            Ok(addr) => urls.push(format!("http://{addr}")),
            Err(error) => return error_exit(&format!("cannot start the demo's services: {error}")),
        }
    }
    let label = args.run.clone().unwrap_or_else(|| {
        format!(
            "demo@{}",
            humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        )
    });
    let serve = match serve_args(&args, &urls, &label) {
        Ok(serve) => serve,
        Err(error) => return error_exit(&error),
    };
    let app = match Application::build(serve).await {
        Ok(app) => app,
        Err(error) => return error_exit(&error.to_string()),
    };
    let store = app.store().clone();
    let file_rules = app.file_rules().clone();
    let verdicts = app.verdicts();
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
    eprintln!(
        "Sent {} requests: {} answered ({}), {} failed.",
        tally.sent(),
        tally.answered(),
        tally.classes(),
        tally.failed()
    );

    if !args.then_gate && !interrupted.is_cancelled() {
        eprintln!("Traffic stopped; the dashboard stays up at http://{admin}/ until Ctrl-C.");
        interrupted.cancelled().await;
    }
    stop_app.cancel();
    let _ = serving.await;
    stop_services.cancel();
    if !args.then_gate || interrupted.is_cancelled() {
        return ExitCode::SUCCESS;
    }
    match crate::gate::evaluate(&store, &label, &args.gate, &verdicts, &file_rules).await {
        Ok(report) => {
            print!("{}", render::render(&report, args.gate.format));
            gate::exit_code(&report)
        }
        Err(error) => error_exit(&error.to_string()),
    }
}

/// `shadowdiff demo-service`: one version of the example service, until SIGINT or SIGTERM.
pub async fn run_service(args: DemoServiceArgs) -> ExitCode {
    let signal = shutdown_signal();
    let listener = match TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(error) => return error_exit(&format!("cannot listen on {}: {error}", args.listen)),
    };
    tracing::info!(listen = %args.listen, variant = ?args.variant, "demo service serving");
    match service::serve(listener, args.variant, signal).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => error_exit(&format!("demo service failed: {error}")),
    }
}

/// `shadowdiff demo-traffic`: the demo's requests sent to a proxy.
pub async fn run_traffic(args: DemoTrafficArgs) -> ExitCode {
    let interrupted = interruption();
    eprintln!(
        "Sending {} requests/s to {}{}; Ctrl-C stops.",
        args.traffic.rate,
        args.target,
        limits(&args.traffic)
    );
    let tally = send_traffic(&args.target, &args.traffic, &interrupted).await;
    eprintln!(
        "Sent {} requests: {} answered ({}), {} failed.",
        tally.sent(),
        tally.answered(),
        tally.classes(),
        tally.failed()
    );
    ExitCode::SUCCESS
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
    let progress = Progress::start("demo traffic", traffic.requests, tally.clone());
    let requests =
        demo::traffic::requests().take(traffic.requests.map_or(usize::MAX, |n| n as usize));
    driver::drive(
        target,
        requests,
        Pace {
            concurrency: DEMO_CONCURRENCY,
            rate: Some(traffic.rate),
        },
        tally.clone(),
        stop,
        || async {},
    )
    .await;
    progress.finish().await;
    tally
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

/// The proxy's settings, read as `serve` would read them (flags' defaults and `SHADOWDIFF_*` variables).
fn serve_args(args: &DemoArgs, urls: &[String], label: &str) -> Result<ServeArgs, String> {
    let argv = [
        "shadowdiff".to_string(),
        "serve".to_string(),
        format!("--primary={}", urls[0]),
        format!("--secondary={}", urls[1]),
        format!("--candidate={}", urls[2]),
        format!("--listen={}", args.listen),
        format!("--admin-listen={}", args.admin_listen),
        format!("--database-url={}", args.database.database_url),
        format!("--store-connections={}", args.database.store_connections),
        format!("--run={label}"),
    ];
    match Cli::try_parse_from(argv) {
        Ok(Cli {
            command: Command::Serve(serve),
            ..
        }) => Ok(serve),
        Ok(_) => Err("the demo's proxy settings did not parse as `serve`".to_string()),
        Err(error) => Err(format!("the demo's proxy settings: {error}")),
    }
}

fn proxy_url(addr: SocketAddr) -> UpstreamUrl {
    format!("http://{addr}")
        .parse()
        .expect("a socket address makes a valid URL")
}

fn error_exit(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_USAGE)
}
