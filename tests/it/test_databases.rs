//! The suite's own databases on a shared PostgreSQL server: a run drops those of runs
//! that are over, and never another live run's, on whatever machine it runs.

use crate::common::*;

fn exists(server: &str, name: &str) -> bool {
    backend::run_sql(server, &format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'")) == [Some("1".to_string())]
}

#[actix_web::test]
async fn only_the_databases_of_runs_that_are_over_are_dropped() {
    let Some(server) = backend::postgres_url() else {
        println!("skipped: the suite's PostgreSQL databases need DATABASE_URL");
        return;
    };
    // Another run, alive on another machine: it holds its lock on a session of its own.
    let other_run = rand::random::<u64>() | 1;
    let theirs = format!("{}{other_run:016x}_1", backend::DATABASE_PREFIX);
    // A database named as the suite named them before, by a process id of this machine that
    // is alive (this one): a run of that code on this machine leaves it alone too.
    let unrelated = format!("otpgate_t{}_{:016x}", std::process::id(), rand::random::<u64>());
    for name in [&theirs, &unrelated] {
        backend::run_sql(&server, &format!("CREATE DATABASE {name}"));
    }
    let (client, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls).await.unwrap();
    let connection = actix_web::rt::spawn(connection);
    client.simple_query(&format!("SELECT pg_advisory_lock({})", other_run as i64)).await.unwrap();

    backend::drop_left_by_ended_runs(&server);
    assert!(exists(&server, &theirs), "a live run's database is kept");
    assert!(exists(&server, &unrelated));

    // The other run ends (its connection closes, as at a crash): its database goes at the
    // next cleanup; the unrelated one never does.
    drop(client);
    connection.await.unwrap().unwrap();
    let dropped = eventually(30, async || {
        backend::drop_left_by_ended_runs(&server);
        !exists(&server, &theirs)
    })
    .await;
    assert!(dropped, "the database of a run that is over is dropped");
    assert!(exists(&server, &unrelated), "a database the suite's runs did not name as theirs is never dropped");
    backend::run_sql(&server, &format!("DROP DATABASE {unrelated}"));
}
