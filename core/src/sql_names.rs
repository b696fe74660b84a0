//! Finds the names in an SQL statement that PostgreSQL would look up through
//! `search_path`: function calls and relations that are not schema-qualified.
//! Code that runs with elevated rights (the background worker, `SECURITY
//! DEFINER` functions) must name everything with its schema, so that a user
//! who can put an object on a `search_path` cannot have it run instead.
//! A lexical check, not a parser: SQL syntax that looks like a call
//! (`IN (`, `extract(… FROM …)`, `coalesce(`, column lists) is recognised.

/// Words followed by `(` that are SQL syntax, not a function looked up by name
/// (the grammar qualifies `extract`, `position`, … with `pg_catalog` itself).
const SYNTAX: &[&str] = &[
    "all",
    "and",
    "any",
    "array",
    "as",
    "between",
    "by",
    "case",
    "cast",
    "coalesce",
    "conflict",
    "else",
    "exists",
    "extract",
    "filter",
    "from",
    "greatest",
    "grouping",
    "having",
    "in",
    "into",
    "is",
    "join",
    "lateral",
    "least",
    "limit",
    "not",
    "nullif",
    "on",
    "or",
    "ordinality",
    "over",
    "overlay",
    "position",
    "returning",
    "row",
    "rows",
    "select",
    "set",
    "some",
    "substring",
    "then",
    "trim",
    "union",
    "using",
    "values",
    "when",
    "where",
    "with",
    "within",
];

/// Words after which a relation name follows.
const RELATION_BEFORE: &[&str] = &["from", "join", "into", "update", "using"];

/// Calls whose `FROM` is part of their syntax, not a relation list.
const FROM_INSIDE: &[&str] = &["extract", "substring", "trim", "overlay", "position"];

#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// An identifier or keyword, lower-cased unless it was quoted.
    Word(String),
    Punct(char),
    /// `::`, a cast: the name after it is a type.
    Cast,
    /// A literal, a parameter or a number: nothing to look up.
    Value,
}

fn tokens(sql: &str) -> Vec<Token> {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c.is_whitespace() {
            i += 1;
        } else if c == '-' && next == Some('-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '\'' {
            i += 1;
            while i < chars.len() {
                if chars[i] == '\'' {
                    if chars.get(i + 1) == Some(&'\'') {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i += 1;
            out.push(Token::Value);
        } else if c == '"' {
            let start = i + 1;
            i = start;
            while i < chars.len() && chars[i] != '"' {
                i += 1;
            }
            out.push(Token::Word(
                chars[start..i.min(chars.len())].iter().collect(),
            ));
            i += 1;
        } else if c == '$' && next.is_some_and(|n| n.is_ascii_digit()) {
            i += 1;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            out.push(Token::Value);
        } else if c == '$' {
            // A dollar-quoted string: $tag$ … $tag$.
            let end_tag = (i + 1..chars.len()).find(|&j| chars[j] == '$');
            let Some(end_tag) = end_tag else { break };
            let tag: String = chars[i..=end_tag].iter().collect();
            let rest: String = chars[end_tag + 1..].iter().collect();
            let close = rest.find(&tag).map_or(rest.len(), |p| p + tag.len());
            i = end_tag + 1 + rest[..close].chars().count();
            out.push(Token::Value);
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            out.push(Token::Value);
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            out.push(Token::Word(word.to_lowercase()));
        } else if c == ':' && next == Some(':') {
            out.push(Token::Cast);
            i += 2;
        } else {
            out.push(Token::Punct(c));
            i += 1;
        }
    }
    out
}

fn word(token: Option<&Token>) -> Option<&str> {
    match token {
        Some(Token::Word(w)) => Some(w),
        _ => None,
    }
}

/// The function calls and relations in `sql` that are not schema-qualified,
/// in order of appearance (`now()` for a call, `audit_log` for a relation).
/// Names defined by the statement itself (CTEs) are not reported.
pub fn unqualified_names(sql: &str) -> Vec<String> {
    let tokens = tokens(sql);
    let at = |i: usize| tokens.get(i);
    let is = |i: usize, c: char| at(i) == Some(&Token::Punct(c));
    // CTE names: `name AS (` and `name(columns) AS (`.
    let closing = |open: usize| -> Option<usize> {
        let mut depth = 0usize;
        for (j, token) in tokens.iter().enumerate().skip(open) {
            match token {
                Token::Punct('(') => depth += 1,
                Token::Punct(')') => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(j);
                    }
                }
                _ => {}
            }
        }
        None
    };
    let defines = |after: usize| word(at(after)) == Some("as") && is(after + 1, '(');
    let ctes: Vec<&str> = (0..tokens.len())
        .filter(|&i| {
            defines(i + 1) || (is(i + 1, '(') && closing(i + 1).is_some_and(|j| defines(j + 1)))
        })
        .filter_map(|i| word(at(i)))
        .collect();
    let mut found = Vec::new();
    // For each open parenthesis, the word before it (when any).
    let mut opened: Vec<Option<&str>> = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        match token {
            Token::Punct('(') => opened.push(i.checked_sub(1).and_then(|p| word(at(p)))),
            Token::Punct(')') => {
                opened.pop();
            }
            Token::Word(name) => {
                let prev = i.checked_sub(1).and_then(&at);
                let qualified = matches!(prev, Some(Token::Punct('.')));
                let after_cast = matches!(prev, Some(Token::Cast));
                // `AS alias(columns)`, `) alias(columns)`: column lists.
                let alias = matches!(prev, Some(Token::Word(w)) if w == "as")
                    || matches!(prev, Some(Token::Punct(')')));
                let dotted = is(i + 1, '.');
                if is(i + 1, '(')
                    && !qualified
                    && !after_cast
                    && !alias
                    && !SYNTAX.contains(&name.as_str())
                    && !ctes.contains(&name.as_str())
                {
                    found.push(format!("{name}()"));
                }
                // `FOR UPDATE SKIP LOCKED` locks rows; it names no relation.
                let locking = i >= 2 && word(at(i - 2)) == Some("for");
                let relation_slot = matches!(prev, Some(Token::Word(w)) if RELATION_BEFORE.contains(&w.as_str()))
                    && !locking
                    && !opened
                        .last()
                        .copied()
                        .flatten()
                        .is_some_and(|f| FROM_INSIDE.contains(&f));
                if relation_slot
                    && !dotted
                    && !is(i + 1, '(')
                    && !SYNTAX.contains(&name.as_str())
                    && !ctes.contains(&name.as_str())
                {
                    found.push(name.clone());
                }
            }
            _ => {}
        }
    }
    found
}

