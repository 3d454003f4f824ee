//! CSV and NDJSON answers through the proxy: differences at row and column paths, not lines of text.

use http::Response;
use shadowdiff::analysis::Analysis;
use shadowdiff::analysis::diff::DiffKind;

use crate::support::stub::{Stub, full};
use crate::support::{TestApp, client};

const PRICES: &str = "sku,name,price\r\nA1,pen,1.20\r\nB2,\"ink, blue\",3.50\r\nC3,pad,2.00\r\n";
/// One cell changed (the second row's price) and the last row gone.
const PRICES_CHANGED: &str = "sku,name,price\r\nA1,pen,1.20\r\nB2,\"ink, blue\",3.75\r\n";

const EVENTS: &str = "{\"id\":1,\"kind\":\"open\"}\n{\"id\":2,\"kind\":\"read\"}\n\
{\"id\":3,\"kind\":\"write\",\"bytes\":10}\n{\"id\":4,\"kind\":\"close\"}\n";
/// The third line's `bytes` changed and the fourth line gone.
const EVENTS_CHANGED: &str = "{\"id\":1,\"kind\":\"open\"}\n{\"id\":2,\"kind\":\"read\"}\n\
{\"id\":3,\"kind\":\"write\",\"bytes\":12}\n";

/// An upstream answering every request with `body` as `content_type`.
async fn answering(content_type: &'static str, body: &'static [u8]) -> Stub {
    Stub::start(move |_| async move {
        Response::builder()
            .header("content-type", content_type)
            .body(full(body))
            .unwrap()
    })
    .await
}

/// The analysis of one request to `path`, primary and secondary answering `primary`, candidate `candidate`.
async fn analysed(
    content_type: &'static str,
    primary: &'static [u8],
    candidate: &'static [u8],
    path: &str,
) -> Analysis {
    let primary_stub = answering(content_type, primary).await;
    let secondary = answering(content_type, primary).await;
    let candidate = answering(content_type, candidate).await;
    let mut app = TestApp::start_analysed(
        &primary_stub.url(),
        &secondary.url(),
        &candidate.url(),
        |_| {},
    )
    .await;
    let answer = client().get(app.url(path)).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer.bytes().await.unwrap(),
        primary,
        "callers get primary's answer"
    );
    app.next_analysis().await
}

/// A candidate difference as (path, generalised path, kind, primary's value, candidate's value).
type Found = (String, String, DiffKind, Option<String>, Option<String>);

