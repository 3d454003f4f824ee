//! The house's rules checked, not only written: every `crate::` path in src/ outside test code goes to a room
//! ARCHITECTURE.md's import table lets its room import, and no file in src/ is over 700 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

mod source;

use source::{CratePath, crate_paths};

/// The longest a file in src/ may be, tests included.
const MAX_LINES: usize = 700;

/// What a room may import, as the table says it.
#[derive(Debug)]
enum Allowed {
    Everything,
    EverythingExcept(BTreeSet<String>),
    Only(BTreeSet<String>),
}

impl Allowed {
    fn allows(&self, room: &str) -> bool {
        match self {
            Allowed::Everything => true,
            Allowed::EverythingExcept(rooms) => !rooms.contains(room),
            Allowed::Only(rooms) => rooms.contains(room),
        }
    }
}

/// The names between backticks in a table cell, in order.
fn backticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// One row of the import table: the rooms it names and what they may import.
struct Row {
    rooms: Vec<String>,
    allowed: Allowed,
}

/// Reads the import table: the rows under the header `| Room | Owns | May import |`, ground floor first. A "May
/// import" cell is `nothing`, `everything`, `everything except` followed by rooms in backticks, or rooms in
/// backticks separated by commas; anything else in it is an error, so that the cell cannot drift back into prose.
fn import_rows(markdown: &str) -> Result<Vec<Row>, String> {
    let rows: Vec<&str> = markdown
        .lines()
        .skip_while(|line| !line.starts_with("| Room | Owns | May import |"))
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .collect();
    if rows.is_empty() {
        return Err("ARCHITECTURE.md has no table headed `| Room | Owns | May import |`".into());
    }
    rows.into_iter()
        .map(|row| {
            let cells: Vec<&str> = row.trim_matches('|').split(" | ").map(str::trim).collect();
            let [rooms, _owns, may_import] = cells[..] else {
                return Err(format!("a row that is not three cells: {row}"));
            };
            let rooms = backticked(rooms);
            if rooms.is_empty() {
                return Err(format!("a row naming no room: {row}"));
            }
            let allowed =
                parse_allowed(may_import).map_err(|error| format!("{error} in: {row}"))?;
            Ok(Row { rooms, allowed })
        })
        .collect()
}

/// What each room may import, by room.
fn import_table(rows: &[Row]) -> BTreeMap<&str, &Allowed> {
    rows.iter()
        .flat_map(|row| {
            row.rooms
                .iter()
                .map(move |room| (room.as_str(), &row.allowed))
        })
        .collect()
}

fn architecture_rows() -> Vec<Row> {
    import_rows(&fs::read_to_string(project_root().join("ARCHITECTURE.md")).unwrap()).unwrap()
}

fn parse_allowed(cell: &str) -> Result<Allowed, String> {
    let words_outside_backticks: String = cell.split('`').step_by(2).collect::<Vec<_>>().join(" ");
    let words: Vec<&str> = words_outside_backticks
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|word| !word.is_empty())
        .collect();
    let rooms: BTreeSet<String> = backticked(cell).into_iter().collect();
    match words[..] {
        ["nothing"] if rooms.is_empty() => Ok(Allowed::Only(BTreeSet::new())),
        ["everything"] if rooms.is_empty() => Ok(Allowed::Everything),
        ["everything", "except"] if !rooms.is_empty() => Ok(Allowed::EverythingExcept(rooms)),
        [] if !rooms.is_empty() => Ok(Allowed::Only(rooms)),
        _ => Err(format!(
            "a May import cell that is not in the strict form: `{cell}`"
        )),
    }
}

/// Every `.rs` file below `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The room a file belongs to: its first path component below src/ (`proxy/fanout/caller.rs` is `proxy`).
fn room_of(relative: &Path) -> String {
    let first = relative.components().next().unwrap().as_os_str();
    let first = first.to_string_lossy();
    first.strip_suffix(".rs").unwrap_or(&first).to_owned()
}

/// Files only compiled for tests: those a parent declares as `#[cfg(test)] mod name;`.
fn test_only_files(src: &Path, files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut test_only = BTreeSet::new();
    for file in files {
        let text = fs::read_to_string(file).unwrap();
        for name in source::test_module_files(&text) {
            // A module file's children live in the folder named after it (`src/a/b.rs` → `src/a/b/`), or beside
            // it for `lib.rs`, `main.rs` and `mod.rs`.
            let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
            let parent = file.parent().unwrap();
            let folder = if matches!(stem.as_str(), "lib" | "main" | "mod") {
                parent.to_path_buf()
            } else {
                parent.join(&stem)
            };
            test_only.insert(folder.join(format!("{name}.rs")));
            test_only.insert(folder.join(&name).join("mod.rs"));
        }
    }
    test_only.retain(|path| path.starts_with(src));
    test_only
}

