//! Rebuild when a migration is added: `sqlx::migrate!` embeds the files it finds at
//! compile time, and Cargo does not watch a directory for new files on its own.

fn main() {
    println!("cargo:rerun-if-changed=../../schema/sqlite");
    println!("cargo:rerun-if-changed=../../schema/postgres");
}
