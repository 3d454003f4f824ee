//! Reading Rust source as far as the import rules need: comments, literals and `#[cfg(test)]` items blanked
//! (lines kept), then every `crate::` path with the room it goes to.

/// One path into the crate: where it is and the room (top-level module) it names first.
#[derive(Debug, PartialEq)]
pub struct CratePath {
    pub line: usize,
    pub target: String,
    pub path: String,
}

/// `text` with comments and the insides of string and character literals replaced by spaces, newlines kept,
/// so that nothing in them looks like code and every line keeps its number.
fn blank_comments_and_literals(text: &str) -> Vec<char> {
    let mut chars: Vec<char> = text.chars().collect();
    let mut at = 0;
    while at < chars.len() {
        let rest = &chars[at..];
        let ident_before = at > 0 && is_ident(chars[at - 1]);
        if rest.starts_with(&['/', '/']) {
            let end = rest
                .iter()
                .position(|&c| c == '\n')
                .map_or(chars.len(), |n| at + n);
            blank(&mut chars, at, end);
            at = end;
        } else if rest.starts_with(&['/', '*']) {
            let end = block_comment_end(&chars, at);
            blank(&mut chars, at, end);
            at = end;
        } else if !ident_before && let Some(hashes) = raw_string_start(rest) {
            let end = raw_string_end(&chars, at, hashes);
            blank(&mut chars, at, end);
            at = end;
        } else if chars[at] == '"' {
            let end = quoted_end(&chars, at, '"');
            blank(&mut chars, at, end);
            at = end;
        } else if chars[at] == '\'' && is_char_literal(rest) {
            let end = quoted_end(&chars, at, '\'');
            blank(&mut chars, at, end);
            at = end;
        } else {
            at += 1;
        }
    }
    chars
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn blank(chars: &mut [char], from: usize, to: usize) {
    for c in &mut chars[from..to] {
        if *c != '\n' {
            *c = ' ';
        }
    }
}

/// Just past the `*/` that closes the comment opened at `from` (block comments nest in Rust).
fn block_comment_end(chars: &[char], from: usize) -> usize {
    let mut depth = 0;
    let mut at = from;
    while at + 1 < chars.len() {
        match (chars[at], chars[at + 1]) {
            ('/', '*') => {
                depth += 1;
                at += 2;
            }
            ('*', '/') => {
                depth -= 1;
                at += 2;
                if depth == 0 {
                    return at;
                }
            }
            _ => at += 1,
        }
    }
    chars.len()
}

/// The number of `#` of a raw string (`r"`, `r#"`, `br##"`) starting here.
fn raw_string_start(rest: &[char]) -> Option<usize> {
    let rest = rest.strip_prefix(&['b']).unwrap_or(rest);
    let rest = rest.strip_prefix(&['r'])?;
    let hashes = rest.iter().take_while(|&&c| c == '#').count();
    (rest.get(hashes) == Some(&'"')).then_some(hashes)
}

fn raw_string_end(chars: &[char], from: usize, hashes: usize) -> usize {
    let open = from + chars[from..].iter().position(|&c| c == '"').expect("seen") + 1;
    let mut at = open;
    while at < chars.len() {
        if chars[at] == '"'
            && chars[at + 1..]
                .iter()
                .take(hashes)
                .filter(|&&c| c == '#')
                .count()
                == hashes
        {
            return at + 1 + hashes;
        }
        at += 1;
    }
    chars.len()
}

/// Just past the quote closing the literal opened at `from`, escapes skipped.
fn quoted_end(chars: &[char], from: usize, quote: char) -> usize {
    let mut at = from + 1;
    while at < chars.len() {
        match chars[at] {
            '\\' => at += 2,
            c if c == quote => return at + 1,
            _ => at += 1,
        }
    }
    chars.len()
}

/// A `'` opening a character literal (`'a'`, `'\n'`, `'\u{1F600}'`) rather than a lifetime or a label.
fn is_char_literal(rest: &[char]) -> bool {
    match rest.get(1) {
        Some('\\') => true,
        Some(_) => rest.get(2) == Some(&'\''),
        None => false,
    }
}

/// The code tokens as (position, token): identifiers and single punctuation characters.
fn tokens(chars: &[char]) -> Vec<(usize, String)> {
    let mut tokens = Vec::new();
    let mut at = 0;
    while at < chars.len() {
        let c = chars[at];
        if c.is_whitespace() {
            at += 1;
        } else if is_ident(c) || c == '$' {
            let start = at;
            at += 1;
            while at < chars.len() && is_ident(chars[at]) {
                at += 1;
            }
            tokens.push((start, chars[start..at].iter().collect()));
        } else {
            tokens.push((at, c.to_string()));
            at += 1;
        }
    }
    tokens
}

fn is(tokens: &[(usize, String)], at: usize, expected: &[&str]) -> bool {
    expected
        .iter()
        .enumerate()
        .all(|(n, want)| tokens.get(at + n).is_some_and(|(_, token)| token == want))
}

/// The token range `[start, end)` of each item under a `#[cfg(test)]` attribute, and the names of those that are
/// `mod name;` declarations.
fn test_items(tokens: &[(usize, String)]) -> Vec<(usize, usize, Option<String>)> {
    const CFG_TEST: [&str; 7] = ["#", "[", "cfg", "(", "test", ")", "]"];
    let mut items = Vec::new();
    let mut at = 0;
    while at < tokens.len() {
        if !is(tokens, at, &CFG_TEST) {
            at += 1;
            continue;
        }
        let start = at;
        at += CFG_TEST.len();
        // Further attributes on the same item.
        while is(tokens, at, &["#", "["]) {
            at = matching_close(tokens, at + 1) + 1;
        }
        let item = at;
        let mut end = tokens.len();
        while at < tokens.len() {
            match tokens[at].1.as_str() {
                ";" => {
                    end = at + 1;
                    break;
                }
                "{" => {
                    end = matching_close(tokens, at) + 1;
                    break;
                }
                "(" | "[" => at = matching_close(tokens, at) + 1,
                _ => at += 1,
            }
        }
        let declared = module_declared(&tokens[item..end]);
        items.push((start, end, declared));
        at = end;
    }
    items
}

/// The name of `mod name;` (with any visibility) when `item` is one.
fn module_declared(item: &[(usize, String)]) -> Option<String> {
    let words: Vec<&str> = item.iter().map(|(_, token)| token.as_str()).collect();
    let at = words.iter().position(|&word| word == "mod")?;
    (words.get(at + 2) == Some(&";") && at + 3 == words.len()).then(|| words[at + 1].to_owned())
}

/// The index of the bracket closing the one at `open`.
fn matching_close(tokens: &[(usize, String)], open: usize) -> usize {
    let mut depth = 0;
    for (at, (_, token)) in tokens.iter().enumerate().skip(open) {
        match token.as_str() {
            "(" | "[" | "{" => depth += 1,
            ")" | "]" | "}" => {
                depth -= 1;
                if depth == 0 {
                    return at;
                }
            }
            _ => {}
        }
    }
    tokens.len() - 1
}

/// The modules a file declares as `#[cfg(test)] mod name;`, whose files are test code.
pub fn test_module_files(text: &str) -> Vec<String> {
    let tokens = tokens(&blank_comments_and_literals(text));
    test_items(&tokens)
        .into_iter()
        .filter_map(|(_, _, declared)| declared)
        .collect()
}

/// Every `crate::…` path outside comments, literals and `#[cfg(test)]` items: `use` declarations, groups
/// (`crate::{a, b::c}` names `a` and `b`) and paths inline in code alike.
pub fn crate_paths(text: &str) -> Vec<CratePath> {
    let chars = blank_comments_and_literals(text);
    let tokens = tokens(&chars);
    let skipped = test_items(&tokens);
    let in_test = |at: usize| {
        skipped
            .iter()
            .any(|&(start, end, _)| (start..end).contains(&at))
    };
    let line_of = |position: usize| 1 + chars[..position].iter().filter(|&&c| c == '\n').count();
    let mut paths = Vec::new();
    for at in 0..tokens.len() {
        let word = tokens[at].1.as_str();
        if !matches!(word, "crate" | "$crate") || !is(&tokens, at + 1, &[":", ":"]) || in_test(at) {
            continue;
        }
        let position = tokens[at].0;
        let line = line_of(position);
        let after = at + 3;
        let targets = if is(&tokens, after, &["{"]) {
            group_heads(&tokens, after)
        } else {
            tokens
                .get(after)
                .map(|(_, token)| token.clone())
                .into_iter()
                .collect()
        };
        let path: String = chars[position..]
            .iter()
            .take_while(|&&c| is_ident(c) || c == ':' || c == '$')
            .collect();
        for target in targets {
            paths.push(CratePath {
                line,
                target,
                path: path.clone(),
            });
        }
    }
    paths
}

/// The first name of each path in the group opened at `open` (`{a, b::c, d::{e, f}}` gives a, b, d).
fn group_heads(tokens: &[(usize, String)], open: usize) -> Vec<String> {
    let close = matching_close(tokens, open);
    let mut heads = Vec::new();
    let mut expecting_head = true;
    let mut depth = 0;
    for (_, token) in &tokens[open + 1..close] {
        match token.as_str() {
            "{" => depth += 1,
            "}" => depth -= 1,
            "," if depth == 0 => expecting_head = true,
            word if expecting_head && depth == 0 && word.chars().all(is_ident) => {
                heads.push(word.to_owned());
                expecting_head = false;
            }
            _ => {}
        }
    }
    heads
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(text: &str) -> Vec<(usize, String)> {
        crate_paths(text)
            .into_iter()
            .map(|path| (path.line, path.target))
            .collect()
    }

    #[test]
    fn paths_in_code_are_found_and_those_in_comments_strings_and_tests_are_not() {
        let text = r##"use crate::store::Store;
use crate::{analysis::diff, units, web::{a, b}};
// use crate::comment;
/* crate::block /* nested */ crate::still */
fn f<'a>(x: &'a str) -> char { let _ = "crate::string"; let _ = r#"crate::raw"#; let _ = crate::values::one(); '"' }
#[cfg(test)]
mod tests { use crate::web; }
#[cfg(test)]
#[allow(dead_code)]
fn only_in_tests() { crate::report::x(); }
pub(crate) fn visible() { crate::paths::link(); }
"##;
        assert_eq!(
            targets(text),
            vec![
                (1, "store".to_owned()),
                (2, "analysis".to_owned()),
                (2, "units".to_owned()),
                (2, "web".to_owned()),
                (5, "values".to_owned()),
                (11, "paths".to_owned()),
            ]
        );
    }

    #[test]
    fn test_modules_declared_as_files_are_named() {
        let text = "#[cfg(test)]\nmod tests;\n#[cfg(test)]\nmod helpers {}\nmod real;\n";
        assert_eq!(test_module_files(text), vec!["tests".to_owned()]);
    }
}