/// Each candidate difference, by path.
fn found(analysis: &Analysis) -> Vec<Found> {
    let compared = analysis.compared().expect("compared");
    assert!(
        compared.noise.is_empty(),
        "secondary answered as primary did: {:?}",
        compared.noise
    );
    assert!(
        compared.body_skipped.is_empty(),
        "{:?}",
        compared.body_skipped
    );
    let mut found: Vec<_> = compared
        .candidate
        .iter()
        .map(|d| {
            (
                d.path.clone(),
                d.generalised.clone(),
                d.kind,
                d.primary.clone(),
                d.other.clone(),
            )
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

fn some(text: &str) -> Option<String> {
    Some(text.to_string())
}

#[tokio::test]
async fn a_changed_csv_cell_and_a_missing_row_are_found_at_their_row_and_column() {
    let analysis = analysed(
        "text/csv; charset=utf-8",
        PRICES.as_bytes(),
        PRICES_CHANGED.as_bytes(),
        "/prices.csv",
    )
    .await;
    assert_eq!(
        found(&analysis),
        vec![
            (
                "body".into(),
                "body".into(),
                DiffKind::ArrayLength,
                some("3"),
                some("2")
            ),
            (
                "body/1/price".into(),
                "body/*/price".into(),
                DiffKind::ValueChanged,
                some("\"3.50\""),
                some("\"3.75\"")
            ),
            (
                "body/2".into(),
                "body/*".into(),
                DiffKind::Missing,
                some(r#"{"name":"pad","price":"2.00","sku":"C3"}"#),
                None
            ),
        ]
    );
}

#[tokio::test]
async fn a_changed_ndjson_value_and_a_missing_line_are_found_at_their_line() {
    let analysis = analysed(
        "application/x-ndjson",
        EVENTS.as_bytes(),
        EVENTS_CHANGED.as_bytes(),
        "/events",
    )
    .await;
    assert_eq!(
        found(&analysis),
        vec![
            (
                "body".into(),
                "body".into(),
                DiffKind::ArrayLength,
                some("4"),
                some("3")
            ),
            (
                "body/2/bytes".into(),
                "body/*/bytes".into(),
                DiffKind::ValueChanged,
                some("10"),
                some("12")
            ),
            (
                "body/3".into(),
                "body/*".into(),
                DiffKind::Missing,
                some(r#"{"id":4,"kind":"close"}"#),
                None
            ),
        ]
    );
}

#[tokio::test]
async fn a_csv_answer_that_is_not_utf8_is_a_changed_body_type() {
    let analysis = analysed(
        "text/csv",
        PRICES.as_bytes(),
        b"sku,name,price\r\nA1,p\xe9n,1.20\r\n",
        "/prices.csv",
    )
    .await;
    let found = found(&analysis);
    assert_eq!(
        found,
        vec![(
            "body".into(),
            "body".into(),
            DiffKind::TypeChanged,
            some("csv"),
            some("invalid csv")
        )]
    );
}

/// Bodies built to make reading them hold the most for their size: every cell copied, long copied names in
/// many short rows, rows wider than the header, one record of many lines, one value per line.
fn costly_bodies() -> Vec<(&'static str, String)> {
    let escaped_name = format!("\"{}\"\"\"", "n".repeat(200));
    let mut wide = String::from("a\n");
    for _ in 0..20 {
        wide.push_str(&vec!["x"; 1024].join(","));
        wide.push('\n');
    }
    vec![
        ("csv", "id,name\n1,ada\n".repeat(2000)),
        (
            "csv",
            "a,b\n".to_string() + &"\"x\"\"\",\"\"\"\"\n".repeat(2000),
        ),
        (
            "csv",
            format!(
                "{}\n{}",
                vec![escaped_name; 10].join(","),
                ",,,,,,,,,\n".repeat(500)
            ),
        ),
        ("csv", wide.clone()),
        // One wide row, then narrow ones: each is read in proportion to its own cells.
        ("csv", wide + &"1\n".repeat(5000)),
        ("csv", format!("a\n\"{}\"\n", "\n".repeat(5000))),
        ("csv", "1\n".repeat(5000)),
        // One name repeated across the widest header: every column renamed.
        (
            "csv",
            format!(
                "{}\n{}\n",
                vec!["a"; 1024].join(","),
                vec!["1"; 1024].join(",")
            ),
        ),
        ("ndjson", "[1,2,{\"a\":[]}]\n".repeat(2000)),
        ("ndjson", "\"a\\u00e9\"\n".repeat(2000)),
        ("ndjson", "{}\r\n".repeat(3000)),
        ("ndjson", "\u{1e}{\"a\":\n[1]}\n".repeat(2000)),
    ]
}

#[test]
fn reading_holds_no_more_memory_than_it_charged() {
    use shadowdiff::analysis::structured::rows;
    use shadowdiff::budget::Charge;
    for (kind, body) in costly_bodies() {
        let read = match kind {
            "csv" => rows::csv,
            _ => rows::ndjson,
        };
        let mut charge = Charge::none();
        let (peak, read) =
            crate::support::heap::peak_of(|| read(body.as_bytes(), &mut charge).is_ok());
        assert!(read, "{kind}: {}", &body[..body.len().min(60)]);
        assert!(
            peak <= charge.bytes(),
            "{kind}: peak {peak} bytes over the charge of {} for {}",
            charge.bytes(),
            &body[..body.len().min(60)]
        );
    }
}
