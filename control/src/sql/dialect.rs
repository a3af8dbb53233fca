//! The SQL the control writes, in each database's spelling. Queries are written once, in the
//! dialect SQLite and PostgreSQL share, and rewritten for PostgreSQL on their way out.

/// The SQL the control writes, in PostgreSQL's spelling.
pub fn to_postgres(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut in_str = false;
    let mut next_anon = 1;
    while let Some(c) = chars.next() {
        if c == '\'' {
            in_str = !in_str;
            out.push(c);
        } else if c == '?' && !in_str {
            let mut n = String::new();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                n.push(*d);
                chars.next();
            }
            if n.is_empty() {
                n = next_anon.to_string();
                next_anon += 1;
            }
            out.push('$');
            out.push_str(&n);
        } else {
            out.push(c);
        }
    }
    scalar_max_min(&out)
}

/// `MAX(a, b)` → `GREATEST(a, b)` and `MIN(a, b)` → `LEAST(a, b)`; aggregates (one argument)
/// stay.
fn scalar_max_min(sql: &str) -> String {
    let mut out = sql.to_string();
    for (from, to) in [("MAX(", "GREATEST("), ("MIN(", "LEAST(")] {
        let mut at = 0;
        while let Some(i) = out[at..].to_ascii_uppercase().find(from).map(|i| i + at) {
            let word_start = i == 0
                || !out.as_bytes()[i - 1].is_ascii_alphanumeric() && out.as_bytes()[i - 1] != b'_';
            let open = i + from.len() - 1;
            let mut depth = 0;
            let mut top_comma = false;
            for (j, ch) in out[open..].char_indices() {
                match ch {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            let _ = j;
                            break;
                        }
                    }
                    ',' if depth == 1 => top_comma = true,
                    _ => {}
                }
            }
            if word_start && top_comma {
                out.replace_range(i..i + from.len(), to);
                at = i + to.len();
            } else {
                at = i + from.len();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_is_rewritten_for_postgres() {
        assert_eq!(
            to_postgres("SELECT a FROM t WHERE b = ?1 AND c = ?12 AND d = '?'"),
            "SELECT a FROM t WHERE b = $1 AND c = $12 AND d = '?'"
        );
        assert_eq!(to_postgres("VALUES (?, ?)"), "VALUES ($1, $2)");
        assert_eq!(
            to_postgres("SET x = MAX(x, ?1), y = max(y), z = MIN((a), b)"),
            "SET x = GREATEST(x, $1), y = max(y), z = LEAST((a), b)"
        );
        assert_eq!(
            to_postgres("SELECT COALESCE(MAX(n), 0), ARGMAX(a, b)"),
            "SELECT COALESCE(MAX(n), 0), ARGMAX(a, b)"
        );
    }
}
