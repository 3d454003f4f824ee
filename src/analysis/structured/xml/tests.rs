//! XML read into trees: names, namespaces, shapes decided over a pair, what is skipped, what is invalid.

use proptest::prelude::*;

use super::*;
use crate::analysis::diff::DiffKind;
use crate::budget::MemoryBudget;

/// One document's tree as compact JSON.
fn tree(xml: &str) -> String {
    parse_one(xml.as_bytes(), &mut Charge::none())
        .expect("reads")
        .to_string()
}

/// Both trees of a pair as compact JSON.
fn pair(primary: &str, other: &str) -> (String, String) {
    let (a, b) =
        parse_pair(primary.as_bytes(), other.as_bytes(), &mut Charge::none()).expect("both read");
    (a.to_string(), b.to_string())
}

/// The differences the JSON walk finds between the pair's trees.
fn changes(primary: &str, other: &str) -> Vec<(String, DiffKind)> {
    let (a, b) =
        parse_pair(primary.as_bytes(), other.as_bytes(), &mut Charge::none()).expect("both read");
    crate::analysis::structured::walked(&a, &b)
}

fn failure(xml: &str) -> StructureFailure {
    parse_one(xml.as_bytes(), &mut Charge::none()).expect_err("not read")
}

const ORDER: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
  <soap:Body>
    <m:GetOrderResponse xmlns:m="urn:shop">
      <m:order id="7" status="paid">
        <m:total currency="EUR">44.48</m:total>
        <m:item sku="A-1">2</m:item>
      </m:order>
    </m:GetOrderResponse>
  </soap:Body>
</soap:Envelope>"#;

