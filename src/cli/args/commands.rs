//! Settings of the subcommands besides `serve`: `replay`, `gate`, `demo` and the demo's parts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use clap::builder::BoolishValueParser;

use super::{DatabaseArgs, Fraction, InstanceArgs, UpstreamUrl, VerdictArgs};
use crate::analysis::rules::EndpointGlob;
use crate::app::AppSettings;
use crate::cli::demo::DemoSettings;
use crate::cli::replay::{ReplayFilter, ReplaySettings};
use crate::demo::service::DemoVariant;
use crate::gate::render::GateFormat;
use crate::gate::{FailOn, GateSettings};
use crate::traffic::TrafficFormat;
use crate::values::{MethodList, parse_duration};

/// Everything `replay` needs.
#[derive(Args, Debug, Clone)]
pub struct ReplayArgs {
    /// Recorded traffic to send: shadowdiff's JSON lines (`serve --record`), a HAR file or a GoReplay file.
    #[arg(long, value_name = "FILE", env = "SHADOWDIFF_INPUT")]
    pub input: PathBuf,

    /// Format of the input [default: from the extension: `.har`, `.gor`, else jsonl].
    #[arg(long, value_enum, env = "SHADOWDIFF_INPUT_FORMAT")]
    pub format: Option<TrafficFormat>,

    /// Requests sent at once.
    #[arg(long, value_name = "N", env = "SHADOWDIFF_CONCURRENCY",
          default_value_t = ReplaySettings::DEFAULT_CONCURRENCY as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,

    /// Requests per second at most [default: as fast as the concurrency allows].
    #[arg(long, value_name = "RPS", env = "SHADOWDIFF_RATE", value_parser = clap::value_parser!(u32).range(1..))]
    pub rate: Option<u32>,

    /// A header set on every replayed request, replacing the recorded one (`Authorization: Bearer ...`):
    /// recordings keep credentials only as redacted hashes, which upstreams refuse. Repeat the flag for
    /// several; from the environment, one per line.
    #[arg(long = "header", value_name = "NAME: VALUE", env = "SHADOWDIFF_REPLAY_HEADER",
          value_delimiter = '\n', value_parser = parse_header, hide_env_values = true)]
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,

    /// Replay only requests whose path matches this regular expression (`^/api/`).
    #[arg(long, value_name = "REGEX", env = "SHADOWDIFF_INCLUDE_PATH", value_parser = parse_regex)]
    pub include_path: Option<regex::Regex>,

    /// Leave out requests whose path matches this regular expression (`\.(css|js|png)$`).
    #[arg(long, value_name = "REGEX", env = "SHADOWDIFF_EXCLUDE_PATH", value_parser = parse_regex)]
    pub exclude_path: Option<regex::Regex>,

    /// Keep the recorded pace from each entry's time, this many times faster: `1x` as recorded, `2x` (or
    /// `200%`) twice as fast [default: as fast as --concurrency and --rate allow].
    #[arg(long, value_name = "FACTOR", env = "SHADOWDIFF_REPLAY_SPEED", value_parser = parse_speed)]
    pub speed: Option<f64>,

    /// Replay only requests sent to this host (`api.example.com`, a port only if it must match); requests
    /// to other hosts are skipped and counted [default: for HAR files, the host with the most entries (a
    /// browser's HAR holds fonts and CDNs too), said at start; for other formats, every host].
    #[arg(long, value_name = "HOST", env = "SHADOWDIFF_REPLAY_HOST", value_parser = parse_host)]
    pub host: Option<http::uri::Authority>,

    /// Replay only these methods (`GET,HEAD`) [default: every method recorded].
    #[arg(long, value_name = "LIST", env = "SHADOWDIFF_REPLAY_METHODS")]
    pub methods: Option<MethodList>,

    #[command(flatten)]
    pub instance: InstanceArgs,
}

/// `2x`, `200%` or `2`: a factor above zero.
fn parse_speed(text: &str) -> Result<f64, String> {
    let trimmed = text.trim();
    let factor = match (trimmed.strip_suffix('x'), trimmed.strip_suffix('%')) {
        (Some(times), _) => times.trim().parse::<f64>().ok(),
        (_, Some(percent)) => percent.trim().parse::<f64>().ok().map(|p| p / 100.0),
        _ => trimmed.parse::<f64>().ok(),
    };
    factor
        .filter(|factor| factor.is_finite() && *factor > 0.0)
        .ok_or_else(|| format!("`{text}` is not a speed: write `1x`, `2x`, `50%`"))
}

