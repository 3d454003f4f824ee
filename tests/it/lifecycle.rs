//! The process around the proxy: graceful shutdown, the command line, environment variables and exit codes.

use clap::CommandFactory;
use http::StatusCode;
use shadowdiff::cli::args::Cli;

use tokio::net::TcpListener;
use tokio::process::Command;

use crate::support::stub::{Gate, Stub};
use crate::support::{TestApp, client, patience};

const BIN: &str = env!("CARGO_BIN_EXE_shadowdiff");

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_and_drains_exchanges() {
    let gate = Gate::new();
    let primary = Stub::gated_json(&gate, r#"{"slow":true}"#).await;
    let secondary = Stub::json(r#"{"slow":true}"#).await;
    let candidate = Stub::json(r#"{"slow":true}"#).await;
    let mut app = TestApp::start(&primary.url(), &secondary.url(), &candidate.url(), |_| {}).await;

    let url = app.url("/slow");
    let in_flight = tokio::spawn(async move { crate::support::get_text(&url).await });
    primary.next_request().await;

    let stopped = app.begin_shutdown();
    let readyz = app.admin_url("/readyz");
    patience("readiness to report draining", async {
        loop {
            let response = client().get(&readyz).send().await.unwrap();
            if response.status() == StatusCode::SERVICE_UNAVAILABLE {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;

    gate.open();
    let body = patience("the in-flight response", in_flight).await.unwrap();
    assert_eq!(body, r#"{"slow":true}"#);
    // The instance stops only after its listener has closed and its in-flight work is done.
    patience("the instance to stop", stopped).await.unwrap();
    let exchange = app.next_exchange().await;
    assert_eq!(exchange.endpoint, "GET /slow");
}

#[tokio::test]
async fn every_serve_flag_is_documented_with_its_env_variable_and_default() {
    let output = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    let command = Cli::command();
    let serve = command.find_subcommand("serve").unwrap();
    let mut checked = 0;
    for arg in serve.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "help" | "version") {
            continue;
        }
        assert!(
            help.contains(&format!("--{long}")),
            "--{long} missing from help"
        );
        assert!(arg.get_help().is_some(), "--{long} has no help text");
        let env = arg
            .get_env()
            .unwrap_or_else(|| panic!("--{long} has no environment variable"));
        let env = env.to_str().unwrap();
        assert!(env.starts_with("SHADOWDIFF_"), "{env}");
        assert!(
            help.contains(&format!("[env: {env}")),
            "{env} missing from help"
        );
        for default in arg.get_default_values() {
            let shown = format!("[default: {}]", default.to_str().unwrap());
            assert!(help.contains(&shown), "--{long}: {shown} missing from help");
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} flags checked");
    for documented in [
        "[default: 0.0.0.0:8880]",
        "[default: 127.0.0.1:8888]",
        "[default: 8MiB]",
        "[default: 1024]",
        "[default: 5s]",
    ] {
        assert!(help.contains(documented), "{documented} missing");
    }
}

async fn run_serve(args: &[&str]) -> (Option<i32>, String) {
    let (_database, url) = crate::support::temp_database();
    let output = Command::new(BIN)
        .arg("serve")
        .args(args)
        .env("SHADOWDIFF_DATABASE_URL", url)
        .env_remove("RUST_BACKTRACE")
        .output()
        .await
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_bad_url_is_a_one_line_error_and_exit_code_2() {
    let (code, stderr) = run_serve(&[
        "--primary",
        "ftp://files.internal",
        "--secondary",
        "http://127.0.0.1:1",
        "--candidate",
        "http://127.0.0.1:2",
    ])
    .await;
    assert_eq!(code, Some(2));
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--primary") && stderr.contains("unsupported scheme"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
}

#[tokio::test]
async fn a_taken_port_is_a_one_line_error_and_exit_code_2() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, stderr) = run_serve(&[
        "--primary",
        "http://127.0.0.1:1",
        "--secondary",
        "http://127.0.0.1:1",
        "--candidate",
        "http://127.0.0.1:2",
        "--listen",
        &addr,
        "--admin-listen",
        "127.0.0.1:0",
    ])
    .await;
    assert_eq!(code, Some(2));
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&addr) && stderr.contains("proxy listener"),
        "{stderr}"
    );
}

#[tokio::test]
async fn settings_come_from_the_environment_and_sigterm_stops_cleanly() {
    let primary = Stub::json(r#"{"from":"env"}"#).await;
    let secondary = Stub::json(r#"{"from":"env"}"#).await;
    let candidate = Stub::json(r#"{"from":"env"}"#).await;
    let (_database, url) = crate::support::temp_database();
    let serving = crate::support::process::spawn_serving(
        &[],
        &[
            ("SHADOWDIFF_DATABASE_URL", url),
            ("SHADOWDIFF_PRIMARY", primary.url()),
            ("SHADOWDIFF_SECONDARY", secondary.url()),
            ("SHADOWDIFF_CANDIDATE", format!("{}/next", candidate.url())),
            ("SHADOWDIFF_SHADOW_HOST_SUFFIX", "true".to_string()),
        ],
    )
    .await;
    let proxy = serving.proxy.clone();

    let response = client()
        .get(format!("http://{proxy}/ping"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), r#"{"from":"env"}"#);
    let seen = candidate.next_request().await;
    assert_eq!(seen.uri.path(), "/next/ping");
    assert!(seen.headers["host"].to_str().unwrap().contains("-shadow:"));

    let status = serving.terminate().await;
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn an_unreachable_store_is_a_one_line_error_and_exit_code_2() {
    let refused = crate::support::stub::Refusing::new();
    let url = refused.url().replace("http://", "postgres://postgres@") + "/shadowdiff";
    let output = Command::new(BIN)
        .args([
            "serve",
            "--primary",
            "http://127.0.0.1:1",
            "--secondary",
            "http://127.0.0.1:1",
        ])
        .args([
            "--candidate",
            "http://127.0.0.1:2",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--database-url", &url])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("store"), "{stderr}");
    let bad_url = Command::new(BIN)
        .args(["migrate", "--database-url", "mysql://nope"])
        .output()
        .await
        .unwrap();
    assert_eq!(bad_url.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_url.stderr).contains("unsupported database URL"));
}
