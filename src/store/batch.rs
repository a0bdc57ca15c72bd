//! Multi-row statements from many single-row inserts, for PostgreSQL, where
//! each statement of a batch is a network round trip.
//!
//! The audit writer's batch holds the side effects of many decisions; most
//! are one-row `INSERT ... VALUES (...)` statements with the same SQL (the
//! exchange rows, the vault rows, the outbox rows). [`group`] turns each run
//! of identical inserts into one multi-row insert, renumbering the `$N`
//! placeholders, and leaves every other statement alone, in order.
//!
//! Grouping moves a later insert before the statements between it and the
//! first insert of its group, so it is only done where the batch's effects
//! do not read each other's rows: every effect of a batch is independent of
//! the others (a decision that depends on an earlier one, such as a
//! delivery outcome for a forwarded exchange, is only appended after the
//! earlier batch has committed).

use super::{Arg, Stmt};

/// Most rows per grouped insert (PostgreSQL allows 65,535 parameters).
const MAX_ROWS: usize = 200;

/// A statement ready to run: owned SQL and its arguments.
#[derive(Debug, Clone)]
pub struct Owned {
    /// SQL with `$N` placeholders.
    pub sql: String,
    /// Arguments in order.
    pub args: Vec<Arg>,
    /// Rows the statement must affect (0 = no requirement).
    pub expect_rows: bool,
}

/// The pieces of a one-row insert: `head VALUES (tuple) tail`.
struct InsertShape<'a> {
    head: &'a str,
    tuple: &'a str,
    tail: &'a str,
}

/// Splits `INSERT INTO t (...) VALUES (...) [tail]`; `None` for anything
/// else (a multi-row insert, an `INSERT ... SELECT`, an update).
fn insert_shape(sql: &str) -> Option<InsertShape<'_>> {
    if !sql
        .trim_start()
        .to_ascii_uppercase()
        .starts_with("INSERT INTO")
    {
        return None;
    }
    let upper = sql.to_ascii_uppercase();
    let v = upper.find("VALUES")?;
    let open = v + sql.get(v..)?.find('(')?;
    let mut depth = 0usize;
    let mut quoted = false;
    for (i, c) in sql.char_indices().skip_while(|(i, _)| *i < open) {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    let tail = sql.get(i + 1..)?;
                    // A second tuple means it is already a multi-row insert.
                    if tail.trim_start().starts_with(',') {
                        return None;
                    }
                    return Some(InsertShape {
                        head: sql.get(..open)?,
                        tuple: sql.get(open..=i)?,
                        tail,
                    });
                }
            }
            _ => {}
        }
    }
    None
}

/// `tuple` with every `$N` outside quotes replaced by `$(N + offset)`.
fn renumber(tuple: &str, offset: usize, out: &mut String) {
    let mut chars = tuple.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if c != '$' || quoted {
            out.push(c);
            continue;
        }
        let mut n = 0usize;
        let mut digits = 0;
        while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
            n = n * 10 + d as usize;
            digits += 1;
            chars.next();
        }
        out.push('$');
        if digits == 0 {
            continue;
        }
        out.push_str(&(n + offset).to_string());
    }
}

/// The statements of `stmts` with runs of identical one-row inserts merged
/// (see the module doc). Inserts that must affect a row keep their own
/// statement, since a merged one could not say which row was missing.
pub fn group<'a>(stmts: impl IntoIterator<Item = &'a Stmt>) -> Vec<Owned> {
    // Groups in order of their first statement; other statements stand alone.
    let mut out: Vec<(Option<&'static str>, Vec<&'a Stmt>)> = Vec::new();
    for s in stmts {
        let groupable = !s.expect_rows && insert_shape(s.sql).is_some();
        if groupable {
            if let Some((_, members)) = out
                .iter_mut()
                .find(|(key, m)| *key == Some(s.sql) && m.len() < MAX_ROWS)
            {
                members.push(s);
                continue;
            }
            out.push((Some(s.sql), vec![s]));
        } else {
            out.push((None, vec![s]));
        }
    }
    out.into_iter()
        .map(|(_, members)| merge(&members))
        .collect()
}

fn merge(members: &[&Stmt]) -> Owned {
    let first = members.first().copied();
    let shape = first.and_then(|s| insert_shape(s.sql));
    match (first, shape) {
        (Some(s), Some(shape)) if members.len() > 1 => {
            let mut sql = String::with_capacity(s.sql.len() + members.len() * shape.tuple.len());
            sql.push_str(shape.head);
            let mut args = Vec::new();
            for (i, m) in members.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                renumber(shape.tuple, args.len(), &mut sql);
                args.extend(m.args.iter().cloned());
            }
            sql.push_str(shape.tail);
            Owned {
                sql,
                args,
                expect_rows: false,
            }
        }
        (Some(s), _) => Owned {
            sql: s.sql.to_owned(),
            args: s.args.clone(),
            expect_rows: s.expect_rows,
        },
        (None, _) => Owned {
            sql: String::new(),
            args: Vec::new(),
            expect_rows: false,
        },
    }
}

impl Owned {
    /// Runs it; returns the number of affected rows.
    pub async fn execute(&self, conn: &mut sqlx::AnyConnection) -> Result<u64, sqlx::Error> {
        super::execute_sqlx(&self.sql, &self.args, conn).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VAULT: &str = "INSERT INTO vault (domain, pseudonym) VALUES ($1, $2) ON CONFLICT (domain, pseudonym) DO NOTHING";
    const ROW: &str = "INSERT INTO exchanges (id, status, note) VALUES ($1, 'denied', '($9)', $2)";
    const UPDATE: &str = "UPDATE exchanges SET status = $1 WHERE id = $2";

    #[test]
    fn identical_inserts_merge_with_renumbered_placeholders() {
        let a = Stmt::new(VAULT).text("audit").text("ps1_a");
        let b = Stmt::new(VAULT).text("fk").text("ps1_b");
        let out = group([&a, &b]);
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].sql,
            "INSERT INTO vault (domain, pseudonym) VALUES ($1, $2), ($3, $4) ON CONFLICT (domain, pseudonym) DO NOTHING"
        );
        assert_eq!(out[0].args.len(), 4);
    }

    #[test]
    fn literals_and_quoted_dollars_are_kept() {
        let a = Stmt::new(ROW).text("x").text("y");
        let b = Stmt::new(ROW).text("z").text("w");
        let out = group([&a, &b]);
        assert_eq!(
            out[0].sql,
            "INSERT INTO exchanges (id, status, note) VALUES ($1, 'denied', '($9)', $2), ($3, 'denied', '($9)', $4)"
        );
    }

    #[test]
    fn updates_and_checked_inserts_stand_alone_in_order() {
        let a = Stmt::new(VAULT).text("audit").text("ps1_a");
        let u = Stmt::new(UPDATE).text("delivered").text("e1");
        let c = Stmt::new(VAULT).text("fk").text("ps1_b").expect_rows();
        let b = Stmt::new(VAULT).text("fk").text("ps1_c");
        let out = group([&a, &u, &c, &b]);
        let sqls: Vec<_> = out.iter().map(|o| o.sql.as_str()).collect();
        assert_eq!(sqls.len(), 3);
        assert!(sqls[0].contains("($3, $4)"));
        assert_eq!(sqls[1], UPDATE);
        assert!(out[2].expect_rows);
    }

    #[test]
    fn a_lone_insert_is_unchanged() {
        let a = Stmt::new(VAULT).text("audit").text("ps1_a");
        let out = group([&a]);
        assert_eq!(out[0].sql, VAULT);
    }
}
