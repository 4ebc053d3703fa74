//! Each read model owns all SQL on its tables: the API, the bot, the CLI and the
//! command side read them through the typed functions of `projections/`, so a
//! table's columns change in one crate. This test reads every Rust source file of
//! the workspace outside `projections/` (tests aside: they may look at a table to
//! check it) and fails on SQL that names a read-model table (one created in
//! `schema/projections/*.sql`).

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

fn rust_sources(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if path.is_dir() {
            if !matches!(name.as_str(), "target" | "tests" | "projections" | ".git") {
                rust_sources(&path, found);
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
