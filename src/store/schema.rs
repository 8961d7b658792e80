//! Applies `schema.sql`: the foundation statements at every start, then each
//! numbered migration step the database has not had yet, as recorded in
//! `PRAGMA user_version`.

use rusqlite::{Connection, TransactionBehavior};

const SCHEMA: &str = include_str!("../../schema.sql");
const STEP_MARKER: &str = "-- migration: ";

/// The foundation part of `schema` and its migration steps as (version, SQL), in file order.
fn split(schema: &str) -> (String, Vec<(u32, String)>) {
    let mut foundation = String::new();
    let mut steps: Vec<(u32, String)> = Vec::new();
    for line in schema.lines() {
        if let Some(number) = line.strip_prefix(STEP_MARKER) {
            let version = number.trim().parse().unwrap_or_else(|_| panic!("schema.sql: bad migration marker {line:?}"));
            steps.push((version, String::new()));
            continue;
        }
        let target = match steps.last_mut() {
            Some((_, sql)) => sql,
            None => &mut foundation,
        };
        target.push_str(line);
        target.push('\n');
    }
    (foundation, steps)
}

/// The schema version a fully migrated database has.
pub fn latest_version() -> u32 {
    split(SCHEMA).1.last().map_or(0, |(version, _)| *version)
}

/// Brings the database up to the latest schema version.
pub fn apply(conn: &mut Connection) -> rusqlite::Result<()> {
    let (foundation, steps) = split(SCHEMA);
    conn.execute_batch(&foundation)?;
    for (version, sql) in steps {
        // The version is read inside the write transaction, so two processes
        // starting on one database cannot both run a step.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: u32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version <= current {
            continue;
        }
        tx.execute_batch(&sql)?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        tracing::info!("database schema upgraded to version {version}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_numbered_one_by_one_from_one() {
        let (foundation, steps) = split(SCHEMA);
        assert!(foundation.contains("CREATE TABLE IF NOT EXISTS otp_challenges"));
        let versions: Vec<u32> = steps.iter().map(|(v, _)| *v).collect();
        assert_eq!(versions, (1..=versions.len() as u32).collect::<Vec<_>>());
    }

    #[test]
    fn applying_twice_is_harmless() {
        let mut conn = Connection::open_in_memory().unwrap();
        apply(&mut conn).unwrap();
        apply(&mut conn).unwrap();
        let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, latest_version());
        assert!(latest_version() >= 1);
    }
}
