//! The audit trail's rows (migration 0004): what each authenticated connection was,
//! and each channel it opened. Written by `crate::audit` off the connection's path;
//! read by `GET /users/me/sessions` and `ssh-gateway admin sessions`.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Flavor, Result, Store};

/// One authenticated connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConnection {
    pub id: String,
    pub user_id: String,
    pub user_name: String,
    pub key_id: String,
    pub key_fingerprint: String,
    pub certificate_serial: Option<i64>,
    pub source_address: String,
    pub target: String,
    /// Unix ms.
    pub started_at: i64,
    /// `None` while open (or if its gateway died first).
    pub ended_at: Option<i64>,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub close_reason: Option<String>,
    pub channels: Vec<AuditChannel>,
}

/// One channel of a connection, recorded when it closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditChannel {
    pub channel: i64,
    /// `session` or `direct-tcpip`.
    pub kind: String,
    /// `shell`, `sftp`, the exec command line, or a forward's destination.
    pub program: String,
    pub started_at: i64,
    pub ended_at: i64,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub exit_status: Option<i64>,
    /// `exit`, `signal <NAME>`, `refused` or `closed`.
    pub outcome: String,
    /// The asciicast file of a recorded PTY channel (a name under `[recording] dir`).
    pub recording: Option<String>,
}

/// One change to the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditRecord {
    /// A connection authenticated.
    Open(AuditConnection),
    /// One of its channels closed (the connection's audit id, the channel).
    Channel(String, AuditChannel),
    /// It ended.
    Close {
        id: String,
        ended_at: i64,
        /// (in, out)
        bytes: (i64, i64),
        reason: String,
    },
}

/// The close reason of a connection whose gateway process died before closing it.
pub const ORPHANED: &str = "the gateway serving it stopped without closing it";

/// Whose audit trail a query reads.
#[derive(Debug, Clone, Copy)]
pub enum AuditFilter<'a> {
    Everyone,
    UserId(&'a str),
    /// By the name recorded at the time, so a deleted user's trail stays findable.
    UserName(&'a str),
    /// One connection, by its audit id.
    Session(&'a str),
}

/// Where a page of newest-first sessions ends: the next page starts after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCursor {
    pub started_at: i64,
    pub id: String,
}

impl AuditCursor {
    /// `<started_at>.<id>`: opaque to clients, checked when read back.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.started_at, self.id)
    }

    pub fn decode(s: &str) -> Option<AuditCursor> {
        let (at, id) = s.split_once('.')?;
        let ok = !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        let started_at = at.parse().ok()?;
        ok.then(|| AuditCursor {
            started_at,
            id: id.to_owned(),
        })
    }
}

const CONNECTION_COLUMNS: &str = "id, user_id, user_name, key_id, key_fingerprint, certificate_serial, \
     source_address, target, started_at, ended_at, bytes_in, bytes_out, close_reason";

fn connection(row: &AnyRow) -> Result<AuditConnection> {
    Ok(AuditConnection {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        user_name: row.try_get("user_name")?,
        key_id: row.try_get("key_id")?,
        key_fingerprint: row.try_get("key_fingerprint")?,
        certificate_serial: row.try_get("certificate_serial")?,
        source_address: row.try_get("source_address")?,
        target: row.try_get("target")?,
        started_at: row.try_get("started_at")?,
        ended_at: row.try_get("ended_at")?,
        bytes_in: row.try_get("bytes_in")?,
        bytes_out: row.try_get("bytes_out")?,
        close_reason: row.try_get("close_reason")?,
        channels: Vec::new(),
    })
}

fn channel(row: &AnyRow) -> Result<(String, AuditChannel)> {
    Ok((
        row.try_get("connection_id")?,
        AuditChannel {
            channel: row.try_get("channel")?,
            kind: row.try_get("kind")?,
            program: row.try_get("program")?,
            started_at: row.try_get("started_at")?,
            ended_at: row.try_get("ended_at")?,
            bytes_in: row.try_get("bytes_in")?,
            bytes_out: row.try_get("bytes_out")?,
            exit_status: row.try_get("exit_status")?,
            outcome: row.try_get("outcome")?,
            recording: row.try_get("recording")?,
        },
    ))
}

/// Most records in one multi-row statement: 64 × 11 columns stays far below the
/// bound parameters either database allows. The statements are not kept prepared
/// (`persistent(false)`): each row count is its own statement, and every pooled SQLite
/// connection caching a few of them held megabytes after a burst.
const ROWS_PER_STATEMENT: usize = 64;

