//! `shadowdiff replay`: recorded traffic sent through a private instance of the proxy (same engine, same store
//! as `serve`), with progress on the terminal and a summary table at the end.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::analysis::rules::RuleSet;
use crate::app::Application;
use crate::cli::EXIT_USAGE;
use crate::cli::driver::{self, Pace, Tally};
use crate::cli::progress::Progress;
use crate::cli::summary;
use crate::config::{AdminArgs, ProxyArgs, ReplayArgs, ResponseMode, ServeArgs, UpstreamUrl};
use crate::metrics::{DropReason, Queue, UnshadowedReason};
use crate::store::queries::TimeRange;
use crate::traffic::{self, TrafficFormat};

/// Skipped records named one by one; past this many, only counted.
const NAMED_SKIPS: usize = 20;

pub async fn run(args: ReplayArgs) -> ExitCode {
    let format = args
        .format
        .unwrap_or_else(|| TrafficFormat::from_path(&args.input));
    let input = args.input.display().to_string();
    let traffic = match traffic::read(&args.input, format) {
        Ok(traffic) => traffic,
        Err(error) => return error_exit(&error.to_string()),
    };
    for skipped in traffic.skipped.iter().take(NAMED_SKIPS) {
        eprintln!("warning: {input}: {skipped}: record skipped");
    }
    if traffic.skipped.len() > NAMED_SKIPS {
        eprintln!(
            "warning: {input}: {} more malformed records skipped",
            traffic.skipped.len() - NAMED_SKIPS
        );
    }
    if traffic.requests.is_empty() {
        return error_exit(&format!(
            "{input}: no requests to replay ({} records skipped; is it {} as --format says?)",
            traffic.skipped.len(),
            format.as_str()
        ));
    }

    let concurrency = args.concurrency as usize;
    let queue_room =
        (args.shadow.exchange_queue as usize).min(args.analysis.analysis_queue as usize);
    let rate = args.rate;
    let database_url = args.database.database_url.clone();
    let serve = serve_args(args, &input);
    let app = match Application::build(serve).await {
        Ok(app) => app,
        Err(error) => return error_exit(&error.to_string()),
    };
    let store = app.store().clone();
    let run_id = app.run_id();
    let label = app.run_label().to_string();
    let metrics = app.metrics();
    let backlog = app.backlog();
    let file_rules: RuleSet = app.file_rules().clone();
    let verdicts = app.verdicts();
    let Ok(proxy) = format!("http://{}", app.proxy_addr()).parse::<UpstreamUrl>() else {
        return error_exit("the replay proxy has no usable address");
    };
    let stop_app = CancellationToken::new();
    let serving = tokio::spawn(app.run_until(stop_app.clone().cancelled_owned()));

    let total = traffic.requests.len() as u64;
    let tally = Arc::new(Tally::default());
    let progress = Progress::start("replay", Some(total), tally.clone());
    let started = Instant::now();
    // Exchanges must not be dropped for want of room: wait while the stages behind the proxy catch up.
    let high_water = queue_room / 2;
    let hold = || {
        let backlog = backlog.clone();
        async move {
            while backlog() > high_water {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    driver::drive(
        &proxy,
        traffic.requests.into_iter(),
        Pace { concurrency, rate },
        tally.clone(),
        CancellationToken::new(),
        hold,
    )
    .await;
    let elapsed = started.elapsed();
    progress.finish().await;
    stop_app.cancel();
    let _ = serving.await;

    println!(
        "Replayed {} requests from {input} in {:.1} s ({:.0}/s): {} answered ({}), {} failed; {} records skipped.",
        tally.sent(),
        elapsed.as_secs_f64(),
        tally.sent() as f64 / elapsed.as_secs_f64().max(1e-9),
        tally.answered(),
        tally.classes(),
        tally.failed(),
        traffic.skipped.len(),
    );
    let unshadowed: Vec<String> = UnshadowedReason::ALL
        .iter()
        .filter(|reason| metrics.unshadowed_count(**reason) > 0)
        .map(|reason| format!("{} {}", metrics.unshadowed_count(*reason), reason.as_str()))
        .collect();
    if !unshadowed.is_empty() {
        println!(
            "Not shadowed (primary only): {} (see --allow-side-effects, --shadow-methods)",
            unshadowed.join(", ")
        );
    }
    let dropped = metrics.dropped_count(Queue::Exchanges, DropReason::QueueFull)
        + metrics.dropped_count(Queue::Analyses, DropReason::QueueFull);
    if dropped > 0 {
        println!(
            "{dropped} exchanges dropped for want of queue room: lower --concurrency or --rate"
        );
    }
    let report = async {
        let info = store
            .runs()
            .await?
            .into_iter()
            .find(|run| run.id == run_id)
            .ok_or_else(|| crate::store::StoreError::Data(format!("run {label} vanished")))?;
        let rules = store.rule_set(&file_rules).await?;
        store
            .run_report(info, TimeRange::all(), &verdicts, &rules)
            .await
    };
    match report.await {
        Ok(report) => {
            println!();
            print!("{}", summary::table(&report));
            println!();
            println!("Judge it: shadowdiff gate --run '{label}' --database-url '{database_url}'");
            ExitCode::SUCCESS
        }
        Err(error) => error_exit(&format!("cannot read the run back: {error}")),
    }
}

/// The `serve` settings of the private proxy: loopback on free ports, primary answering.
fn serve_args(args: ReplayArgs, input: &str) -> ServeArgs {
    let mut store = args.store;
    if store.run.is_none() {
        let name = std::path::Path::new(input)
            .file_name()
            .map_or_else(|| input.to_string(), |n| n.to_string_lossy().into_owned());
        let started = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        store.run = Some(format!("replay {name}@{started}"));
    }
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    ServeArgs {
        upstreams: args.upstreams,
        proxy: ProxyArgs {
            listen: loopback,
            response_mode: ResponseMode::Primary,
            shutdown_grace: Duration::from_secs(30),
            record: None,
        },
        shadow: args.shadow,
        analysis: args.analysis,
        verdicts: args.verdicts,
        database: args.database,
        store,
        admin: AdminArgs {
            admin_listen: loopback,
            admin_token: None,
        },
    }
}

fn error_exit(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_USAGE)
}
