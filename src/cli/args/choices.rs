//! How the components' enumerated settings are written on the command line: names and help for each value.

use clap::ValueEnum;
use clap::builder::PossibleValue;

use crate::demo::service::DemoVariant;
use crate::gate::FailOn;
use crate::gate::render::GateFormat;
use crate::graphql::GraphqlMode;
use crate::lane::ShadowScheduling;
use crate::notify::NotifyFormat;
use crate::proxy::ResponseMode;
use crate::redact::values::{ValueKind, ValueSet};
use crate::telemetry::LogFormat;
use crate::traffic::TrafficFormat;

/// Implements clap's `ValueEnum` for a component's enum: each variant with its flag value and its help.
macro_rules! choices {
    ($type:ty { $($variant:ident => $name:literal: $help:literal),+ $(,)? }) => {
        impl ValueEnum for $type {
            fn value_variants<'a>() -> &'a [Self] {
                &[$(Self::$variant),+]
            }

            fn to_possible_value(&self) -> Option<PossibleValue> {
                Some(match self {
                    $(Self::$variant => PossibleValue::new($name).help($help)),+
                })
            }
        }
    };
}

choices!(LogFormat {
    Text => "text": "Human-readable lines",
    Json => "json": "One JSON object per line, for log shippers",
});

choices!(ResponseMode {
    Primary => "primary": "Primary's response (inline proxy)",
    Secondary => "secondary": "Secondary's response",
    Candidate => "candidate": "Candidate's response",
    Empty => "empty": "200 with no body at once, before any upstream answers (mirror target behind Envoy, nginx or GoReplay)",
});

choices!(FailOn {
    Any => "any": "Every regression counts toward the diff rate",
    Breaking => "breaking": "Only breaking ones (a field missing, a type or status class changed): for compatibility checks",
});

choices!(NotifyFormat {
    Slack => "slack": "A Slack incoming webhook's text and blocks",
    Json => "json": "One JSON object per event (event, run, text, dashboard and the event's fields)",
});

choices!(GateFormat {
    Text => "text": "Lines for a terminal or a CI log",
    Json => "json": "One JSON object (stable; see the README)",
    Junit => "junit": "JUnit XML, one test case per endpoint, for CI test reports",
    Markdown => "markdown": "A Markdown table, fit for a pull-request comment",
});

choices!(TrafficFormat {
    Jsonl => "jsonl": "shadowdiff's JSON lines (what `serve --record` writes)",
    Har => "har": "HAR 1.2, as browsers and proxies export it",
    Gor => "gor": "GoReplay's `.gor` files (request records only)",
});

choices!(DemoVariant {
    Current => "current": "The current version (run it twice: primary and secondary)",
    Candidate => "candidate": "The new version, with the demo's regressions",
});

choices!(ShadowScheduling {
    Batch => "batch": "Batch class at --shadow-nice: callers first, shadow work keeps a share of a busy CPU",
    Idle => "idle": "Idle class: shadow work only on CPU no other thread wants; at saturation nearly all of it is shed",
});

impl ValueEnum for ValueSet {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            ValueSet::Pii,
            ValueSet::Kind(ValueKind::Email),
            ValueSet::Kind(ValueKind::Card),
            ValueSet::Kind(ValueKind::Iban),
            ValueSet::Kind(ValueKind::Jwt),
            ValueSet::Kind(ValueKind::Bearer),
            ValueSet::Kind(ValueKind::Ip),
        ]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            ValueSet::Pii => PossibleValue::new("pii").help("All of the kinds below"),
            ValueSet::Kind(kind) => PossibleValue::new(kind.as_str()).help(match kind {
                ValueKind::Email => "E-mail addresses",
                ValueKind::Card => "Card numbers (13 to 19 digits, Luhn-checked)",
                ValueKind::Iban => "IBANs (mod-97-checked)",
                ValueKind::Jwt => "JSON Web Tokens",
                ValueKind::Bearer => "Bearer tokens (`Bearer <token>`)",
                ValueKind::Ip => "IPv4 and IPv6 addresses",
            }),
        })
    }
}

choices!(GraphqlMode {
    Auto => "auto": "GraphQL on --graphql-path, and wherever a POST's JSON body or a GET's `query` holds a document: queries shadowed whatever the method, mutations and subscriptions only with --allow-side-effects",
    Off => "off": "Every request shadowed by its method, as any other",
});