#[test]
fn elements_are_keyed_by_local_name_and_text_is_a_string() {
    assert_eq!(
        tree(ORDER),
        r##"{"Envelope":{"Body":{"GetOrderResponse":{"order":{"@id":"7","@status":"paid","item":{"#text":"2","@sku":"A-1"},"total":{"#text":"44.48","@currency":"EUR"}}}}}}"##
    );
    assert_eq!(
        tree("<a><b> x </b><c/><d></d></a>"),
        r#"{"a":{"b":"x","c":"","d":""}}"#
    );
    assert_eq!(tree("<a/>"), r#"{"a":""}"#);
    // Values stay strings.
    assert_eq!(tree("<n>42</n>"), r#"{"n":"42"}"#);
}

#[test]
fn text_is_joined_from_its_pieces_and_markup_around_it_ignored() {
    assert_eq!(
        tree(
            "<?xml version='1.0'?><!-- c --><a><?pi x?>x &amp; &#65;&#x42;<![CDATA[ <c> ]]>\r\n y<!-- d --></a>"
        ),
        r#"{"a":"x & AB <c> \n y"}"#
    );
    assert_eq!(
        tree("<p>Hello <b>world</b> again</p>"),
        r##"{"p":{"#text":"Hello  again","b":"world"}}"##
    );
    assert_eq!(tree("<a>\n  <b>1</b>\n  </a>"), r#"{"a":{"b":"1"}}"#);
    assert_eq!(tree("\u{feff}<a x='&lt;&#33;'/>"), r#"{"a":{"@x":"<!"}}"#);
}

#[test]
fn reordered_attributes_are_equal() {
    assert!(changes(r#"<a x="1" y="2" z="3"/>"#, r#"<a z="3" x="1" y="2"/>"#).is_empty());
}

#[test]
fn another_prefix_for_the_same_namespace_is_equal() {
    let other = r#"<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body>
        <GetOrderResponse xmlns="urn:shop"><order status="paid" id="7">
        <item sku="A-1">2</item><total currency="EUR">44.48</total></order></GetOrderResponse></e:Body></e:Envelope>"#;
    assert_eq!(changes(ORDER, other), []);
    let (a, b) = pair(ORDER, other);
    assert_eq!(a, b);
    assert!(!a.contains("@xmlns"), "{a}");
}

#[test]
fn another_namespace_at_a_place_is_a_difference_at_its_xmlns() {
    let moved = ORDER.replace(r#"xmlns:m="urn:shop""#, r#"xmlns:m="urn:shop:v2""#);
    let found = changes(ORDER, &moved);
    assert!(
        found.contains(&(
            "body/Envelope/Body/GetOrderResponse/@xmlns".to_string(),
            DiffKind::ValueChanged
        )),
        "{found:?}"
    );
    // Both trees carry the namespace where it differs, and only there.
    let (a, b) = pair(ORDER, &moved);
    assert!(a.contains(r#""@xmlns":"urn:shop""#) && b.contains(r#""@xmlns":"urn:shop:v2""#));
    assert!(!a.contains("soap/envelope"), "{a}");

    // An attribute's namespace likewise: keyed with it where it is not the same on both sides.
    let found = changes(
        r#"<a xmlns:p="urn:one" p:kind="x"/>"#,
        r#"<a xmlns:q="urn:two" q:kind="x"/>"#,
    );
    assert_eq!(
        found,
        [
            ("body/a/@{urn:one}kind".to_string(), DiffKind::Missing),
            ("body/a/@{urn:two}kind".to_string(), DiffKind::Extra),
        ]
    );
    // An unprefixed and a prefixed attribute of one local name are both kept.
    assert_eq!(
        tree(r#"<a xmlns:p="urn:p" kind="1" p:kind="2"/>"#),
        r#"{"a":{"@kind":"1","@{urn:p}kind":"2"}}"#
    );
    // Namespace declarations are not attributes.
    assert!(changes(r#"<a xmlns:p="urn:p"/>"#, "<a/>").is_empty());
}

#[test]
fn a_changed_element_is_a_difference_at_its_path() {
    let changed = ORDER.replace("44.48", "44.49");
    assert_eq!(
        changes(ORDER, &changed),
        [(
            "body/Envelope/Body/GetOrderResponse/order/total/#text".to_string(),
            DiffKind::ValueChanged
        )]
    );
    assert_eq!(
        changes("<a><b>1</b><c>2</c></a>", "<a><c>2</c><b>3</b></a>"),
        [("body/a/b".to_string(), DiffKind::ValueChanged)]
    );
}

#[test]
fn one_item_against_two_is_an_array_length() {
    let one = "<order><item>a</item></order>";
    let two = "<order><item>a</item><item>b</item></order>";
    let (a, b) = pair(one, two);
    assert_eq!(a, r#"{"order":{"item":["a"]}}"#);
    assert_eq!(b, r#"{"order":{"item":["a","b"]}}"#);
    let found = changes(one, two);
    assert!(
        found.contains(&("body/order/item".to_string(), DiffKind::ArrayLength)),
        "{found:?}"
    );
    // Read alone, a single child is not an array; repeats interleaved with other children keep their order.
    assert_eq!(tree(one), r#"{"order":{"item":"a"}}"#);
    assert_eq!(
        tree("<o><i>1</i><n>x</n><i>2</i></o>"),
        r#"{"o":{"i":["1","2"],"n":"x"}}"#
    );
}

#[test]
fn an_added_attribute_is_extra_not_a_type_change() {
    assert_eq!(
        changes(
            "<p><price>5</price></p>",
            r#"<p><price currency="EUR">5</price></p>"#
        ),
        [("body/p/price/@currency".to_string(), DiffKind::Extra)]
    );
}

#[test]
fn a_soap_fault_is_at_body_envelope_body_fault() {
    let soap11 = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault>
        <faultcode>s:Server</faultcode><faultstring>boom</faultstring></s:Fault></s:Body></s:Envelope>"#;
    let soap12 = r#"<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body><env:Fault>
        <env:Code><env:Value>env:Receiver</env:Value></env:Code></env:Fault></env:Body></env:Envelope>"#;
    for (envelope, uri) in [
        (soap11, "http://schemas.xmlsoap.org/soap/envelope/"),
        (soap12, "http://www.w3.org/2003/05/soap-envelope"),
    ] {
        let answer = format!(
            r#"<s:Envelope xmlns:s="{uri}"><s:Body><r:Answer xmlns:r="urn:r">1</r:Answer></s:Body></s:Envelope>"#
        );
        let found = changes(&answer, envelope);
        assert!(
            found.contains(&("body/Envelope/Body/Fault".to_string(), DiffKind::Extra)),
            "{found:?}"
        );
        assert!(
            found.contains(&("body/Envelope/Body/Answer".to_string(), DiffKind::Missing)),
            "{found:?}"
        );
    }
}

#[test]
fn a_doctype_is_never_read() {
    let laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<lolz>&lol3;</lolz>"#;
    let skipped = StructureFailure::Skipped(BodySkip::XmlDoctype);
    assert_eq!(failure(laughs), skipped);
    // Whatever the budget: the DTD is told before the charge.
    let budget = MemoryBudget::new(64);
    let mut tight = budget.empty(crate::budget::Stage::Analysis);
    assert_eq!(parse_one(laughs.as_bytes(), &mut tight), Err(skipped));
    assert_eq!(tight.bytes(), 0);
    // Past a declaration and a comment; and, out of place after the root, as the reader meets it.
    assert_eq!(
        failure("<?xml version='1.0'?>\n<!-- x --><!DOCTYPE a SYSTEM \"file:///etc/passwd\"><a/>"),
        skipped
    );
    assert_eq!(failure("<a/><!DOCTYPE a>"), skipped);
    assert_eq!(
        parse_pair(b"<a/>", laughs.as_bytes(), &mut Charge::none()).unwrap_err(),
        (Side::Other, skipped)
    );
    // An entity no DTD declares is undefined.
    assert_eq!(failure("<a>&lol3;</a>"), StructureFailure::Invalid);
}

#[test]
fn nesting_deeper_than_128_elements_is_skipped() {
    let nested = |depth: usize| format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth));
    assert!(parse_one(nested(MAX_DEPTH).as_bytes(), &mut Charge::none()).is_ok());
    let too_deep = StructureFailure::Skipped(BodySkip::XmlTooDeep);
    assert_eq!(failure(&nested(MAX_DEPTH + 1)), too_deep);
    assert_eq!(
        failure(&format!(
            "{}<b/>{}",
            "<a>".repeat(MAX_DEPTH),
            "</a>".repeat(MAX_DEPTH)
        )),
        too_deep
    );
    // Unclosed and far deeper: stopped at the limit, not read to the end.
    assert_eq!(failure(&"<a>".repeat(100_000)), too_deep);
}

#[test]
fn what_is_not_well_formed_is_invalid() {
    for xml in [
        "",
        "   ",
        "not xml",
        "<a>",
        "<a></b>",
        "</a>",
        "<a/><b/>",
        "<a/>trailing",
        "<a x='1' x='2'/>",
        "<a x=1/>",
        "<p:a/>",
        "<a>&bogus;</a>",
        "<a>&#0;</a>",
        "<a>x & y</a>",
        "<a>1 < 2</a>",
        "<a/>&amp;",
    ] {
        assert_eq!(failure(xml), StructureFailure::Invalid, "{xml:?}");
    }
    assert_eq!(
        parse_one(b"<a>\xff</a>", &mut Charge::none()),
        Err(StructureFailure::Invalid)
    );
    assert_eq!(
        parse_pair(b"<a/>", b"<a>", &mut Charge::none()).unwrap_err(),
        (Side::Other, StructureFailure::Invalid)
    );
}

#[test]
fn a_tree_over_the_budget_is_skipped_and_its_charge_taken_first() {
    let budget = MemoryBudget::new(1 << 10);
    let mut scratch = budget.empty(crate::budget::Stage::Analysis);
    assert_eq!(
        parse_one(ORDER.as_bytes(), &mut scratch),
        Err(StructureFailure::Skipped(BodySkip::MemoryBudget))
    );
    let mut charge = Charge::none();
    parse_one(ORDER.as_bytes(), &mut charge).unwrap();
    assert_eq!(charge.bytes(), read::tree_bytes(ORDER.as_bytes()));
}

/// Text made of XML's pieces, to reach the reader's corners more often than bytes alone would.
fn xmlish() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "<a>",
        "</a>",
        "<b x='1'>",
        "</b>",
        "<p:c xmlns:p='urn:p'>",
        "</p:c>",
        "<d/>",
        "<a y=\"&amp;\"/>",
        "text",
        " ",
        "\n",
        "&lt;",
        "&#x41;",
        "&#0;",
        "&bogus;",
        "&",
        "<![CDATA[x]]>",
        "<!-- c -->",
        "<?pi?>",
        "<?xml version='1.0'?>",
        "<!DOCTYPE a>",
        "<",
        ">",
        "'",
        "\"",
        "=",
        "xmlns=''",
        "\u{feff}",
        "é",
    ]);
    prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(
        a in prop::collection::vec(any::<u8>(), 0..300),
        b in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let _ = parse_one(&a, &mut Charge::none());
        let _ = parse_pair(&a, &b, &mut Charge::none());
    }

    #[test]
    fn arbitrary_xmlish_text_never_panics(a in xmlish(), b in xmlish()) {
        let one = parse_one(a.as_bytes(), &mut Charge::none());
        let both = parse_pair(a.as_bytes(), b.as_bytes(), &mut Charge::none());
        // A pair reads when both read alone, and a document is equal to itself.
        if one.is_ok() && parse_one(b.as_bytes(), &mut Charge::none()).is_ok() {
            prop_assert!(both.is_ok());
        }
        if let Ok((x, y)) = parse_pair(a.as_bytes(), a.as_bytes(), &mut Charge::none()) {
            prop_assert_eq!(x, y);
        }
    }
}
