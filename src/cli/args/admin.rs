//! The admin listener's flags (`AdminArgs`): its address, token, public URL and hosts, sessions, and the
//! notifications and verdict refresh that link back to it; converted into the web's settings.

use std::net::SocketAddr;

use clap::Args;

use crate::monitor::MonitorSettings;
use crate::notify::NotifyFormat;
use crate::values::{Span, parse_interval_span};
use crate::web::WebSettings;

/// The admin listener: health, metrics and (later) the report.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Admin")]
pub struct AdminArgs {
    /// Address of the admin listener (health, metrics, dashboard); loopback by default.
    #[arg(long, value_name = "ADDR", env = "SHADOWDIFF_ADMIN_LISTEN", default_value_t = WebSettings::DEFAULT_LISTEN)]
    pub admin_listen: SocketAddr,

    /// Token every page, API call and /metrics then needs (`Authorization: Bearer TOKEN`, or the login form's
    /// cookie); health checks stay open. Prefer the environment variable to the flag. Without a token, keep
    /// the admin listener on loopback.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "SHADOWDIFF_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,

    /// The URL people open the dashboard at, when it is not the listener's own address (a load balancer, TLS
    /// in front): its host is served, its origin accepted for changes, and with https the session cookie is
    /// `Secure`.
    #[arg(long, value_name = "URL", env = "SHADOWDIFF_ADMIN_PUBLIC_URL", value_parser = parse_public_url)]
    pub admin_public_url: Option<http::Uri>,

    /// Another name the admin listener answers to without a token (`dash.internal`, or with a port); repeat
    /// the flag (or comma-separate) for several. Requests naming any other host are refused, so that a web
    /// page cannot rebind its own name to this listener and read it.
    #[arg(
        long = "admin-allowed-host",
        value_name = "HOST",
        env = "SHADOWDIFF_ADMIN_ALLOWED_HOST",
        value_delimiter = ','
    )]
    pub admin_allowed_hosts: Vec<String>,

    /// How long a login to the dashboard lasts.
    #[arg(long, value_name = "DURATION", env = "SHADOWDIFF_ADMIN_SESSION_TTL",
          default_value_t = Span(WebSettings::DEFAULT_SESSION_TTL), value_parser = parse_interval_span)]
    pub admin_session_ttl: Span,

    /// Post a message here when a change first appears in the run, when the run's verdict flips, and
    /// when the process stops (a Slack incoming webhook, or any URL with `--notify-format json`); repeat the
    /// flag for several. Links point at `--admin-public-url` when set.
    #[arg(long = "notify-url", value_name = "URL", env = "SHADOWDIFF_NOTIFY_URL", value_delimiter = ',',
          value_parser = parse_public_url, hide_env_values = true)]
    pub notify_urls: Vec<http::Uri>,

    /// How notifications are written.
    #[arg(long, value_enum, env = "SHADOWDIFF_NOTIFY_FORMAT", default_value_t = NotifyFormat::Slack)]
    pub notify_format: NotifyFormat,

    /// How often the run's verdict is worked out from the store, for the verdict gauges on /metrics and for
    /// notifications.
    #[arg(long, value_name = "DURATION", env = "SHADOWDIFF_VERDICT_REFRESH",
          default_value_t = Span(MonitorSettings::DEFAULT_REFRESH), value_parser = parse_interval_span)]
    pub verdict_refresh: Span,
}

/// An http:// or https:// URL with a host.
fn parse_public_url(text: &str) -> Result<http::Uri, String> {
    let url: http::Uri = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a URL"))?;
    match (url.scheme_str(), url.authority()) {
        (Some("http" | "https"), Some(_)) => Ok(url),
        _ => Err(format!(
            "`{text}` must be an http:// or https:// URL with a host"
        )),
    }
}

impl AdminArgs {
    pub fn settings(self) -> WebSettings {
        WebSettings {
            listen: self.admin_listen,
            token: self.admin_token,
            public_url: self.admin_public_url,
            allowed_hosts: self.admin_allowed_hosts,
            session_ttl: self.admin_session_ttl.into(),
        }
    }
}
