//! The command line's definition checked, and its defaults and refusals as documented.

use super::*;
use clap::CommandFactory;

#[test]
fn the_command_line_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn serve_defaults_are_the_documented_ones() {
    let args = serve_from(&[]).unwrap();
    assert_eq!(args.proxy.listen.to_string(), "0.0.0.0:8880");
    assert_eq!(args.admin.admin_listen.to_string(), "127.0.0.1:8888");
    assert_eq!(args.instance.shadow.max_body, ByteSize(8 << 20));
    assert_eq!(args.instance.shadow.max_shadow_inflight, 1024);
    assert_eq!(
        args.instance.upstreams.shadow_timeout,
        Span(std::time::Duration::from_secs(5))
    );
    assert_eq!(
        args.instance.shadow.shadow_methods.to_string(),
        "GET,HEAD,OPTIONS"
    );
    assert_eq!(args.proxy.response_mode, ResponseMode::Primary);
    assert_eq!(args.instance.upstreams.candidate.prefix(), "/v2");
    assert_eq!(args.instance.shadow.memory_budget, ByteSize(128 << 20));
    assert_eq!(args.instance.shadow.endpoint_cluster_threshold, 50);
    assert_eq!(args.instance.shadow.max_endpoints, 2000);
    assert_eq!(args.instance.store.sample_body_limit, ByteSize(64 << 10));
}

#[test]
fn no_shadow_takes_templates_and_globs() {
    let serve = serve_from(&["--no-shadow", "/links/{token},POST /oauth/token"]).unwrap();
    let never = serve.instance.shadow.no_shadow;
    assert!(never[0].matches("GET /links/abc123"));
    assert!(!never[0].matches("GET /links/abc/more"));
    assert!(never[1].matches("POST /oauth/token"));
    assert!(!never[1].matches("GET /oauth/token"));
    assert!(serve_from(&["--no-shadow", "nonsense"]).is_err());
}

#[test]
fn values_that_would_stop_a_task_are_refused_at_start() {
    let serve = serve_from;
    let error = serve(&["--store-flush-interval", "0s"]).unwrap_err();
    assert!(error.contains("must be longer than zero"), "{error}");
    assert!(
        serve(&["--shadow-timeout", "1000000000y"])
            .unwrap_err()
            .contains("too long")
    );
    assert!(serve(&["--store-batch-rows", "0"]).is_err());
    assert!(serve(&["--max-endpoints", "0"]).is_err());
    assert!(serve(&["--endpoint-cluster-threshold", "0"]).is_err());
    assert!(serve(&["--store-flush-interval", "250ms"]).is_ok());
}
