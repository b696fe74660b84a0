//! SQL text for remote databases: identifier and literal quoting per dialect
//! (PostgreSQL, MySQL/MariaDB) and the mapping of remote column types to the
//! local PostgreSQL types the foreign-data wrappers import. Every name or
//! value from a user goes through [`quote_ident`] or [`quote_literal`] before
//! it reaches remote SQL; NUL bytes are refused because no engine stores them
//! in names and some truncate strings at them.

use thiserror::Error;

/// The SQL dialect of a remote engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL and compatible engines (KingbaseES), with
    /// `standard_conforming_strings` on or off: literals with a backslash
    /// use the `E'…'` form, which reads the same under both settings.
    Postgres,
    /// MySQL and MariaDB. `no_backslash_escapes` mirrors the session's
    /// `NO_BACKSLASH_ESCAPES` SQL mode, under which `\` is an ordinary
    /// character and must not be doubled.
    /// MySQL and MariaDB. Literals are written to read the same whatever
    /// the session's `sql_mode` (with or without NO_BACKSLASH_ESCAPES).
    MySql,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DialectError {
    #[error("{what} contains a NUL byte, which no remote engine accepts")]
    Nul { what: &'static str },
    #[error("identifier is empty")]
    EmptyIdentifier,
}

/// Quotes an identifier (table, column, schema name) for `dialect`.
pub fn quote_ident(dialect: Dialect, name: &str) -> Result<String, DialectError> {
    if name.contains('\0') {
        return Err(DialectError::Nul { what: "identifier" });
    }
    if name.is_empty() {
        return Err(DialectError::EmptyIdentifier);
    }
    let quote = match dialect {
        Dialect::Postgres => '"',
        Dialect::MySql => '`',
    };
    let mut out = String::with_capacity(name.len() + 2);
    out.push(quote);
    for c in name.chars() {
        if c == quote {
            out.push(quote);
        }
        out.push(c);
    }
    out.push(quote);
    Ok(out)
}

/// Quotes `schema.name` for `dialect`.
pub fn quote_qualified(dialect: Dialect, schema: &str, name: &str) -> Result<String, DialectError> {
    Ok(format!(
        "{}.{}",
        quote_ident(dialect, schema)?,
        quote_ident(dialect, name)?
    ))
}

/// Quotes a string value as an SQL literal for `dialect`.
pub fn quote_literal(dialect: Dialect, value: &str) -> Result<String, DialectError> {
    if value.contains('\0') {
        return Err(DialectError::Nul { what: "value" });
    }
    let mut out = String::with_capacity(value.len() + 3);
    match dialect {
        Dialect::Postgres => {
            if value.contains('\\') {
                out.push('E');
            }
            out.push('\'');
            for c in value.chars() {
                match c {
                    '\'' => out.push_str("''"),
                    '\\' => out.push_str("\\\\"),
                    c => out.push(c),
                }
            }
        }
        Dialect::MySql => {
            // A backslash means one thing under NO_BACKSLASH_ESCAPES and
            // another without it, and a pass-through `SET sql_mode` can
            // change the mode: such a value travels as hex, which reads the
            // same under both.
            if value.contains('\\') {
                let hex: String = value.bytes().map(|b| format!("{b:02x}")).collect();
                return Ok(format!("_utf8mb4 X'{hex}'"));
            }
            out.push('\'');
            for c in value.chars() {
                match c {
                    '\'' => out.push_str("''"),
                    c => out.push(c),
                }
            }
        }
    }
    out.push('\'');
    Ok(out)
}

/// A binary value as a literal: `'\x…'::bytea` for PostgreSQL, `X'…'` for
/// MySQL. Hex needs no escaping, so it is safe under any SQL mode.
pub fn bytes_literal(dialect: Dialect, bytes: &[u8]) -> String {
    let mut hex = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        hex.push_str(&format!("{b:02x}"));
    }
    match dialect {
        Dialect::Postgres => format!("'\\x{hex}'::bytea"),
        Dialect::MySql => format!("X'{hex}'"),
    }
}

