//! The `shadowdiff` binary run as a process: started with flags and environment, found by its log line,
//! stopped with SIGTERM.

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::patience;

pub const BIN: &str = env!("CARGO_BIN_EXE_shadowdiff");

/// A `shadowdiff serve` process that is serving.
pub struct Serving {
    child: Child,
    /// The proxy listener's address (`127.0.0.1:port`).
    pub proxy: String,
    /// The admin listener's address.
    pub admin: String,
    /// Every log line the process wrote after its "serving" line.
    log: Arc<Mutex<Vec<String>>>,
}

/// Starts `shadowdiff serve` with these flags and environment (logging in JSON, both listeners on port 0)
/// and waits for its "serving" log line.
pub async fn spawn_serving(args: &[&str], envs: &[(&str, String)]) -> Serving {
    let mut child = Command::new(BIN)
        .arg("serve")
        .args(args)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .env("SHADOWDIFF_LISTEN", "127.0.0.1:0")
        .env("SHADOWDIFF_ADMIN_LISTEN", "127.0.0.1:0")
        .env("SHADOWDIFF_LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start shadowdiff");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr piped")).lines();
    let started = patience("the serving log line", async {
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("process exited before serving");
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if event["message"] == "shadowdiff serving" {
                return event;
            }
        }
    })
    .await;
    // Keep reading the log (a full pipe would stop the process), and keep it for the test to look at.
    let log = Arc::new(Mutex::new(Vec::new()));
    let kept = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            kept.lock().unwrap().push(line);
        }
    });
    Serving {
        child,
        proxy: started["proxy"]
            .as_str()
            .expect("proxy address")
            .to_string(),
        admin: started["admin"]
            .as_str()
            .expect("admin address")
            .to_string(),
        log,
    }
}

impl Serving {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// The log lines written so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The `/metrics` text as it is now.
    pub async fn metrics(&self) -> Metrics {
        let text = reqwest::get(self.admin_url("/metrics"))
            .await
            .expect("scrape /metrics")
            .text()
            .await
            .expect("read /metrics");
        Metrics(text)
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub async fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().expect("running").to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("run kill");
        assert!(killed.success());
        patience("the process to exit", self.child.wait())
            .await
            .expect("wait")
    }
}

/// Longest a one-shot command may run before the test gives up on it (a hang guard, not a timing assertion).
const COMMAND_GUARD: std::time::Duration = std::time::Duration::from_secs(180);

/// What a one-shot command printed, and how it exited.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `shadowdiff ARGS` to completion (stdin closed, logs at warn) and returns its output.
pub async fn run_command(args: &[&str]) -> Ran {
    let output = tokio::time::timeout(
        COMMAND_GUARD,
        Command::new(BIN)
            .args(args)
            .env("SHADOWDIFF_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("shadowdiff {args:?} did not finish"))
    .expect("run shadowdiff");
    Ran {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A scrape of `/metrics`, read by series.
pub struct Metrics(pub String);

impl Metrics {
    /// The value of one series, named with its labels as rendered (`name{a="b"}`); 0 when absent.
    pub fn value(&self, series: &str) -> f64 {
        self.0
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |value| value.trim().parse().expect("a number"))
    }

    /// The sum of every series of a family (`name` and `name{...}`).
    pub fn sum(&self, family: &str) -> f64 {
        self.0
            .lines()
            .filter(|line| {
                line.strip_prefix(family)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The series of a family with a non-zero value, as rendered.
    pub fn nonzero(&self, family: &str) -> Vec<String> {
        self.0
            .lines()
            .filter(|line| line.starts_with(&format!("{family}{{")))
            .filter(|line| line.rsplit(' ').next() != Some("0"))
            .map(str::to_string)
            .collect()
    }
}
