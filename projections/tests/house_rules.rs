//! Rules of the house that a reader relies on, checked over the workspace's sources:
//!
//! - Each read model owns all SQL on its tables: the API, the bot, the CLI and the
//!   command side read them through the typed functions of `projections/`, so a
//!   table's columns change in one crate. Every Rust source file outside
//!   `projections/` (tests aside: they may look at a table to check it) is read, and
//!   SQL that names a read-model table (one created in `schema/projections/*.sql`)
//!   fails the test.
//! - A source file over 500 lines says at its top why it is one file (a line
//!   starting `//! One file:`), so a long file is a decision, not an accident.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a test may panic; it says what failed

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// The read models' tables, from their schema files.
fn read_model_tables(root: &Path) -> Vec<String> {
    let mut tables = Vec::new();
    for entry in std::fs::read_dir(root.join("schema/projections")).expect("schema/projections") {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            if let Some(rest) = line.trim().strip_prefix("CREATE TABLE ") {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                tables.push(name);
            }
        }
    }
    tables.sort();
    tables.dedup();
    tables
}

/// Longest source file that needs no reason to be one file.
const FILE_LINES_MAX: usize = 500;

fn rust_sources(dir: &Path, found: &mut Vec<PathBuf>) {
    rust_sources_where(dir, found, &|name| {
        !matches!(name, "target" | "tests" | "projections" | ".git")
    });
}

fn rust_sources_where(dir: &Path, found: &mut Vec<PathBuf>, enter: &dyn Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if path.is_dir() {
            if enter(&name) {
                rust_sources_where(&path, found, enter);
            }
        } else if name.ends_with(".rs") {
            found.push(path);
        }
    }
}

/// `FROM t`, `JOIN t`, `INTO t`, `UPDATE t` for a read-model table `t`, in a line.
fn names_a_table(line: &str, tables: &[String]) -> Option<String> {
    let words: Vec<&str> = line
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect();
    words.windows(2).find_map(|pair| {
        let keyword = pair[0].to_ascii_uppercase();
        let sql = matches!(keyword.as_str(), "FROM" | "JOIN" | "INTO" | "UPDATE");
        (sql && pair[0] == keyword && tables.iter().any(|t| t == pair[1]))
            .then(|| format!("{} {}", pair[0], pair[1]))
    })
}

#[test]
fn no_sql_on_a_read_model_table_outside_projections() {
    let root = workspace();
    let tables = read_model_tables(&root);
    assert!(
        tables.iter().any(|t| t == "balances") && tables.len() >= 10,
        "the read models' tables were not found: {tables:?}"
    );
    let mut sources = Vec::new();
    for top in ["crates", "bins"] {
        rust_sources(&root.join(top), &mut sources);
    }
    assert!(
        sources.len() > 20,
        "no sources found under {}",
        root.display()
    );
    let mut found = Vec::new();
    for path in &sources {
        let text = std::fs::read_to_string(path).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            if let Some(sql) = names_a_table(line, &tables) {
                found.push(format!(
                    "{}:{}: {sql}",
                    path.strip_prefix(&root).unwrap_or(path).display(),
                    n + 1
                ));
            }
        }
    }
    assert!(
        found.is_empty(),
        "SQL on read-model tables outside projections/ (add a typed read function to the \
         read model's module and call it):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_guard_sees_sql_when_there_is_some() {
    let tables = vec!["holds".to_string(), "statement".to_string()];
    assert_eq!(
        names_a_table("\"SELECT user_id FROM holds WHERE hold_id = $1\"", &tables),
        Some("FROM holds".into())
    );
    assert_eq!(
        names_a_table("JOIN statement s ON s.user_id = h.user_id", &tables),
        Some("JOIN statement".into())
    );
    assert_eq!(
        names_a_table("the holds read model, from holds", &tables),
        None
    );
}

#[test]
fn a_long_source_file_says_why_it_is_one_file() {
    let root = workspace();
    let mut sources = Vec::new();
    rust_sources_where(&root, &mut sources, &|name| {
        !matches!(name, "target" | ".git" | "node_modules")
    });
    assert!(
        sources.len() > 50,
        "no sources found under {}",
        root.display()
    );
    let mut unexplained = Vec::new();
    for path in &sources {
        let text = std::fs::read_to_string(path).unwrap();
        let lines = text.lines().count();
        let says_why = text
            .lines()
            .take_while(|l| l.starts_with("//!") || l.trim().is_empty())
            .any(|l| l.starts_with("//! One file:"));
        if lines > FILE_LINES_MAX && !says_why {
            unexplained.push(format!(
                "{} ({lines} lines)",
                path.strip_prefix(&root).unwrap_or(path).display()
            ));
        }
    }
    assert!(
        unexplained.is_empty(),
        "source files over {FILE_LINES_MAX} lines without a `//! One file: <why>` line at \
         their top (split them along a seam, or say why they are one):\n{}",
        unexplained.join("\n")
    );
}