/// PostgreSQL's packed form of a five-character SQLSTATE (`MAKE_SQLSTATE`),
/// or None when `code` is not five characters of `0-9A-Z`.
pub fn packed_sqlstate(code: &str) -> Option<i32> {
    let bytes = code.as_bytes();
    if bytes.len() != 5
        || !bytes
            .iter()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
    {
        return None;
    }
    Some(
        bytes
            .iter()
            .enumerate()
            .map(|(i, b)| ((*b as i32 - '0' as i32) & 0x3f) << (6 * i))
            .sum(),
    )
}

/// How a remote column is read into the local type chosen by the mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalType {
    /// The local PostgreSQL type, as written in `CREATE FOREIGN TABLE`.
    pub sql: String,
    /// True when the remote value is read as text and converted locally
    /// (the remote type has no binary form the wrapper decodes).
    pub via_text: bool,
}

impl LocalType {
    fn exact(sql: impl Into<String>) -> LocalType {
        LocalType {
            sql: sql.into(),
            via_text: false,
        }
    }

    fn text() -> LocalType {
        LocalType {
            sql: "text".into(),
            via_text: true,
        }
    }
}

/// The local type for a remote PostgreSQL column, from the remote
/// `format_type(atttypid, atttypmod)`, whether the type lives in
/// `pg_catalog` and its `typtype` (`b` base, `d` domain, `e` enum, …).
/// Types the wrappers decode exactly keep their name and modifiers;
/// `json` becomes `jsonb`, `varchar(n)`/`char(n)` `text`; enums, domains of other schemas, ranges,
/// network and geometric types and anything unknown become `text`, read
/// through the remote type's own text output, so no value changes.
/// The remote's text is never copied into the result: it is parsed against
/// a fixed grammar and the local type is written by us (a hostile server
/// answering `integer) INHERITS (public.victim` gets `text`).
pub fn postgres_local_type(format_type: &str, in_pg_catalog: bool, typtype: char) -> LocalType {
    if !in_pg_catalog || typtype != 'b' {
        return LocalType::text();
    }
    let t = format_type.trim();
    if t.ends_with("[]") {
        // Arrays travel in their text form: supabase-wrappers reads a NULL
        // array of an INSERT as a value.
        return LocalType::text();
    }
    parse_postgres_type(t).unwrap_or_else(LocalType::text)
}

/// `format_type` text that matches one of the decoded types exactly, as a
/// type we write ourselves; None for anything else.
fn parse_postgres_type(t: &str) -> Option<LocalType> {
    const PLAIN: &[&str] = &[
        "boolean",
        "smallint",
        "integer",
        "bigint",
        "real",
        "double precision",
        "numeric",
        "text",
        "date",
        "time without time zone",
        "timestamp without time zone",
        "timestamp with time zone",
        "interval",
        "jsonb",
        "bytea",
        "uuid",
    ];
    if let Some(plain) = PLAIN.iter().find(|p| **p == t) {
        return Some(LocalType::exact(*plain));
    }
    if t == "json" {
        return Some(LocalType::exact("jsonb"));
    }
    // supabase-wrappers 0.1.28 turns a varchar/bpchar value of an INSERT
    // into NULL; the remote column still enforces the length.
    for name in ["character varying", "character"] {
        let length = t.strip_prefix(name).and_then(modifiers);
        if t == name || length.is_some_and(|m| m.len() == 1) {
            return Some(LocalType::exact("text"));
        }
    }
    if let Some(rest) = t.strip_prefix("numeric") {
        return match modifiers(rest)?.as_slice() {
            [p] if (1..=1000).contains(p) => Some(LocalType::exact(format!("numeric({p})"))),
            [p, s] if (1..=1000).contains(p) && (-1000..=1000).contains(s) => {
                Some(LocalType::exact(format!("numeric({p},{s})")))
            }
            _ => None,
        };
    }
    for (prefix, suffix) in [
        ("time", " without time zone"),
        ("timestamp", " without time zone"),
        ("timestamp", " with time zone"),
    ] {
        if let Some(middle) = t.strip_prefix(prefix).and_then(|r| r.strip_suffix(suffix)) {
            if let Some([p]) = modifiers(middle).as_deref() {
                if (0..=6).contains(p) {
                    return Some(LocalType::exact(format!("{prefix}({p}){suffix}")));
                }
            }
        }
    }
    let fields = t.strip_prefix("interval")?;
    let (fields, precision) = match fields.rfind('(') {
        Some(open) => match modifiers(&fields[open..]).as_deref() {
            Some([p]) if (0..=6).contains(p) => (&fields[..open], Some(*p)),
            _ => return None,
        },
        None => (fields, None),
    };
    const FIELDS: &[&str] = &[
        "",
        " year",
        " month",
        " day",
        " hour",
        " minute",
        " second",
        " year to month",
        " day to hour",
        " day to minute",
        " day to second",
        " hour to minute",
        " hour to second",
        " minute to second",
    ];
    let fields = FIELDS.iter().find(|f| **f == fields)?;
    Some(LocalType::exact(match precision {
        Some(p) => format!("interval{fields}({p})"),
        None => format!("interval{fields}"),
    }))
}

