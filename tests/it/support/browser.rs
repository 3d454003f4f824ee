//! A headless Chromium driven over WebDriver: chromedriver started on a free port in its own process group,
//! one browser session, both gone when the test ends (even when it panics).

use std::path::PathBuf;
use std::process::Stdio;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::patience;

/// A browser session and the chromedriver serving it.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    /// One session at a time in this process: two chromedrivers started at once have been seen to exit before
    /// listening, and two Chromiums on two cores starve everything else.
    _session: tokio::sync::MutexGuard<'static, ()>,
}

static SESSION: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether browser tests are skipped on purpose (`SHADOWDIFF_SKIP_BROWSER=1`); without that, a missing
/// chromedriver fails the test with a message saying what to install.
pub fn skipped() -> bool {
    let skip = std::env::var("SHADOWDIFF_SKIP_BROWSER").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("skipping a browser test: SHADOWDIFF_SKIP_BROWSER=1");
    }
    skip
}

impl Browser {
    /// Starts chromedriver (`CHROMEDRIVER` or `chromedriver` on the PATH) and a headless Chromium session.
    pub async fn start() -> Browser {
        // Waited for without patience: another test's session may take a while; it ends when that test does.
        let session = SESSION.lock().await;
        let program = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".to_string());
        let mut driver = Command::new(&program)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start {program}: {error}. The browser test needs Chromium and its driver \
                     (apt-get install chromium chromium-driver; ./scripts/test.sh installs them), or \
                     SHADOWDIFF_SKIP_BROWSER=1 to skip it deliberately"
                )
            });
        let mut lines = BufReader::new(driver.stdout.take().expect("stdout piped")).lines();
        let port = patience("chromedriver to listen", async {
            loop {
                let line = lines
                    .next_line()
                    .await
                    .unwrap()
                    .expect("chromedriver exited before listening");
                if let Some(port) = line
                    .split("started successfully on port ")
                    .nth(1)
                    .map(|rest| rest.trim_end_matches('.').trim().to_string())
                {
                    return port;
                }
            }
        })
        .await;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let profile = tempfile::tempdir().expect("browser profile directory");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_string(),
            json!({
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    "--window-size=1400,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let client = patience(
            "a Chromium session",
            ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities)
                .connect(&format!("http://127.0.0.1:{port}")),
        )
        .await
        .expect("start a headless Chromium session");
        Browser {
            client,
            driver,
            _profile: profile,
            _session: session,
        }
    }

    /// Opens `url` and checks that nothing on the page opened a dialog (an injected `alert(1)` would).
    pub async fn open(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
        self.assert_no_dialog().await;
    }

    pub async fn assert_no_dialog(&self) {
        if let Ok(text) = self.client.get_alert_text().await {
            panic!("the page opened a dialog: {text:?}");
        }
    }

    /// The first element matching a CSS selector, waited for.
    pub async fn css(&self, selector: &str) -> fantoccini::elements::Element {
        patience(
            &format!("an element matching `{selector}`"),
            self.client
                .wait()
                .forever()
                .for_element(Locator::Css(selector)),
        )
        .await
        .unwrap_or_else(|error| panic!("`{selector}`: {error}"))
    }

    /// The first element matching an XPath expression, waited for.
    pub async fn xpath(&self, expression: &str) -> fantoccini::elements::Element {
        patience(
            &format!("an element matching `{expression}`"),
            self.client
                .wait()
                .forever()
                .for_element(Locator::XPath(expression)),
        )
        .await
        .unwrap_or_else(|error| panic!("`{expression}`: {error}"))
    }

    /// The text of the first element matching a CSS selector, found again if a live refresh replaced it
    /// between finding and reading.
    pub async fn text(&self, selector: &str) -> String {
        patience(&format!("the text of `{selector}`"), async {
            loop {
                if let Ok(text) = self.css(selector).await.text().await {
                    return text;
                }
            }
        })
        .await
    }

    /// Whether the first element matching an XPath expression is displayed (found afresh each time).
    pub async fn displayed(&self, expression: &str) -> bool {
        patience(&format!("the visibility of `{expression}`"), async {
            loop {
                if let Ok(shown) = self.xpath(expression).await.is_displayed().await {
                    return shown;
                }
            }
        })
        .await
    }

    /// Saves a PNG of the viewport as `target/browser/NAME.png` and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        let directory = target_directory().join("browser");
        std::fs::create_dir_all(&directory).expect("screenshot directory");
        let path = directory.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Ends the session (closing Chromium) and stops chromedriver.
    pub async fn close(mut self) {
        self.client
            .clone()
            .close()
            .await
            .expect("end the browser session");
        let _ = self.driver.kill().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver's children (Chromium and its helpers) share its process group: take them all down, so
        // a failed test leaves no browser behind.
        if let Some(pid) = self.driver.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn target_directory() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}
