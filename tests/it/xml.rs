//! XML and SOAP answers through the proxy, compared as trees of elements: what counts as equal, where a change
//! shows, a DTD never read, and what a parse holds against what it charged.

use http::{Response, StatusCode};
use shadowdiff::analysis::BodySkip;
use shadowdiff::analysis::diff::DiffKind;
use shadowdiff::analysis::structured::xml;
use shadowdiff::budget::Charge;
use shadowdiff::exchange::Target;

use crate::support::stub::{Stub, StubBody, full};
use crate::support::{TestApp, client, wait_for};

const ORDER: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
  <soap:Body>
    <m:GetOrderResponse xmlns:m="urn:example:shop">
      <m:order id="7" status="paid">
        <m:item sku="A-1"><m:qty>2</m:qty></m:item>
        <m:item sku="B-7"><m:qty>1</m:qty></m:item>
        <m:total currency="EUR">44.48</m:total>
      </m:order>
    </m:GetOrderResponse>
  </soap:Body>
</soap:Envelope>"#;

/// The same answer written otherwise: other prefixes for the same namespaces (one of them the default
/// namespace), attributes in another order, other white space between elements.
const ORDER_REWRITTEN: &str = r#"<env:Envelope xmlns:env="http://schemas.xmlsoap.org/soap/envelope/"><env:Body>
<GetOrderResponse xmlns="urn:example:shop"><order status="paid" id="7"><item sku="A-1"><qty>2</qty></item>
<item sku="B-7"><qty>1</qty></item><total currency="EUR">44.48</total></order></GetOrderResponse>
</env:Body></env:Envelope>"#;

fn xml_response(body: &'static str) -> Response<StubBody> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/xml; charset=utf-8")
        .body(full(body.as_bytes().to_vec()))
        .unwrap()
}

async fn xml_stub(body: &'static str) -> Stub {
    Stub::start(move |_| async move { xml_response(body) }).await
}