/// `(a)` or `(a,b)` of integers, as `format_type` writes type modifiers;
/// None for anything else.
fn modifiers(text: &str) -> Option<Vec<i64>> {
    let inner = text.strip_prefix('(')?.strip_suffix(')')?;
    inner
        .split(',')
        .map(|n| {
            let n = n.trim();
            let digits = n.strip_prefix('-').unwrap_or(n);
            (!digits.is_empty() && digits.len() <= 4 && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| n.parse().ok())
                .flatten()
        })
        .collect()
}

/// A column as MySQL/MariaDB's `information_schema.COLUMNS` describes it.
#[derive(Debug, Clone, Default)]
pub struct MySqlColumn<'a> {
    /// `DATA_TYPE`, e.g. `decimal`, `int`, `longtext`.
    pub data_type: &'a str,
    /// `COLUMN_TYPE`, e.g. `decimal(12,4) unsigned`, `enum('a','b')`.
    pub column_type: &'a str,
    /// True when MariaDB stores JSON as `longtext` with a `json_valid` check.
    pub is_json: bool,
}

/// The local type for a MySQL/MariaDB column: exact numerics keep precision
/// and scale, unsigned integers widen so every value fits, enum and set
/// become text, JSON jsonb, binary strings bytea, DATETIME a timestamp
/// without time zone (it has none), TIMESTAMP a timestamptz (it is stored
/// in UTC; the wrapper reads it with the session time zone at +00:00),
/// TIME an interval (its range is ±838 hours).
pub fn mysql_local_type(col: &MySqlColumn<'_>) -> LocalType {
    let column_type = col.column_type.to_ascii_lowercase();
    let unsigned = column_type.contains("unsigned");
    // The modifiers, only as integers we parsed (COLUMN_TYPE is the
    // remote's text and never reaches the DDL we write).
    let args = column_type
        .find('(')
        .and_then(|open| {
            column_type[open..]
                .find(')')
                .map(|close| &column_type[open..=open + close])
        })
        .map(|text| modifiers(text).ok_or(()))
        .transpose();
    let Ok(args) = args else {
        return LocalType::text();
    };
    let args = args.unwrap_or_default();
    if col.is_json {
        return LocalType::exact("jsonb");
    }
    let exact = |s: &str| LocalType::exact(s);
    let data_type = col.data_type.to_ascii_lowercase();
    match data_type.as_str() {
        "tinyint" => exact("smallint"),
        "smallint" if unsigned => exact("integer"),
        "smallint" => exact("smallint"),
        "mediumint" => exact("integer"),
        "int" | "integer" if unsigned => exact("bigint"),
        "int" | "integer" => exact("integer"),
        "bigint" if unsigned => exact("numeric(20,0)"),
        "bigint" => exact("bigint"),
        "decimal" | "numeric" => match args.as_slice() {
            [] => exact("numeric(10,0)"),
            [p] if (1..=1000).contains(p) => exact(&format!("numeric({p},0)")),
            [p, s] if (1..=1000).contains(p) && (0..=*p).contains(s) => {
                exact(&format!("numeric({p},{s})"))
            }
            _ => LocalType::text(),
        },
        "float" => exact("real"),
        "double" | "real" => exact("double precision"),
        "bit" if args.is_empty() || args == [1] => exact("boolean"),
        "bit" => exact("bigint"),
        "year" => exact("smallint"),
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => exact("text"),
        "enum" | "set" => exact("text"),
        "json" => exact("jsonb"),
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => exact("bytea"),
        "date" => exact("date"),
        "datetime" | "timestamp" => {
            let zone = if data_type == "datetime" {
                "without"
            } else {
                "with"
            };
            match args.as_slice() {
                [] => exact(&format!("timestamp(0) {zone} time zone")),
                [p] if (0..=6).contains(p) => exact(&format!("timestamp({p}) {zone} time zone")),
                _ => LocalType::text(),
            }
        }
        "time" => exact("interval"),
        "uuid" => exact("uuid"),
        _ => LocalType::text(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PG: Dialect = Dialect::Postgres;
    const MY: Dialect = Dialect::MySql;

    #[test]
    fn identifiers_double_their_quote_character() {
        assert_eq!(quote_ident(PG, "orders").unwrap(), "\"orders\"");
        assert_eq!(quote_ident(PG, "a\"b").unwrap(), "\"a\"\"b\"");
        assert_eq!(quote_ident(MY, "a`b").unwrap(), "`a``b`");
        assert_eq!(
            quote_ident(MY, "x`; DROP TABLE t; --").unwrap(),
            "`x``; DROP TABLE t; --`"
        );
        // The other dialect's quote is an ordinary character.
        assert_eq!(quote_ident(PG, "a`b").unwrap(), "\"a`b\"");
        assert_eq!(quote_ident(MY, "a\"b").unwrap(), "`a\"b`");
        assert_eq!(quote_ident(PG, "Grüße 表").unwrap(), "\"Grüße 表\"");
        assert_eq!(
            quote_qualified(MY, "s`", "t").unwrap(),
            "`s```.`t`".to_string()
        );
    }

    #[test]
    fn identifiers_refuse_nul_and_empty() {
        assert_eq!(
            quote_ident(PG, "a\0b"),
            Err(DialectError::Nul { what: "identifier" })
        );
        assert_eq!(quote_ident(MY, ""), Err(DialectError::EmptyIdentifier));
    }

    #[test]
    fn postgres_literals_read_the_same_under_any_string_setting() {
        assert_eq!(quote_literal(PG, "it's").unwrap(), "'it''s'");
        assert_eq!(quote_literal(PG, "a\\b").unwrap(), "E'a\\\\b'");
        assert_eq!(
            quote_literal(PG, "\\'; DROP TABLE t; --").unwrap(),
            "E'\\\\''; DROP TABLE t; --'"
        );
        assert_eq!(quote_literal(PG, "").unwrap(), "''");
        assert_eq!(quote_literal(PG, "ünï 😀").unwrap(), "'ünï 😀'");
    }

    #[test]
    fn mysql_literals_read_the_same_under_any_sql_mode() {
        // `'a\'b'` would end the literal early without NO_BACKSLASH_ESCAPES.
        assert_eq!(
            quote_literal(MY, "a\\'); DROP TABLE t; -- ").unwrap(),
            "_utf8mb4 X'615c27293b2044524f50205441424c4520743b202d2d20'"
        );
        assert_eq!(quote_literal(MY, "it's").unwrap(), "'it''s'");
        assert_eq!(
            quote_literal(MY, "a\0b"),
            Err(DialectError::Nul { what: "value" })
        );
    }

    #[test]
    fn sqlstates_pack_like_postgres() {
        // ERRCODE_UNIQUE_VIOLATION = MAKE_SQLSTATE('2','3','5','0','5')
        assert_eq!(
            packed_sqlstate("23505"),
            Some(2 | 3 << 6 | 5 << 12 | 5 << 24)
        );
        assert_eq!(packed_sqlstate("00000"), Some(0));
        assert_eq!(packed_sqlstate("HV00N"), Some(24 | 38 << 6 | 30 << 24));
        assert_eq!(packed_sqlstate("2350"), None);
        assert_eq!(packed_sqlstate("2350x"), None);
    }

    #[test]
    fn binary_literals_are_hex() {
        assert_eq!(bytes_literal(MY, &[0, 0x27, 0x5c, 0xff]), "X'00275cff'");
        assert_eq!(bytes_literal(PG, &[0, 0x27]), "'\\x0027'::bytea");
        assert_eq!(bytes_literal(PG, &[]), "'\\x'::bytea");
    }

    #[test]
    fn postgres_types_keep_exact_modifiers() {
        let t = |s| postgres_local_type(s, true, 'b');
        assert_eq!(t("numeric(12,4)").sql, "numeric(12,4)");
        assert_eq!(t("character varying(20)").sql, "text");
        assert_eq!(t("character(3)").sql, "text");
        assert_eq!(
            t("timestamp(3) with time zone").sql,
            "timestamp(3) with time zone"
        );
        assert_eq!(
            t("time(2) without time zone").sql,
            "time(2) without time zone"
        );
        assert_eq!(t("interval").sql, "interval");
        assert_eq!(t("uuid").sql, "uuid");
        assert_eq!(t("bytea").sql, "bytea");
        assert_eq!(t("integer[]"), LocalType::text());
        assert_eq!(t("json"), LocalType::exact("jsonb"));
    }

    #[test]
    fn hostile_type_text_never_reaches_the_ddl() {
        let t = |s| postgres_local_type(s, true, 'b');
        for hostile in [
            "integer) INHERITS (public.victim",
            "numeric(10,2) INHERITS (victim)",
            "numeric(1,2,3)",
            "numeric(99999)",
            "timestamp(3) with time zone, x int",
            "interval day to second(9)",
            "character varying(1); DROP TABLE t",
            "integer ",
        ] {
            let local = t(hostile);
            assert!(
                local == LocalType::text()
                    || !local.sql.contains(['(', ')', ';', ','])
                    || hostile.trim() == local.sql,
                "{hostile:?} -> {local:?}"
            );
            assert!(
                !local.sql.contains("victim") && !local.sql.contains("DROP"),
                "{hostile:?}"
            );
        }
        assert_eq!(t("integer) INHERITS (public.victim"), LocalType::text());
        assert_eq!(
            t("interval day to second(3)").sql,
            "interval day to second(3)"
        );
        assert_eq!(t("numeric(5)").sql, "numeric(5)");
        // Only the integers are kept: the rest of the remote text is dropped.
        assert_eq!(
            my("decimal", "decimal(10,2)) inherits (victim"),
            "numeric(10,2)"
        );
        assert_eq!(my("decimal", "decimal(x)"), "text");
        assert_eq!(my("datetime", "datetime(7)"), "text");
        assert_eq!(
            my("datetime", "datetime(6)"),
            "timestamp(6) without time zone"
        );
    }

    #[test]
    fn postgres_types_without_an_exact_decoder_read_as_text() {
        for ty in [
            "inet",
            "money",
            "xml",
            "tsvector",
            "numeric[]",
            "bit(3)",
            "oid",
        ] {
            assert_eq!(
                postgres_local_type(ty, true, 'b'),
                LocalType::text(),
                "{ty}"
            );
        }
        // Enums, domains and user types of other schemas.
        assert_eq!(postgres_local_type("mood", false, 'e'), LocalType::text());
        assert_eq!(
            postgres_local_type("int4range", true, 'r'),
            LocalType::text()
        );
        assert_eq!(
            postgres_local_type("integer", false, 'd'),
            LocalType::text()
        );
    }

    fn my(data_type: &str, column_type: &str) -> String {
        mysql_local_type(&MySqlColumn {
            data_type,
            column_type,
            is_json: false,
        })
        .sql
    }

    #[test]
    fn mysql_integers_widen_when_unsigned() {
        assert_eq!(my("tinyint", "tinyint(4)"), "smallint");
        assert_eq!(my("tinyint", "tinyint(3) unsigned"), "smallint");
        assert_eq!(my("smallint", "smallint(6)"), "smallint");
        assert_eq!(my("smallint", "smallint(5) unsigned"), "integer");
        assert_eq!(my("mediumint", "mediumint(8) unsigned"), "integer");
        assert_eq!(my("int", "int(11)"), "integer");
        assert_eq!(my("int", "int(10) unsigned"), "bigint");
        assert_eq!(my("bigint", "bigint(20)"), "bigint");
        assert_eq!(my("bigint", "bigint(20) unsigned"), "numeric(20,0)");
        assert_eq!(my("year", "year(4)"), "smallint");
    }

    #[test]
    fn mysql_exact_and_approximate_numbers() {
        assert_eq!(my("decimal", "decimal(12,4)"), "numeric(12,4)");
        assert_eq!(my("decimal", "decimal(65,30) unsigned"), "numeric(65,30)");
        assert_eq!(my("float", "float"), "real");
        assert_eq!(my("double", "double"), "double precision");
        assert_eq!(my("bit", "bit(1)"), "boolean");
        assert_eq!(my("bit", "bit(12)"), "bigint");
    }

    #[test]
    fn mysql_strings_binary_and_json() {
        assert_eq!(my("varchar", "varchar(255)"), "text");
        assert_eq!(my("char", "char(60)"), "text");
        assert_eq!(my("longtext", "longtext"), "text");
        assert_eq!(my("enum", "enum('a','b''c')"), "text");
        assert_eq!(my("set", "set('x','y')"), "text");
        assert_eq!(my("json", "json"), "jsonb");
        assert_eq!(
            mysql_local_type(&MySqlColumn {
                data_type: "longtext",
                column_type: "longtext",
                is_json: true
            })
            .sql,
            "jsonb"
        );
        assert_eq!(my("blob", "blob"), "bytea");
        assert_eq!(my("varbinary", "varbinary(16)"), "bytea");
        assert_eq!(my("uuid", "uuid"), "uuid");
        assert_eq!(my("geometry", "geometry"), "text");
    }

    #[test]
    fn mysql_time_types_keep_their_time_zone_meaning() {
        assert_eq!(my("date", "date"), "date");
        assert_eq!(
            my("datetime", "datetime(6)"),
            "timestamp(6) without time zone"
        );
        assert_eq!(my("datetime", "datetime"), "timestamp(0) without time zone");
        assert_eq!(
            my("timestamp", "timestamp(3)"),
            "timestamp(3) with time zone"
        );
        assert_eq!(my("timestamp", "timestamp"), "timestamp(0) with time zone");
        assert_eq!(my("time", "time(6)"), "interval");
    }
}

/// Whether a PostgreSQL statement can run in a cursor (`DECLARE … CURSOR
/// FOR`), which refuses data-modifying statements, also inside `WITH`:
/// true for a query that names no data-modifying keyword. A false answer
/// for a query (a column named `delete`) only costs reading it whole.
pub fn postgres_query_fits_a_cursor(statement: &str) -> bool {
    let words: Vec<String> = statement
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    match words.first().map(String::as_str) {
        Some("select" | "values" | "table") => true,
        Some("with") => !words
            .iter()
            .any(|w| matches!(w.as_str(), "insert" | "update" | "delete" | "merge")),
        _ => false,
    }
}

#[cfg(test)]
mod cursor_tests {
    use super::postgres_query_fits_a_cursor as fits;

    #[test]
    fn only_queries_without_data_modification_go_in_a_cursor() {
        assert!(fits("SELECT g FROM generate_series(1, 10) g"));
        assert!(fits("  values (1), (2)"));
        assert!(fits("WITH a AS (SELECT 1) SELECT * FROM a"));
        assert!(!fits("INSERT INTO t VALUES (1) RETURNING id"));
        assert!(!fits(
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d"
        ));
        assert!(!fits("update t set a = 1 returning a"));
        assert!(!fits(""));
    }
}
