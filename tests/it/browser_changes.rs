//! The changes in headless Chromium: the overview leads with them; one opens to its places and predictors; a
//! predictor leads to the samples whose requests have its feature; accepting the change there makes the gate
//! pass on the run.

use crate::changes::{euro_rounding, instance, priced, send, upstreams};
use crate::replay::gate_json;
use crate::support::browser::{self, Browser};
use crate::support::db::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_opened_followed_to_its_predictors_samples_and_accepted() {
    if browser::skipped() {
        return;
    }
    let db = TestDb::sqlite();
    let stubs = upstreams(euro_rounding).await;
    let app = instance(&db, "euros", &stubs).await;
    send(&app, &priced(200)).await;
    crate::support::wait_for("the traffic to be stored", || async {
        let (_, gate) = gate_json(db.url(), "euros", &["--latency-factor", "1e9"]).await;
        gate["requests"] == 200
    })
    .await;
    let (code, gate) = gate_json(db.url(), "euros", &["--latency-factor", "1e9"]).await;
    assert_eq!(
        code,
        Some(1),
        "the wrong euro amounts fail the gate: {gate:#}"
    );

    let browser = Browser::start().await;
    browser.open(&app.admin_url("/runs/euros")).await;
    // The overview leads with the change, closed: its title and how often it fails.
    let change = "//details[contains(@class,'change')]";
    let summary = browser.text("details.change > summary").await;
    assert!(
        summary.contains("body/amount")
            && summary.contains("GET /prices/{id}")
            && summary.contains("50 failing"),
        "{summary}"
    );
    let predictor = format!("{change}//a[contains(@class,'predictor')]");
    assert!(!browser.displayed(&predictor).await, "closed until opened");
    open_change(&browser).await;
    assert!(browser.displayed(&predictor).await);
    let said = browser.text("details.change .predictors li").await;
    assert!(
        said.contains("query currency = EUR") && said.contains("100.0% of failing requests"),
        "{said}"
    );
    let place = browser.text("details.change table.change-places").await;
    assert!(
        place.contains("body/amount") && place.contains("changed"),
        "{place}"
    );
    browser.screenshot("change-open").await;

    // The predictor leads to the samples whose requests have the feature.
    browser.xpath(&predictor).await.click().await.unwrap();
    let filter = browser.text("code.feature-filter").await;
    assert_eq!(filter, "query currency = EUR");
    let requests = browser.text("table.samples").await;
    assert!(requests.contains("currency=EUR"), "{requests}");
    for currency in ["USD", "GBP", "JPY"] {
        assert!(
            !requests.contains(&format!("currency={currency}")),
            "{requests}"
        );
    }
    browser.screenshot("change-samples").await;

    // Back on the overview, the change is accepted in one action.
    browser.open(&app.admin_url("/runs/euros")).await;
    open_change(&browser).await;
    browser
        .xpath(&format!("{change}//input[@name='note']"))
        .await
        .send_keys("euros are rounded up from now on")
        .await
        .unwrap();
    browser
        .xpath(&format!("{change}//button[.='Accept change']"))
        .await
        .click()
        .await
        .unwrap();
    browser.css("table.endpoints").await;
    browser.assert_no_dialog().await;
    assert!(
        browser
            .client
            .find(fantoccini::Locator::Css("details.change"))
            .await
            .is_err(),
        "no change is left"
    );
    browser.close().await;

    let (code, gate) = gate_json(db.url(), "euros", &["--latency-factor", "1e9"]).await;
    assert_eq!(code, Some(0), "{gate:#}");
    assert_eq!(gate["passed"], true);
    assert!(gate["changes"].as_array().unwrap().is_empty(), "{gate:#}");
    let prices = crate::replay::endpoint(&gate, "GET /prices/{id}");
    assert_eq!(prices["accepted"][0]["path"], "body/amount");
    assert_eq!(
        prices["accepted"][0]["note"],
        "euros are rounded up from now on"
    );
    app.stop().await;
}

/// Opens the overview's first change.
async fn open_change(browser: &Browser) {
    browser
        .css("details.change > summary")
        .await
        .click()
        .await
        .unwrap();
}
