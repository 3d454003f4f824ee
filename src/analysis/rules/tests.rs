//! Rules files read and checked: every action, bad lines named, tolerances, accept rules and sample rates.

use super::*;

#[test]
fn sample_tables_give_per_endpoint_rates_and_bad_ones_name_their_line() {
    let rules = RuleSet::parse(
        "[[sample]]\nendpoint = \"POST /oauth/{provider}/token\"\nrate = 0\n",
        "r.toml",
    )
    .unwrap();
    assert_eq!(rules.sampling().len(), 1);
    assert!(
        rules.sampling()[0]
            .endpoint
            .matches("POST /oauth/github/token")
    );
    assert!(
        !rules.sampling()[0]
            .endpoint
            .matches("GET /oauth/github/token")
    );
    let error =
        RuleSet::parse("\n[[sample]]\nendpoint = \"/a\"\nrate = 2\n", "r.toml").unwrap_err();
    assert_eq!(error.line, 2, "{error}");
    assert!(error.to_string().contains("out of range"), "{error}");
}

#[test]
fn a_rules_file_with_every_action() {
    let text = r#"
[[rule]]
endpoint = "GET /users/{id}"
path = "body/updated_at"
action = "noise"

[[rule]]
path = "body/items/*/price"
action = "tolerance"
absolute = 0.01

[[rule]]
path = "body/tags"
action = "unordered"

[[rule]]
path = "body/session"
action = "presence-only"

[[rule]]
path = "body/score"
action = "type-only"

[[rule]]
path = "header/x-request-id"
action = "ignore"
"#;
    let rules = RuleSet::parse(text, "rules.toml").unwrap();
    assert_eq!(rules.rules().len(), 6);
    let users = rules.for_endpoint("GET /users/{id}");
    assert_eq!(users.at("body/updated_at"), Some(&RuleAction::Noise));
    assert!(users.ignores("header/x-request-id"));
    let orders = rules.for_endpoint("GET /orders");
    assert_eq!(orders.at("body/updated_at"), None);
    assert_eq!(
        orders.at("body/items/*/price"),
        Some(&RuleAction::Tolerance {
            absolute: Some(0.01),
            relative: None
        })
    );
    assert_eq!(orders.verdict_override("body/items/*/price"), None);
}

#[test]
fn bad_files_name_the_line_and_the_reason() {
    let unknown_action = "[[rule]]\npath = \"body/a\"\naction = \"ignor\"\n";
    let error = RuleSet::parse(unknown_action, "rules.toml").unwrap_err();
    assert_eq!(error.line, 3, "{error}");
    assert!(error.to_string().starts_with("rules.toml:3:"), "{error}");
    assert!(error.message.contains("ignor"), "{error}");

    let syntax = "[[rule]]\npath = \"body/a\"\naction = noise\n";
    let error = RuleSet::parse(syntax, "rules.toml").unwrap_err();
    assert_eq!(error.line, 3, "{error}");

    let no_tolerance = "\n\n[[rule]]\npath = \"body/a\"\naction = \"tolerance\"\n";
    let error = RuleSet::parse(no_tolerance, "r.toml").unwrap_err();
    assert_eq!(error.line, 3, "{error}");

    for (text, reason) in [
        (no_tolerance, "absolute"),
        (
            "[[rule]]\npath = \"payload/a\"\naction = \"ignore\"\n",
            "must start with",
        ),
        (
            "[[rule]]\npath = \"body/a\"\naction = \"ignore\"\ncolour = \"red\"\n",
            "colour",
        ),
        (
            "[[rule]]\npath = \"body/a\"\naction = \"noise\"\nabsolute = 1\n",
            "tolerance",
        ),
    ] {
        let error = RuleSet::parse(text, "r.toml").unwrap_err();
        assert!(error.message.contains(reason), "{error}");
    }
}

#[test]
fn tolerance_is_absolute_or_relative() {
    assert!(RuleAction::within_tolerance(Some(0.01), None, 1.0, 1.005));
    assert!(!RuleAction::within_tolerance(Some(0.01), None, 1.0, 1.02));
    assert!(RuleAction::within_tolerance(
        None,
        Some(0.01),
        1000.0,
        1009.0
    ));
    assert!(!RuleAction::within_tolerance(
        None,
        Some(0.01),
        1000.0,
        1011.0
    ));
}

#[test]
fn rules_round_trip_through_json_for_the_api() {
    let spec = RuleSpec {
        relative: Some(0.5),
        ..RuleSpec::new(Some("GET /a".into()), "body/x", ActionKind::Tolerance)
    };
    let json = serde_json::to_string(&spec).unwrap();
    assert_eq!(
        json,
        r#"{"endpoint":"GET /a","path":"body/x","action":"tolerance","relative":0.5}"#
    );
    assert_eq!(serde_json::from_str::<RuleSpec>(&json).unwrap(), spec);
}

#[test]
fn an_accept_rule_holds_only_for_the_kind_and_class_it_names() {
    let rules = RuleSet::parse(
        r#"
[[rule]]
endpoint = "GET /users/{id}"
path = "body/name"
action = "accept"
kind = "missing"
compat = "breaking"
note = "renamed to full_name"

[[rule]]
path = "body/tags/*"
action = "accept"
"#,
        "r.toml",
    )
    .unwrap();
    let users = rules.for_endpoint("GET /users/{id}");
    let rule = users
        .accepting("body/name", DiffKind::Missing, Some(Compat::Breaking))
        .unwrap();
    assert_eq!(rule.spec.note.as_deref(), Some("renamed to full_name"));
    for (place, kind, compat, why) in [
        (
            "body/name",
            DiffKind::TypeChanged,
            Compat::Breaking,
            "another kind is a regression again",
        ),
        (
            "body/name",
            DiffKind::Missing,
            Compat::Changed,
            "another class is a regression again",
        ),
        (
            "body/name/first",
            DiffKind::Missing,
            Compat::Breaking,
            "accepting a place does not accept what is below it",
        ),
    ] {
        assert!(
            users.accepting(place, kind, Some(compat)).is_none(),
            "{why}"
        );
    }
    assert!(
        rules
            .for_endpoint("GET /orders/{id}")
            .accepting("body/tags/0", DiffKind::ValueChanged, None)
            .is_some()
    );
    assert!(
        RuleSet::parse(
            "[[rule]]\npath = \"body/x\"\naction = \"noise\"\nkind = \"missing\"\n",
            "r.toml"
        )
        .unwrap_err()
        .message
        .contains("apply to accept rules")
    );
    let long = format!(
        "[[rule]]\npath = \"body/x\"\naction = \"accept\"\nnote = \"{}\"\n",
        "n".repeat(MAX_NOTE_CHARS + 1)
    );
    assert!(RuleSet::parse(&long, "r.toml").is_err());
}

#[test]
fn accept_rules_write_out_as_a_rules_file_that_reads_back() {
    let spec = RuleSpec::accept(
        Some("GET /users/{id}".into()),
        "body/name",
        Some(DiffKind::Missing),
        Some(Compat::Breaking),
        Some("  renamed \"name\"  ".into()),
    );
    let text = rules_file(std::slice::from_ref(&spec));
    let read = RuleSet::parse(&text, "downloaded.toml").unwrap();
    assert_eq!(read.rules()[0].spec, spec);
    assert_eq!(spec.note.as_deref(), Some("renamed \"name\""));
}