/// `head`, then `rows` parenthesised groups of `columns` placeholders, then `tail`.
/// SQLite gets anonymous `?` (it finds a numbered parameter's name by a linear scan,
/// and sqlx asks for every one: quadratic in a long statement); PostgreSQL `$1, $2, …`.
/// Only placeholders are generated: values are always bound.
fn multi_row(flavor: Flavor, head: &str, columns: usize, rows: usize, tail: &str) -> String {
    use std::fmt::Write;
    let mut sql = String::with_capacity(head.len() + tail.len() + rows * columns * 6);
    sql.push_str(head);
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..columns {
            let sep = if column == 0 { "" } else { ", " };
            let _ = match flavor {
                Flavor::Sqlite => write!(sql, "{sep}?"),
                Flavor::Postgres => write!(sql, "{sep}${}", row * columns + column + 1),
            };
        }
        sql.push(')');
    }
    sql.push_str(tail);
    sql
}

impl Store {
    /// Stores a batch of audit records in one transaction: one commit (one fsync on
    /// SQLite) for a burst of connections, not one per record, and one statement per
    /// `ROWS_PER_STATEMENT` records of a kind at most, not one each (on SQLite every
    /// statement is a round trip to sqlx's worker thread; those hand-offs were most of
    /// the audit trail's cost in a burst). Connections are inserted before channels (which name
    /// them) and closes, so a connection opened and closed within one batch is stored
    /// whole. Connections are marked as recorded by gateway process `instance` (see
    /// `instance_alive`).
    pub async fn audit_write(&self, records: &[AuditRecord], instance: &str) -> Result<()> {
        let mut opens = Vec::new();
        let mut channels = Vec::new();
        let mut closes = Vec::new();
        for record in records {
            match record {
                AuditRecord::Open(c) => opens.push(c),
                AuditRecord::Channel(id, c) => channels.push((id, c)),
                AuditRecord::Close {
                    id,
                    ended_at,
                    bytes,
                    reason,
                } => closes.push((id, *ended_at, *bytes, reason)),
            }
        }
        let mut tx = self.pool.begin().await?;
        for chunk in opens.chunks(ROWS_PER_STATEMENT) {
            let sql = multi_row(
                self.flavor,
                "INSERT INTO audit_connections (id, user_id, user_name, key_id, \
                 key_fingerprint, certificate_serial, source_address, target, started_at, \
                 instance_id) VALUES ",
                10,
                chunk.len(),
                "",
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
            for c in chunk {
                q = q
                    .bind(&c.id)
                    .bind(&c.user_id)
                    .bind(&c.user_name)
                    .bind(&c.key_id)
                    .bind(&c.key_fingerprint)
                    .bind(c.certificate_serial)
                    .bind(&c.source_address)
                    .bind(&c.target)
                    .bind(c.started_at)
                    .bind(instance);
            }
            q.execute(&mut *tx).await?;
        }
        for chunk in channels.chunks(ROWS_PER_STATEMENT) {
            let sql = multi_row(
                self.flavor,
                "INSERT INTO audit_channels (connection_id, channel, kind, program, \
                 started_at, ended_at, bytes_in, bytes_out, exit_status, outcome, \
                 recording) VALUES ",
                11,
                chunk.len(),
                "",
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
            for (connection_id, c) in chunk {
                q = q
                    .bind(*connection_id)
                    .bind(c.channel)
                    .bind(&c.kind)
                    .bind(&c.program)
                    .bind(c.started_at)
                    .bind(c.ended_at)
                    .bind(c.bytes_in)
                    .bind(c.bytes_out)
                    .bind(c.exit_status)
                    .bind(&c.outcome)
                    .bind(&c.recording);
            }
            q.execute(&mut *tx).await?;
        }
        for chunk in closes.chunks(ROWS_PER_STATEMENT) {
            // PostgreSQL and SQLite both name a VALUES list's columns column1, column2, …
            let sql = multi_row(
                self.flavor,
                "UPDATE audit_connections SET ended_at = v.column2, bytes_in = v.column3, \
                 bytes_out = v.column4, close_reason = v.column5 FROM (VALUES ",
                5,
                chunk.len(),
                ") AS v WHERE audit_connections.id = v.column1",
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
            for (id, ended_at, bytes, reason) in chunk {
                q = q
                    .bind(*id)
                    .bind(*ended_at)
                    .bind(bytes.0)
                    .bind(bytes.1)
                    .bind(*reason);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Up to `limit` connections, newest first, after `after` (a previous page's
    /// last), of those `filter` picks; each with its channels.
    pub async fn audit_sessions(
        &self,
        filter: AuditFilter<'_>,
        after: Option<&AuditCursor>,
        limit: u32,
    ) -> Result<Vec<AuditConnection>> {
        let (at, id) = match after {
            Some(c) => (c.started_at, c.id.as_str()),
            None => (i64::MAX, ""),
        };
        let page = "(started_at < $1 OR (started_at = $1 AND id < $2))";
        let order = "ORDER BY started_at DESC, id DESC LIMIT $3";
        let (column, value) = match filter {
            AuditFilter::Everyone => ("", ""),
            AuditFilter::UserId(v) => ("AND user_id = $4", v),
            AuditFilter::UserName(v) => ("AND user_name = $4", v),
            AuditFilter::Session(v) => ("AND id = $4", v),
        };
        // Only this module's constants are interpolated; values are bound.
        let query = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CONNECTION_COLUMNS} FROM audit_connections WHERE {page} {column} {order}"
        )))
        .bind(at)
        .bind(id)
        .bind(i64::from(limit));
        let query = if column.is_empty() {
            query
        } else {
            query.bind(value)
        };
        let rows = query.fetch_all(&self.pool).await?;
        let mut sessions = rows.iter().map(connection).collect::<Result<Vec<_>>>()?;
        if sessions.is_empty() {
            return Ok(sessions);
        }
        let marks: Vec<String> = (1..=sessions.len()).map(|i| format!("${i}")).collect();
        let query = format!(
            "SELECT connection_id, channel, kind, program, started_at, ended_at, bytes_in, \
             bytes_out, exit_status, outcome, recording FROM audit_channels \
             WHERE connection_id IN ({}) ORDER BY started_at, channel",
            marks.join(", ")
        );
        // Only numbered placeholders are interpolated; the ids are bound.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(query));
        for s in &sessions {
            q = q.bind(s.id.clone());
        }
        for row in q.fetch_all(&self.pool).await? {
            let (owner, ch) = channel(&row)?;
            if let Some(s) = sessions.iter_mut().find(|s| s.id == owner) {
                s.channels.push(ch);
            }
        }
        Ok(sessions)
    }

    /// Gateway process `instance` (on `host`) is alive now: registered on first call,
    /// its `seen_at` moved on every later one (again registered if a replica that
    /// thought it dead removed it).
    pub async fn instance_alive(&self, instance: &str, host: &str) -> Result<()> {
        let now = super::now_ms();
        sqlx::query(
            "INSERT INTO gateway_instances (id, host, started_at, seen_at) VALUES ($1, $2, $3, $3) \
             ON CONFLICT (id) DO UPDATE SET seen_at = $3",
        )
        .bind(instance)
        .bind(host)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Closes the open connections of gateway processes not seen alive since
    /// `stale_before` (Unix ms), as ended when each was last seen, and forgets those
    /// processes; returns how many connections it closed. A process that was only
    /// slow registers again, and its own close records still overwrite these.
    pub async fn close_orphans(&self, stale_before: i64) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let closed = sqlx::query(
            "UPDATE audit_connections SET close_reason = $2, ended_at = \
             (SELECT seen_at FROM gateway_instances g WHERE g.id = audit_connections.instance_id) \
             WHERE ended_at IS NULL AND instance_id IN \
             (SELECT id FROM gateway_instances WHERE seen_at < $1)",
        )
        .bind(stale_before)
        .bind(ORPHANED)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM gateway_instances WHERE seen_at < $1")
            .bind(stale_before)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(closed)
    }

    /// Deletes connections (and their channels) that ended before `before` (Unix ms).
    pub async fn prune_audit(&self, before: i64) -> Result<u64> {
        // Rows a dead gateway never closed go once they are as old.
        let done = sqlx::query(
            "DELETE FROM audit_connections WHERE ended_at < $1 \
             OR (ended_at IS NULL AND started_at < $1)",
        )
        .bind(before)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_row_placeholders_suit_each_database() {
        assert_eq!(
            multi_row(
                Flavor::Postgres,
                "INSERT INTO t (a, b) VALUES ",
                2,
                3,
                " RETURNING a"
            ),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4), ($5, $6) RETURNING a"
        );
        assert_eq!(
            multi_row(Flavor::Sqlite, "INSERT INTO t (a, b) VALUES ", 2, 2, ""),
            "INSERT INTO t (a, b) VALUES (?, ?), (?, ?)"
        );
    }

    #[test]
    fn cursors_round_trip_and_junk_is_refused() {
        let c = AuditCursor {
            started_at: 1_700_000_000_123,
            id: "ses_0a1b".into(),
        };
        assert_eq!(AuditCursor::decode(&c.encode()), Some(c));
        for junk in ["", ".", "12.", "x.ses_1", "1.ses'--", "1.a b", "1"] {
            assert_eq!(AuditCursor::decode(junk), None, "{junk:?}");
        }
    }
}