/// Sends one request through the proxy and returns what the caller got.
async fn call(app: &TestApp) -> String {
    let response = client().get(app.url("/orders/7")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

#[tokio::test]
async fn another_prefix_and_attribute_order_are_no_difference() {
    let primary = xml_stub(ORDER).await;
    let secondary = xml_stub(ORDER).await;
    let candidate = xml_stub(ORDER_REWRITTEN).await;
    let mut app =
        TestApp::start_analysed(&primary.url(), &secondary.url(), &candidate.url(), |_| {}).await;
    assert_eq!(call(&app).await, ORDER);
    let analysis = app.next_analysis().await;
    let compared = analysis.compared().expect("compared");
    assert_eq!(compared.candidate, [], "the same answer written otherwise");
    assert_eq!(compared.noise, []);
    assert_eq!(compared.body_skipped, []);
}

#[tokio::test]
async fn a_changed_element_is_a_value_change_at_its_path() {
    let changed: &'static str = ORDER.replace("<m:qty>1</m:qty>", "<m:qty>3</m:qty>").leak();
    let primary = xml_stub(ORDER).await;
    let secondary = xml_stub(ORDER_REWRITTEN).await;
    let candidate = xml_stub(changed).await;
    let mut app =
        TestApp::start_analysed(&primary.url(), &secondary.url(), &candidate.url(), |_| {}).await;
    assert_eq!(call(&app).await, ORDER);
    let analysis = app.next_analysis().await;
    let compared = analysis.compared().expect("compared");
    let found: Vec<(&str, DiffKind)> = compared
        .candidate
        .iter()
        .map(|difference| (difference.path.as_str(), difference.kind))
        .collect();
    assert_eq!(
        found,
        [(
            "body/Envelope/Body/GetOrderResponse/order/item/1/qty",
            DiffKind::ValueChanged
        )]
    );
    let difference = &compared.candidate[0];
    assert_eq!(difference.primary.as_deref(), Some(r#""1""#));
    assert_eq!(difference.other.as_deref(), Some(r#""3""#));
    assert_eq!(compared.noise, []);
}

#[tokio::test]
async fn an_answer_that_is_not_well_formed_is_a_type_change_at_body() {
    let primary = xml_stub(ORDER).await;
    let secondary = xml_stub(ORDER).await;
    let candidate = xml_stub("<order><total>44.48</order>").await;
    let mut app =
        TestApp::start_analysed(&primary.url(), &secondary.url(), &candidate.url(), |_| {}).await;
    assert_eq!(call(&app).await, ORDER);
    let analysis = app.next_analysis().await;
    let compared = analysis.compared().expect("compared");
    assert_eq!(compared.candidate.len(), 1, "{:?}", compared.candidate);
    let difference = &compared.candidate[0];
    assert_eq!(
        (difference.path.as_str(), difference.kind),
        ("body", DiffKind::TypeChanged)
    );
    assert_eq!(difference.primary.as_deref(), Some("xml"));
    assert_eq!(difference.other.as_deref(), Some("invalid xml"));
}

/// A billion laughs: ten entities each ten times the one before, nine deep, about 3 GB if ever expanded.
fn billion_laughs(side: &str) -> &'static str {
    let mut dtd = String::from("<!ENTITY lol \"lol\">\n");
    for level in 1..=9 {
        let previous = if level == 1 {
            "lol".to_string()
        } else {
            format!("lol{}", level - 1)
        };
        dtd.push_str(&format!(
            "<!ENTITY lol{level} \"{}\">\n",
            format!("&{previous};").repeat(10)
        ));
    }
    format!(
        "<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n{dtd}]>\n<lolz side=\"{side}\">&lol9;</lolz>"
    )
    .leak()
}

#[tokio::test]
async fn a_billion_laughs_is_a_counted_skip_and_the_caller_gets_it_whole() {
    // Each side's own, so that the bodies differ and are read, not found equal byte for byte.
    let primary_body = billion_laughs("primary");
    let primary = xml_stub(primary_body).await;
    let secondary = xml_stub(billion_laughs("secondary")).await;
    let candidate = xml_stub(billion_laughs("candidate")).await;
    let mut app =
        TestApp::start_analysed(&primary.url(), &secondary.url(), &candidate.url(), |s| {
            // Room for the exchange and its bodies, nothing like room for the expansion.
            s.memory_budget = 256 << 10;
        })
        .await;
    assert_eq!(call(&app).await, primary_body);
    let analysis = app.next_analysis().await;
    let compared = analysis.compared().expect("compared, the body skipped");
    assert_eq!(
        compared.body_skipped,
        [(Target::Primary, BodySkip::XmlDoctype)]
    );
    assert_eq!(compared.candidate, []);
    wait_for("the skip counted", || async {
        app.scrape().await.lines().any(|line| {
            line.starts_with("shadowdiff_bodies_not_compared")
                && line.contains(r#"reason="xml_doctype""#)
                && line.contains(r#"target="primary""#)
                && line.ends_with(" 1")
        })
    })
    .await;
    assert_eq!(app.metrics.analysis.failures(), 0);
}

#[test]
fn a_parse_allocates_no_more_than_its_charge() {
    let many = |item: &str, count: usize| {
        let items: String = (0..count)
            .map(|i| item.replace("{i}", &i.to_string()))
            .collect();
        format!("<r>{items}</r>")
    };
    // Many places, many attributes, text in pieces, long namespace names keyed into attributes, deep nesting.
    let long_namespace = "urn:".to_string() + &"n".repeat(2_000);
    let documents = [
        many("<a/>", 20_000),
        many("<a{i}/>", 20_000),
        // Just past a doubling of the element arena: the worst of these shapes, 0.81 of the charge.
        many("<a{i}/>", 16_390),
        many("<a>{i}</a>", 20_000),
        many(r##"<a x="{i}" y="1" z="2"/>"##, 10_000),
        many("<a>x&amp;y&#65;<![CDATA[z]]> w</a>", 10_000),
        many("<a><b>{i}</b><c/></a>", 10_000),
        many(
            &format!(r##"<p:a xmlns:p="{long_namespace}{{i}}" p:x="1" x="2"/>"##),
            200,
        ),
        many(r##"<a xmlns="urn:{i}"/>"##, 5_000),
        format!("{}x{}", "<a>".repeat(128), "</a>".repeat(128)),
        format!("<a>{}</a>", "é".repeat(50_000)),
        format!("<a>\r\n{}</a>", "x".repeat(100_000)),
        "<a/>".to_string(),
    ];
    for text in &documents {
        let bytes = text.as_bytes();
        let mut charge = Charge::none();
        let (peak, parsed) = crate::support::heap::peak_of(|| {
            xml::parse_pair(bytes, b"<r><a/></r>", &mut charge).map(|(tree, _)| tree.is_array())
        });
        let start: String = text.chars().take(60).collect();
        assert!(parsed.is_ok(), "{start}");
        assert!(
            peak <= charge.bytes(),
            "peak {peak} bytes over the charge of {} for {start}",
            charge.bytes(),
        );
    }
}
