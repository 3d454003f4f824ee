//! The report in a real browser: headless Chromium follows a known regression from the overview to its
//! endpoint, its field's samples and one exchange, checks what each page shows (charts drawn, noise switch,
//! secondary on demand, a rule set from the page, a live update without reload) and saves screenshots.

use serde_json::Value;

use crate::support::browser::{self, Browser};
use crate::support::wait_for;
use crate::web::{report, send};

const USERS: &str = "GET /users/{id}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regression_followed_from_the_overview_to_one_exchange() {
    if browser::skipped() {
        return;
    }
    let report = report(|_| {}).await;
    let app = &report.app;
    let browser = Browser::start().await;

    // Overview: the run, its totals and the endpoint table.
    browser.open(&app.admin_url("/")).await;
    assert_eq!(browser.text("h1").await, "hostile");
    let cards = browser.text(".cards").await;
    assert!(cards.contains("Requests compared\n26"), "{cards}");
    assert!(
        cards.contains("Endpoints with regressions\n3 / 3"),
        "{cards}"
    );
    let row = browser
        .xpath(&format!(
            "//table[contains(@class,'endpoints')]//tr[td/a[.='{USERS}']]"
        ))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        row.contains("20") && row.contains("100.0%") && row.contains("body/name (missing)"),
        "{row}"
    );
    // The endpoint named by a hostile header is shown as text, not run as markup.
    browser
        .xpath("//table[contains(@class,'endpoints')]//a[.='GET <script>alert(1)</script>']")
        .await;
    browser.screenshot("overview").await;

    // Endpoint: charts drawn by the vendored library, the field tree with verdicts and classes.
    browser
        .xpath(&format!(
            "//table[contains(@class,'endpoints')]//a[.='{USERS}']"
        ))
        .await
        .click()
        .await
        .unwrap();
    assert_eq!(browser.text("h1").await, USERS);
    browser.css("[data-chart='latency'] .uplot canvas").await;
    browser.css("[data-chart='diffrate'] .uplot canvas").await;
    let missing = "//tr[contains(@class,'place')][td[@title='body/name']]";
    let name = browser.xpath(missing).await.text().await.unwrap();
    assert!(
        name.contains("missing") && name.contains("breaking") && name.contains("regression"),
        "{name}"
    );
    let extra = "//tr[contains(@class,'place')][td[@title='body/full_name']]";
    assert!(
        browser
            .xpath(extra)
            .await
            .text()
            .await
            .unwrap()
            .contains("additive")
    );
    let noise = "//tr[contains(@class,'verdict-noise')][td[@title='body/served_at']]";
    assert!(browser.displayed(noise).await, "noise is shown by default");
    browser.css("#hide-noise").await.click().await.unwrap();
    assert!(!browser.displayed(noise).await, "the switch hides noise");
    assert!(browser.displayed(extra).await, "and keeps regressions");
    browser.screenshot("endpoint").await;
    browser.css("#hide-noise").await.click().await.unwrap();
    assert!(browser.displayed(noise).await, "and shows noise again");
    let endpoint_url = browser.client.current_url().await.unwrap().to_string();

    // Samples of the missing field, then one exchange.
    browser
        .xpath(&format!("{missing}//a[.='samples']"))
        .await
        .click()
        .await
        .unwrap();
    assert_eq!(browser.text("h1").await, "Samples");
    assert!(browser.text(".run-head").await.contains("body/name"));
    // Each row reads without opening it: the request line, the three statuses, both values.
    let row = browser.text("table.samples tr.sample").await;
    assert!(row.contains("GET /users/"), "{row}");
    assert!(row.contains("200 / 200 / 200"), "{row}");
    assert!(row.contains("body/name"), "{row}");
    let primary = browser
        .text("table.samples tr.sample td.value.primary")
        .await;
    assert!(
        primary.contains("ada <script>alert(1)</script>"),
        "shown as text: {primary}"
    );
    assert_eq!(
        browser
            .text("table.samples tr.sample td.value.candidate")
            .await,
        "absent"
    );
    browser.screenshot("samples").await;
    // Filtering by a value that no sample has empties the list; the place stays chosen.
    let samples_url = browser.client.current_url().await.unwrap().to_string();
    let search = browser.css(".sample-filter input[name='value']").await;
    search.send_keys("nothing-like-this").await.unwrap();
    browser
        .css(".sample-filter button")
        .await
        .click()
        .await
        .unwrap();
    assert!(
        browser.text(".empty").await.contains("nothing-like-this"),
        "the filter says what it looked for"
    );
    assert!(browser.text(".run-head").await.contains("body/name"));
    browser.open(&samples_url).await;
    browser.css("table.samples a").await.click().await.unwrap();
    assert!(browser.text("h1").await.starts_with("GET /users/"));
    let differences = browser.text("table.differences").await;
    for expected in ["body/name", "body/full_name", "header/x-note"] {
        assert!(
            differences.contains(expected),
            "{expected} in {differences}"
        );
    }
    let panels = browser
        .client
        .find_all(fantoccini::Locator::Css(
            ".side-by-side:not(.single) .panel",
        ))
        .await
        .unwrap();
    assert_eq!(panels.len(), 2, "primary and candidate side by side");
    assert!(panels[0].text().await.unwrap().starts_with("Primary"));
    assert!(panels[1].text().await.unwrap().starts_with("Candidate"));
    let gone = panels[0]
        .find(fantoccini::Locator::Css("span.mark-missing"))
        .await
        .unwrap();
    assert_eq!(
        gone.attr("data-path").await.unwrap().as_deref(),
        Some("/name")
    );
    let added = panels[1]
        .find(fantoccini::Locator::Css("span.mark-extra"))
        .await
        .unwrap();
    assert!(
        added
            .text()
            .await
            .unwrap()
            .contains("ada <script>alert(1)</script>")
    );
    let secondary = browser.css("details.secondary .panel").await;
    assert!(
        !secondary.is_displayed().await.unwrap(),
        "secondary waits to be asked for"
    );
    browser
        .css("details.secondary summary")
        .await
        .click()
        .await
        .unwrap();
    assert!(secondary.is_displayed().await.unwrap());
    assert!(secondary.text().await.unwrap().starts_with("Secondary"));
    browser.screenshot("exchange").await;
    browser.assert_no_dialog().await;

    // Marking the field as noise from the page changes its verdict at once.
    browser.open(&endpoint_url).await;
    browser
        .xpath(&format!("{missing}//button[.='noise']"))
        .await
        .click()
        .await
        .unwrap();
    // The form posts and the page that comes back lists the rule: wait for it rather than for the click.
    assert!(browser.text("table.rules").await.contains("body/name"));
    let marked = browser.xpath(missing).await.text().await.unwrap();
    assert!(marked.contains("noise (rule)"), "{marked}");

    // New traffic shows up without a reload.
    let stayed: Value = browser
        .client
        .execute("window.stayed = true; return true;", vec![])
        .await
        .unwrap();
    assert_eq!(stayed, Value::Bool(true));
    for id in 100..105 {
        send(app, &format!("/users/{id}"), None).await;
    }
    wait_for("the endpoint page to show the new requests", || async {
        browser.text(".cards .card-value").await == "25"
    })
    .await;
    let same_page: Value = browser
        .client
        .execute("return window.stayed === true;", vec![])
        .await
        .unwrap();
    assert_eq!(
        same_page,
        Value::Bool(true),
        "updated in place, not reloaded"
    );
    browser.assert_no_dialog().await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_file_opens_offline_in_a_browser() {
    if browser::skipped() {
        return;
    }
    let report = report(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let file = crate::web::report_file(&report, dir.path()).await;
    report.app.stop().await;
    let browser = Browser::start().await;
    browser.open(&format!("file://{}", file.display())).await;
    browser.assert_no_dialog().await;
    assert_eq!(browser.text("h1").await, "hostile");
    assert!(browser.text(".verdict").await.starts_with("FAILED"));
    let panels = browser
        .client
        .find_all(fantoccini::Locator::Css(".side-by-side .panel"))
        .await
        .unwrap();
    assert!(panels.len() >= 2, "primary and candidate side by side");
    assert!(panels[0].text().await.unwrap().starts_with("Primary"));
    let added = browser.css(".side-by-side .panel span.mark-extra").await;
    assert!(
        added
            .text()
            .await
            .unwrap()
            .contains("ada <script>alert(1)</script>"),
        "stored markup shown as text"
    );
    browser.screenshot("report-file").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_accepted_as_intended_leaves_the_regressions_for_the_gate_and_the_rules_file() {
    if browser::skipped() {
        return;
    }
    let report = report(|_| {}).await;
    let app = &report.app;
    let database = report.database_url.as_str();
    let add_rule = |rule: Value| async move {
        let added = crate::support::client()
            .post(app.admin_url("/api/v1/rules"))
            .json(&rule)
            .send()
            .await
            .unwrap();
        assert_eq!(added.status(), 201);
        added.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
    };
    let users_paths = |report: &Value, list: &str| -> Vec<String> {
        let listed = crate::replay::endpoint(report, USERS)[list]
            .as_array()
            .cloned();
        listed
            .unwrap_or_default()
            .iter()
            .map(|r| r["path"].as_str().unwrap().to_string())
            .collect()
    };

    // Accepting the renamed field's `extra` as a breaking change does not hold for an additive one.
    let wrong_class = add_rule(serde_json::json!({
        "endpoint": USERS, "path": "body/full_name", "action": "accept", "kind": "extra", "compat": "breaking"
    }))
    .await;
    let (_, gate) = crate::replay::gate_json(database, "hostile", &[]).await;
    assert!(users_paths(&gate, "regressions").contains(&"body/full_name".to_string()));
    assert!(users_paths(&gate, "accepted").is_empty());
    let deleted = crate::support::client()
        .delete(app.admin_url(&format!("/api/v1/rules/{wrong_class}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    add_rule(serde_json::json!({
        "endpoint": USERS, "path": "body/full_name", "action": "accept", "kind": "extra", "compat": "additive"
    }))
    .await;

    // From the field tree: accept the missing field, with a note that carries markup.
    let browser = Browser::start().await;
    let endpoint_url = app.admin_url("/runs/hostile/endpoints/GET%20%2Fusers%2F%7Bid%7D");
    browser.open(&endpoint_url).await;
    let missing = "//tr[contains(@class,'place')][td[@title='body/name']]";
    accept_as_intended(
        &browser,
        missing,
        "renamed to <b>full_name</b> | see [changelog](http://x)",
    )
    .await;
    let accepted = browser.text("table.accepted").await;
    assert!(
        accepted.contains("body/name")
            && accepted.contains("body/full_name")
            && accepted.contains("renamed to <b>full_name</b>"),
        "listed apart, the note as text: {accepted}"
    );
    let row = browser.xpath(missing).await.text().await.unwrap();
    assert!(row.contains("accepted (rule)"), "{row}");
    assert!(
        browser
            .text("table.rules")
            .await
            .contains("missing, breaking: renamed")
    );
    browser.screenshot("accepted").await;

    // From an exchange: accept the header the candidate changed, the last regression of the endpoint.
    browser
        .xpath(&format!("{missing}//a[.='samples']"))
        .await
        .click()
        .await
        .unwrap();
    browser.css("table.samples a").await.click().await.unwrap();
    let header_row = "//table[contains(@class,'differences')]//tr[td/code[.='header/x-note']]";
    accept_as_intended(&browser, header_row, "the new version says so").await;
    // Back on the endpoint page, the header is listed with the others.
    let accepted = browser.text("table.accepted").await;
    assert!(
        accepted.contains("header/x-note") && accepted.contains("the new version says so"),
        "{accepted}"
    );
    browser.assert_no_dialog().await;
    browser.close().await;

    // The gate leaves both out of the diff rate and reports them as accepted, in every format.
    let (_, gate) = crate::replay::gate_json(database, "hostile", &[]).await;
    let regressions = users_paths(&gate, "regressions");
    assert!(
        !regressions.contains(&"body/name".to_string())
            && !regressions.contains(&"body/full_name".to_string()),
        "{regressions:?}"
    );
    assert_eq!(
        users_paths(&gate, "accepted"),
        ["body/full_name", "body/name", "header/x-note"]
    );
    assert!(regressions.is_empty(), "{regressions:?}");
    assert_eq!(
        crate::replay::endpoint(&gate, USERS)["diff_rate"],
        0.0,
        "accepted changes are not in the diff rate"
    );
    let formats = |format: &'static str| async move {
        crate::support::process::run_command(&[
            "gate",
            "--database-url",
            database,
            "--run",
            "hostile",
            "--format",
            format,
        ])
        .await
        .stdout
    };
    let text = formats("text").await;
    assert!(
        text.contains("accepted: body/name") && text.contains("renamed to <b>full_name</b>"),
        "{text}"
    );
    let junit = formats("junit").await;
    assert!(
        junit.contains("<system-out>accepted: body/full_name")
            && junit.contains("renamed to &lt;b&gt;full_name&lt;/b&gt;"),
        "{junit}"
    );
    let markdown = formats("markdown").await;
    assert!(
        markdown.contains("Accepted as intended")
            && markdown
                .contains(r"renamed to \<b\>full\_name\</b\> \| see \[changelog\]\(http://x\)"),
        "{markdown}"
    );

    // The report file lists them apart, the note escaped like every stored byte.
    let dir = tempfile::tempdir().unwrap();
    let output = crate::web::report_file(&report, dir.path()).await;
    let html = std::fs::read_to_string(&output).unwrap();
    let accepted_section = &html[html
        .find("<h2>Accepted changes</h2>")
        .expect("listed apart")..];
    assert!(
        accepted_section.contains("renamed to &#60;b&#62;full_name&#60;/b&#62;")
            || accepted_section.contains("renamed to &lt;b&gt;full_name&lt;/b&gt;"),
        "{accepted_section}"
    );
    assert!(!html.contains("<b>full_name</b>"));

    // The rules made on the dashboard download as a rules file that the CI gate applies the same way.
    let toml = crate::support::client()
        .get(app.admin_url("/api/v1/rules.toml"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        toml.headers()["content-type"],
        "application/toml; charset=utf-8"
    );
    let toml = toml.text().await.unwrap();
    assert!(toml.contains("action = \"accept\""), "{toml}");
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(rules.path().join("rules.toml"), &toml).unwrap();
    let stored = crate::support::client()
        .get(app.admin_url("/api/v1/rules"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    for rule in stored["stored"].as_array().unwrap() {
        crate::support::client()
            .delete(app.admin_url(&format!("/api/v1/rules/{}", rule["id"])))
            .send()
            .await
            .unwrap();
    }
    let (_, without) = crate::replay::gate_json(database, "hostile", &[]).await;
    assert!(users_paths(&without, "accepted").is_empty());
    let rules_path = rules.path().join("rules.toml");
    let (_, with_file) = crate::replay::gate_json(
        database,
        "hostile",
        &["--rules", rules_path.to_str().unwrap()],
    )
    .await;
    assert_eq!(
        users_paths(&with_file, "accepted"),
        ["body/full_name", "body/name", "header/x-note"]
    );
    assert_eq!(with_file["diff_rate"], gate["diff_rate"]);
}

/// Opens the accept form of the row at `row` (an XPath), writes the note and sends it.
async fn accept_as_intended(browser: &Browser, row: &str, note: &str) {
    browser
        .xpath(&format!(
            "{row}//details[contains(@class,'accept')]/summary"
        ))
        .await
        .click()
        .await
        .unwrap();
    browser
        .xpath(&format!("{row}//input[@name='note']"))
        .await
        .send_keys(note)
        .await
        .unwrap();
    browser
        .xpath(&format!("{row}//button[.='accept as intended']"))
        .await
        .click()
        .await
        .unwrap();
}
