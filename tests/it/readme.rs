//! The README stays true: it opens with the two commands, and its flag reference is exactly what the command line
//! defines (generated from it; `SHADOWDIFF_BLESS=1` rewrites the README when a flag changes).

use clap::{Arg, Command as ClapCommand, CommandFactory, Parser};
use shadowdiff::cli::args::Cli;

const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
const START: &str = "<!-- flags:start -->\n";
const END: &str = "<!-- flags:end -->\n";

/// A Markdown table cell: one line, pipes escaped.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

fn row(arg: &Arg) -> Option<String> {
    let long = arg.get_long()?;
    if matches!(long, "help" | "version") {
        return None;
    }
    let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values())
        && !matches!(arg.get_action(), clap::ArgAction::SetTrue);
    let mut flag = format!("--{long}");
    if takes_value {
        let names: Vec<String> = arg
            .get_value_names()
            .map(|names| names.iter().map(|n| n.to_string()).collect())
            .unwrap_or_default();
        let possible: Vec<String> = arg
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| v.get_name().to_string())
            .collect();
        if !possible.is_empty() {
            flag.push_str(&format!(" {}", possible.join("|")));
        } else if let Some(name) = names.first() {
            flag.push_str(&format!(" {name}"));
        }
    }
    let env = arg
        .get_env()
        .map(|env| format!("`{}`", env.to_string_lossy()))
        .unwrap_or_default();
    let default: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    let default = if default.is_empty() || !takes_value {
        String::new()
    } else {
        format!("`{}`", default.join(","))
    };
    let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
    Some(format!(
        "| `{}` | {env} | {default} | {} |\n",
        cell(&flag),
        cell(&help)
    ))
}

fn table(title: &str, about: &str, args: Vec<&Arg>) -> String {
    let mut out = format!("### {title}\n\n{}\n\n", cell(about));
    out.push_str("| Flag | Environment | Default | Meaning |\n|---|---|---|---|\n");
    for arg in args {
        if let Some(row) = row(arg) {
            out.push_str(&row);
        }
    }
    out.push('\n');
    out
}

/// The flag reference, from the command-line definition.
fn reference() -> String {
    let mut cli: ClapCommand = Cli::command();
    cli.build();
    let mut out = String::new();
    let global: Vec<&Arg> = cli.get_arguments().filter(|a| a.is_global_set()).collect();
    out.push_str(&table(
        "Every command",
        "Logging, for every subcommand.",
        global,
    ));
    for sub in cli.get_subcommands() {
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        let args: Vec<&Arg> = sub.get_arguments().filter(|a| !a.is_global_set()).collect();
        out.push_str(&table(
            &format!("`shadowdiff {}`", sub.get_name()),
            &about,
            args,
        ));
    }
    out
}

#[test]
fn the_readme_opens_with_the_demo_and_the_test_command() {
    let readme = std::fs::read_to_string(README).unwrap();
    assert!(
        readme.starts_with(
            "# shadowdiff\n\n```sh\ncargo run --release -- demo\n./scripts/test.sh\n```\n"
        ),
        "README.md must open with the two commands"
    );
    let ci = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/run")).unwrap();
    assert!(
        ci.contains("./scripts/test.sh"),
        "CI runs the README's test command"
    );
}

#[test]
fn the_flag_reference_is_what_the_command_line_defines() {
    let readme = std::fs::read_to_string(README).unwrap();
    let start = readme.find(START).expect("the flags:start marker") + START.len();
    let end = readme.find(END).expect("the flags:end marker");
    let expected = reference();
    if readme[start..end] == expected {
        return;
    }
    if std::env::var("SHADOWDIFF_BLESS").is_ok_and(|v| v == "1") {
        let updated = format!("{}{expected}{}", &readme[..start], &readme[end..]);
        std::fs::write(README, updated).unwrap();
        return;
    }
    let first_difference = readme[start..end]
        .lines()
        .zip(expected.lines())
        .find(|(a, b)| a != b)
        .map(|(a, b)| format!("README: {a}\nexpected: {b}"))
        .unwrap_or_else(|| "the reference has a different number of lines".to_string());
    panic!(
        "README.md's flag reference is out of step with the command line; run \
         `SHADOWDIFF_BLESS=1 cargo test --test it readme` and commit the result.\n{first_difference}"
    );
}

#[test]
fn every_flag_of_every_command_is_in_the_readme() {
    let readme = std::fs::read_to_string(README).unwrap();
    let mut cli = Cli::command();
    cli.build();
    for sub in cli.get_subcommands() {
        for arg in sub.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if matches!(long, "help" | "version") {
                continue;
            }
            assert!(
                readme.contains(&format!("`--{long}")),
                "`shadowdiff {} --{long}` is not documented in README.md",
                sub.get_name()
            );
        }
    }
}

/// The flow-style `command: [...]` arrays of docker-compose.yml (they are JSON too).
fn compose_commands(compose: &str) -> Vec<Vec<String>> {
    compose
        .lines()
        .filter_map(|line| line.trim().strip_prefix("command: "))
        .map(|array| serde_json::from_str(array).expect("a command array"))
        .collect()
}

#[test]
fn docker_compose_runs_commands_the_binary_accepts() {
    let root = env!("CARGO_MANIFEST_DIR");
    let compose = std::fs::read_to_string(format!("{root}/docker-compose.yml")).unwrap();
    let commands = compose_commands(&compose);
    assert_eq!(
        commands.len(),
        5,
        "three services, the proxy and the traffic"
    );
    for command in &commands {
        let argv = std::iter::once("shadowdiff".to_string()).chain(command.iter().cloned());
        if let Err(error) = Cli::try_parse_from(argv) {
            panic!("docker-compose.yml runs `{}`: {error}", command.join(" "));
        }
    }
    let mut cli = Cli::command();
    cli.build();
    let known: Vec<String> = cli
        .get_subcommands()
        .flat_map(|sub| sub.get_arguments())
        .filter_map(|arg| arg.get_env().map(|env| env.to_string_lossy().into_owned()))
        .collect();
    for line in compose.lines() {
        if let Some(name) = line
            .trim()
            .split(':')
            .next()
            .filter(|n| n.starts_with("SHADOWDIFF_"))
        {
            assert!(known.iter().any(|k| k == name), "{name} is read by no flag");
        }
    }
    let dockerfile = std::fs::read_to_string(format!("{root}/Dockerfile")).unwrap();
    assert!(dockerfile.contains("cargo build --release --locked --bin shadowdiff"));
    assert!(dockerfile.contains("ENTRYPOINT [\"shadowdiff\"]"));
}