fn parse_host(text: &str) -> Result<http::uri::Authority, String> {
    text.trim()
        .parse::<http::uri::Authority>()
        .ok()
        .filter(|authority| !authority.host().is_empty() && !authority.as_str().contains('@'))
        .ok_or_else(|| {
            format!("`{text}` is not a host: write `api.example.com` or `api.example.com:8443`")
        })
}

fn parse_regex(text: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(text)
        .map_err(|error| format!("`{text}` is not a regular expression: {error}"))
}

/// `Name: value`.
fn parse_header(text: &str) -> Result<(http::HeaderName, http::HeaderValue), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("`{text}` is not a header; expected `Name: value`"))?;
    let name = http::HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("`{}` is not a header name", name.trim()))?;
    let value = http::HeaderValue::from_str(value.trim())
        .map_err(|_| format!("the value of `{name}` is not a valid header value"))?;
    Ok((name, value))
}

/// The gate's bounds and output, shared by `gate` and `demo --then-gate`.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Gate")]
pub struct GateOptions {
    /// Largest diff rate that passes, overall and for each endpoint with at least --min-requests requests (a
    /// fraction or a percentage).
    #[arg(long, value_name = "RATE", env = "SHADOWDIFF_MAX_DIFF_RATE", default_value_t = Fraction(GateSettings::DEFAULT_MAX_DIFF_RATE))]
    pub max_diff_rate: Fraction,

    /// Fewest compared requests for a verdict: a run with fewer fails (too little evidence), and an endpoint
    /// with fewer is reported but not judged on its own.
    #[arg(long, value_name = "N", env = "SHADOWDIFF_MIN_REQUESTS", default_value_t = GateSettings::DEFAULT_MIN_REQUESTS)]
    pub min_requests: u64,

    /// Which regressions count: `any`, or only `breaking` ones.
    #[arg(long, value_enum, env = "SHADOWDIFF_FAIL_ON", default_value_t = GateSettings::DEFAULT_FAIL_ON)]
    pub fail_on: FailOn,

    /// Fail on latency regressions too (they are reported either way).
    #[arg(long, env = "SHADOWDIFF_GATE_LATENCY", value_parser = BoolishValueParser::new())]
    pub latency: bool,

    /// Judge only endpoints matching this pattern (`GET /users/*`, `/orders/**`); repeat the flag (or
    /// comma-separate) for several.
    #[arg(long = "endpoint", value_name = "PATTERN", env = "SHADOWDIFF_GATE_ENDPOINT",
          value_delimiter = ',', value_parser = EndpointGlob::parse)]
    pub endpoints: Vec<EndpointGlob>,

    /// Output format.
    #[arg(
        long,
        value_enum,
        env = "SHADOWDIFF_GATE_FORMAT",
        default_value_t = GateFormat::Text
    )]
    pub format: GateFormat,
}

/// What `gate` and `report` both judge a stored run by: the run, the rules, the bounds, the verdicts' settings
/// and the store.
#[derive(Args, Debug, Clone)]
pub struct JudgingArgs {
    /// The run to judge: its label, or `latest`.
    #[arg(
        long,
        value_name = "LABEL",
        env = "SHADOWDIFF_RUN",
        default_value = "latest"
    )]
    pub run: String,

    /// Rules file (TOML) whose ignore, noise, presence-only, type-only and accept rules apply to the verdicts,
    /// as in `serve --rules` (`/api/v1/rules.toml` downloads the dashboard's); rules stored from the dashboard
    /// apply as well.
    #[arg(long, value_name = "FILE", env = "SHADOWDIFF_RULES")]
    pub rules: Option<PathBuf>,

    #[command(flatten)]
    pub gate: GateOptions,

    #[command(flatten)]
    pub verdicts: VerdictArgs,

    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// Everything `gate` needs.
#[derive(Args, Debug, Clone)]
pub struct GateArgs {
    #[command(flatten)]
    pub judging: JudgingArgs,
}