/// Every import in `src` that the table does not allow, as `file:line: room imports room (crate::…)`.
fn broken_rules(src: &Path, table: &BTreeMap<&str, &Allowed>) -> Vec<String> {
    let files = rust_files(src);
    let test_only = test_only_files(src, &files);
    let mut broken = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(src).unwrap();
        if matches!(relative.to_str(), Some("lib.rs" | "main.rs")) || test_only.contains(file) {
            continue;
        }
        let room = room_of(relative);
        let Some(allowed) = table.get(room.as_str()) else {
            broken.push(format!(
                "src/{}: room `{room}` is not in ARCHITECTURE.md's import table",
                relative.display()
            ));
            continue;
        };
        let text = fs::read_to_string(file).unwrap();
        for CratePath { line, target, path } in crate_paths(&text) {
            if target != room && !allowed.allows(&target) {
                broken.push(format!(
                    "src/{}:{line}: `{room}` imports `{target}` ({path}), which ARCHITECTURE.md's import table does not allow",
                    relative.display()
                ));
            }
        }
    }
    broken
}

fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn imports_follow_architecture_md() {
    let rows = architecture_rows();
    let broken = broken_rules(&project_root().join("src"), &import_table(&rows));
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn an_import_the_table_does_not_allow_is_named_by_file_and_line() {
    let root = project_root();
    let rows = architecture_rows();
    let copy = tempfile::tempdir().unwrap();
    copy_tree(&root.join("src"), copy.path());
    let diff = copy.path().join("analysis/diff.rs");
    let mut text = fs::read_to_string(&diff).unwrap();
    let lines = text.lines().count();
    text.push_str("#[allow(unused_imports)] use crate::web as _x;\n");
    fs::write(&diff, text).unwrap();

    let broken = broken_rules(copy.path(), &import_table(&rows));
    let expected = format!(
        "src/analysis/diff.rs:{}: `analysis` imports `web`",
        lines + 1
    );
    assert!(
        broken.iter().any(|line| line.starts_with(&expected)),
        "expected `{expected}` among: {broken:#?}"
    );
}

/// The table is the floors, ground first: a cell names only rooms of its own row or the rows before it, so no two
/// rooms of different rows can import each other.
#[test]
fn the_import_table_points_only_down_its_floors() {
    let rows = architecture_rows();
    let mut below: BTreeSet<&str> = BTreeSet::new();
    let mut upward = Vec::new();
    for row in &rows {
        below.extend(row.rooms.iter().map(String::as_str));
        if let Allowed::Only(allowed) = &row.allowed {
            for room in allowed.iter().filter(|room| !below.contains(room.as_str())) {
                upward.push(format!(
                    "{:?} may import `{room}`, a floor above it",
                    row.rooms
                ));
            }
        }
    }
    assert!(upward.is_empty(), "{}", upward.join("\n"));
}

#[test]
fn the_import_table_is_in_its_strict_form() {
    for (cell, allowed) in [
        ("nothing", Some("Only({})")),
        ("everything", Some("Everything")),
        (
            "everything except `cli`",
            Some("EverythingExcept({\"cli\"})"),
        ),
        ("`store`, `report`", Some("Only({\"report\", \"store\"})")),
        ("low rooms", None),
        ("`store` and what it needs", None),
    ] {
        let parsed = parse_allowed(cell).map(|allowed| format!("{allowed:?}"));
        assert_eq!(parsed.ok().as_deref(), allowed, "{cell}");
    }
}

#[test]
fn no_file_in_src_is_over_700_lines() {
    let src = project_root().join("src");
    let long: Vec<String> = rust_files(&src)
        .into_iter()
        .filter_map(|file| {
            let lines = fs::read_to_string(&file).unwrap().lines().count();
            (lines > MAX_LINES).then(|| format!("{}: {lines} lines", file.display()))
        })
        .collect();
    assert!(long.is_empty(), "{}", long.join("\n"));
}

fn copy_tree(from: &Path, to: &Path) {
    for file in rust_files(from) {
        let target = to.join(file.strip_prefix(from).unwrap());
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        fs::copy(&file, &target).unwrap();
    }
}
