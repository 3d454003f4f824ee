//! Databases for store tests: a SQLite file in a temporary directory, or a fresh database on the PostgreSQL
//! server that `scripts/test.sh` starts (`DATABASE_URL`), or a PostgreSQL cluster of a test's own.

use std::process::Command;

use shadowdiff::store::Store;
use sqlx::Connection;

/// A database for one test.
pub enum TestDb {
    Sqlite {
        _dir: tempfile::TempDir,
        url: String,
    },
    Postgres {
        url: String,
    },
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        let (dir, url) = super::temp_database();
        TestDb::Sqlite { _dir: dir, url }
    }

    /// A new, empty database on the test server. PostgreSQL tests are part of the suite: without
    /// `DATABASE_URL` they fail, unless `SHADOWDIFF_SKIP_POSTGRES=1` says to skip them on purpose (then `None`).
    pub async fn postgres() -> Option<TestDb> {
        if std::env::var("SHADOWDIFF_SKIP_POSTGRES").is_ok_and(|v| v == "1") {
            eprintln!("skipping a PostgreSQL test: SHADOWDIFF_SKIP_POSTGRES=1");
            return None;
        }
        let base = std::env::var("DATABASE_URL").expect(
            "DATABASE_URL must name a PostgreSQL server for the store tests: run ./scripts/test.sh, which starts one \
             (or set SHADOWDIFF_SKIP_POSTGRES=1 to skip them deliberately)",
        );
        Some(TestDb::Postgres {
            url: create_database(&base).await,
        })
    }

    pub fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url, .. } | TestDb::Postgres { url } => url,
        }
    }

    /// Everything the database holds, as text, to look for what must not be there: the SQLite file, its
    /// write-ahead log and shared-memory index, or a `pg_dump`.
    pub fn everything_as_text(&self) -> String {
        match self.sqlite_path() {
            Some(path) => {
                let mut bytes = std::fs::read(&path).unwrap();
                bytes.extend(std::fs::read(path.with_extension("db-wal")).unwrap_or_default());
                bytes.extend(std::fs::read(path.with_extension("db-shm")).unwrap_or_default());
                String::from_utf8_lossy(&bytes).into_owned()
            }
            None => pg_dump(self.url()),
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, TestDb::Postgres { .. })
    }

    /// A migrated store on this database.
    pub async fn store(&self) -> Store {
        let store = Store::connect(self.url(), 4).await.expect("store connects");
        store.migrate().await.expect("store migrates");
        store
    }

    /// Runs SQL on the database directly (as an operator, or another version, would).
    pub async fn execute(&self, sql: &str) {
        use std::str::FromStr;
        match self {
            TestDb::Postgres { url } => {
                let mut connection = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
                    .execute(&mut connection)
                    .await
                    .unwrap_or_else(|error| panic!("{sql}: {error}"));
            }
            TestDb::Sqlite { url, .. } => {
                let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).unwrap();
                let mut connection = sqlx::SqliteConnection::connect_with(&options)
                    .await
                    .unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
                    .execute(&mut connection)
                    .await
                    .unwrap_or_else(|error| panic!("{sql}: {error}"));
            }
        }
    }

    /// The SQLite file's path, for tests that read its bytes.
    pub fn sqlite_path(&self) -> Option<std::path::PathBuf> {
        match self {
            TestDb::Sqlite { url, .. } => {
                url.strip_prefix("sqlite://").map(std::path::PathBuf::from)
            }
            TestDb::Postgres { .. } => None,
        }
    }
}

/// Creates a database with a unique name next to the one `base` names, and returns its URL.
pub async fn create_database(base: &str) -> String {
    let name = format!("shadowdiff_test_{}", uuid::Uuid::now_v7().simple());
    let mut admin = sqlx::PgConnection::connect(base)
        .await
        .expect("connect to the test PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create a test database");
    let (server, _) = base
        .rsplit_once('/')
        .expect("a database URL ends with /NAME");
    format!("{server}/{name}")
}

/// A PostgreSQL cluster of the test's own (its own port and data), which the test can stop and start.
pub struct PgCluster {
    dir: String,
    pub url: String,
}

impl PgCluster {
    pub fn start() -> PgCluster {
        let output = Command::new(script())
            .arg("start")
            .output()
            .expect("run scripts/pg.sh");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let value = |key: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(&format!("{key}=")))
                .map(str::to_string)
                .unwrap_or_else(|| panic!("scripts/pg.sh printed no {key}: {text}"))
        };
        PgCluster {
            dir: value("PG_DIR"),
            url: value("DATABASE_URL"),
        }
    }

    /// Stops the server, keeping its data: an outage.
    pub fn pause(&self) {
        let status = Command::new(script())
            .args(["pause", &self.dir])
            .status()
            .expect("pause");
        assert!(status.success());
    }

    pub fn resume(&self) {
        let status = Command::new(script())
            .args(["resume", &self.dir])
            .status()
            .expect("resume");
        assert!(status.success());
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = Command::new(script()).args(["stop", &self.dir]).status();
    }
}

fn script() -> String {
    format!("{}/scripts/pg.sh", env!("CARGO_MANIFEST_DIR"))
}

/// `pg_dump` of a database, as text (for tests that look for secrets).
pub fn pg_dump(url: &str) -> String {
    let binary = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|versions| {
            versions
                .filter_map(Result::ok)
                .map(|entry| entry.path().join("bin/pg_dump"))
                .filter(|path| path.exists())
                .max()
        })
        .map_or_else(|| "pg_dump".into(), |path| path.display().to_string());
    let output = Command::new(binary).arg(url).output().expect("run pg_dump");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