/// Everything `report` needs.
#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    /// Where the HTML file goes (one self-contained file: styles and charts inline, nothing loaded from the
    /// network), to attach to a build.
    #[arg(long, value_name = "FILE", env = "SHADOWDIFF_REPORT_OUTPUT")]
    pub output: PathBuf,

    #[command(flatten)]
    pub judging: JudgingArgs,

    #[command(flatten)]
    pub identity: super::sealing::IdentityArgs,
}

/// How long traffic runs: until a duration has passed, a number of requests has been sent, or Ctrl-C.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Traffic")]
pub struct TrafficArgs {
    /// Requests per second sent through the proxy.
    #[arg(long, value_name = "RPS", env = "SHADOWDIFF_RATE",
          default_value_t = DemoSettings::DEFAULT_RATE, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate: u32,

    /// Stop sending after this long [default: until Ctrl-C].
    #[arg(long, value_name = "DURATION", env = "SHADOWDIFF_DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Stop sending after this many requests [default: no limit].
    #[arg(long, value_name = "N", env = "SHADOWDIFF_REQUESTS", value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,
}

/// Everything `demo` needs.
#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Address of the demo's proxy.
    #[arg(long, value_name = "ADDR", env = "SHADOWDIFF_LISTEN", default_value_t = DemoSettings::DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Address of the dashboard.
    #[arg(long, value_name = "ADDR", env = "SHADOWDIFF_ADMIN_LISTEN", default_value_t = crate::web::WebSettings::DEFAULT_LISTEN)]
    pub admin_listen: SocketAddr,

    /// Label of the demo's run [default: `demo@<start time>`].
    #[arg(long, value_name = "LABEL", env = "SHADOWDIFF_RUN")]
    pub run: Option<String>,

    /// When traffic stops (--duration or --requests), judge the run with the gate and exit with its code.
    #[arg(long, env = "SHADOWDIFF_THEN_GATE", value_parser = BoolishValueParser::new())]
    pub then_gate: bool,

    #[command(flatten)]
    pub traffic: TrafficArgs,

    #[command(flatten)]
    pub gate: GateOptions,

    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// Everything `demo-service` needs.
#[derive(Args, Debug, Clone)]
pub struct DemoServiceArgs {
    /// Which version to serve.
    #[arg(long, value_enum, env = "SHADOWDIFF_VARIANT")]
    pub variant: DemoVariant,

    /// Address to listen on.
    #[arg(long, value_name = "ADDR", env = "SHADOWDIFF_LISTEN", default_value_t = DemoSettings::DEFAULT_SERVICE_LISTEN)]
    pub listen: SocketAddr,
}

/// Everything `demo-traffic` needs.
#[derive(Args, Debug, Clone)]
pub struct DemoTrafficArgs {
    /// Where to send the demo's requests: the proxy's URL.
    #[arg(long, value_name = "URL", env = "SHADOWDIFF_TARGET")]
    pub target: UpstreamUrl,

    #[command(flatten)]
    pub traffic: TrafficArgs,
}

impl ReplayArgs {
    /// What to replay, and the settings of the private instance it goes through.
    pub fn settings(self) -> (ReplaySettings, AppSettings) {
        let replay = ReplaySettings {
            input: self.input,
            format: self.format,
            concurrency: self.concurrency as usize,
            rate: self.rate,
            headers: self.headers,
            filter: ReplayFilter {
                include_path: self.include_path,
                exclude_path: self.exclude_path,
                methods: self.methods.map(|list| list.0).unwrap_or_default(),
            },
            speed: self.speed,
            host: self.host,
        };
        let settings = self.instance.settings();
        (replay, settings)
    }
}

impl GateOptions {
    pub fn settings(&self) -> GateSettings {
        GateSettings {
            max_diff_rate: self.max_diff_rate.0,
            min_requests: self.min_requests,
            fail_on: self.fail_on,
            latency: self.latency,
            endpoints: self.endpoints.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_speed;

    #[test]
    fn speeds_read_as_factors_or_percentages() {
        assert_eq!(parse_speed("2x"), Ok(2.0));
        assert_eq!(parse_speed("1x"), Ok(1.0));
        assert_eq!(parse_speed("200%"), Ok(2.0));
        assert_eq!(parse_speed("0.5"), Ok(0.5));
        for bad in ["0x", "-1", "fast", "inf", "NaNx", ""] {
            assert!(parse_speed(bad).is_err(), "{bad}");
        }
    }
}