/// The SQL statements among the string literals of Rust source `code`:
/// literals that start with SELECT, INSERT, UPDATE, DELETE or WITH in
/// capitals (as the project writes SQL; "update x: {e}" is a message).
pub fn statements_in_rust(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = code.chars().peekable();
    let mut literal: Option<String> = None;
    while let Some(c) = chars.next() {
        match &mut literal {
            Some(text) => match c {
                '\\' => {
                    if let Some(escaped) = chars.next() {
                        match escaped {
                            '\n' => {
                                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                                    chars.next();
                                }
                            }
                            'n' => text.push('\n'),
                            other => text.push(other),
                        }
                    }
                }
                '"' => {
                    let first = text.split_whitespace().next().unwrap_or("");
                    if ["SELECT", "INSERT", "UPDATE", "DELETE", "WITH"].contains(&first) {
                        out.push(text.clone());
                    }
                    literal = None;
                }
                other => text.push(other),
            },
            None => match c {
                '/' if chars.peek() == Some(&'/') => {
                    for c in chars.by_ref() {
                        if c == '\n' {
                            break;
                        }
                    }
                }
                // A char literal such as '"' is not a string.
                '\'' => {
                    let ahead: String = chars.clone().take(3).collect();
                    if ahead.starts_with("\"'") {
                        chars.next();
                        chars.next();
                    }
                }
                '"' => literal = Some(String::new()),
                _ => {}
            },
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_unqualified_calls_and_relations() {
        assert_eq!(
            unqualified_names("SELECT now(), pg_catalog.now() FROM http_requests"),
            ["now()", "http_requests"]
        );
        assert_eq!(
            unqualified_names(
                "UPDATE integration.q SET at = pg_catalog.now() WHERE id IN (SELECT id FROM x.y)
                 RETURNING id"
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn syntax_that_looks_like_a_call_is_not_reported() {
        let sql =
            "WITH f AS (SELECT * FROM pg_catalog.unnest($1::bigint[]) WITH ORDINALITY AS u(id, n)
                     LEFT JOIN ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3)) AS v(a, b) ON true)
                   SELECT coalesce(a, 1), extract(epoch FROM r.t), extract(epoch FROM t),
                          $2::numeric(10, 2), EXISTS (SELECT FROM f), x IN (1, 2)
                   FROM f JOIN (SELECT 1) s ON true FOR UPDATE SKIP LOCKED";
        assert_eq!(unqualified_names(sql), Vec::<String>::new());
        assert_eq!(
            unqualified_names("SELECT extract(epoch FROM min(t) - now()) FROM integration.q"),
            ["min()", "now()"]
        );
        // A recursive CTE with a column list is the statement's own name.
        assert_eq!(
            unqualified_names(
                "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r WHERE x < 3)
                 SELECT x FROM r JOIN q ON true"
            ),
            ["q"]
        );
    }

    #[test]
    fn literals_comments_and_quoted_names() {
        assert_eq!(
            unqualified_names(
                "SELECT 'now()', $$ now() $$ -- now()\n /* now() */ FROM \"Odd\".\"T\""
            ),
            Vec::<String>::new()
        );
        assert_eq!(unqualified_names("SELECT \"now\"()"), ["now()"]);
    }

    #[test]
    fn statements_are_found_in_rust_source() {
        let code = r#"
            // "SELECT commented()"
            const A: &str = "SELECT a \
                             FROM b";
            let c = '"';
            let s = format!("INSERT INTO {} VALUES (\"x\")", t);
            let not_sql = "update x: {e}";
        "#;
        assert_eq!(
            statements_in_rust(code),
            ["SELECT a FROM b", "INSERT INTO {} VALUES (\"x\")"]
        );
    }
}
