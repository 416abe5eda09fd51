//! Reading a service's configuration the way systemd does: the unit file, its drop-ins, the
//! quoting rules of `Environment=`, and `EnvironmentFile=` contents.
//!
//! Only what vgpuctl needs is modelled: `[Service]` `Environment=`, `EnvironmentFile=` and
//! `User=`. Specifiers other than `%%` are left unexpanded.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::paths::{self, Root};

/// One `Key=Value` line of a unit file (continuation lines joined).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitEntry {
    /// Section name without brackets.
    pub section: String,
    /// Key.
    pub key: String,
    /// Raw value, not unquoted.
    pub value: String,
}

/// Parses unit-file text into entries. Comments (`#`, `;`) and blank lines are skipped; a line
/// ending in `\` continues on the next line (joined with a space, as systemd does).
pub fn parse_unit(text: &str) -> Vec<UnitEntry> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut pending = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with(';'))
        {
            continue;
        }
        if let Some(stripped) = line.strip_suffix('\\') {
            pending.push_str(stripped);
            pending.push(' ');
            continue;
        }
        let full = if pending.is_empty() {
            line.to_string()
        } else {
            let mut p = std::mem::take(&mut pending);
            p.push_str(line);
            p
        };
        if full.starts_with('[') && full.ends_with(']') {
            section = full[1..full.len() - 1].to_string();
            continue;
        }
        if let Some((k, v)) = full.split_once('=') {
            out.push(UnitEntry {
                section: section.clone(),
                key: k.trim().to_string(),
                value: v.trim().to_string(),
            });
        }
    }
    out
}

/// Splits a value into words with systemd's rules (`extract_first_word` with unquoting and
/// C unescaping): whitespace separates; `"…"` and `'…'` group; `\` escapes (`\n`, `\t`, `\xNN`,
/// `\\`, `\"`, …); `%%` becomes `%`.
pub fn split_words(value: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('n') => cur.push('\n'),
                    Some('t') => cur.push('\t'),
                    Some('r') => cur.push('\r'),
                    Some('a') => cur.push('\x07'),
                    Some('b') => cur.push('\x08'),
                    Some('f') => cur.push('\x0c'),
                    Some('v') => cur.push('\x0b'),
                    Some('s') => cur.push(' '),
                    Some('x') => {
                        let hex: String = chars.by_ref().take(2).collect();
                        match u8::from_str_radix(&hex, 16) {
                            Ok(b) => cur.push(char::from(b)),
                            Err(_) => {
                                cur.push_str("\\x");
                                cur.push_str(&hex);
                            }
                        }
                    }
                    Some(other) => cur.push(other),
                    None => cur.push('\\'),
                }
            }
            '%' if chars.peek() == Some(&'%') => {
                chars.next();
                in_word = true;
                cur.push('%');
            }
            '"' | '\'' if quote.is_none() => {
                quote = Some(c);
                in_word = true;
            }
            c if Some(c) == quote => quote = None,
            c if quote.is_none() && c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// Quotes one `NAME=value` assignment for an `Environment=` line so that [`split_words`] gives
/// it back unchanged.
pub fn quote_assignment(name: &str, value: &str) -> String {
    let mut s = String::from("\"");
    for c in name
        .chars()
        .chain(std::iter::once('='))
        .chain(value.chars())
    {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '%' => s.push_str("%%"),
            '\n' => s.push_str("\\n"),
            '\t' => s.push_str("\\t"),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// Parses an environment file (`EnvironmentFile=` format): `KEY=VALUE` lines, `#`/`;` comments,
/// double quotes (with `\` escapes), single quotes (literal), unquoted values trimmed.
pub fn parse_env_file(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let mut val = String::new();
        let mut chars = v.chars();
        let mut quote: Option<char> = None;
        while let Some(c) = chars.next() {
            match (quote, c) {
                (None, '"') | (None, '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (Some('\''), c) => val.push(c),
                (_, '\\') => {
                    if let Some(n) = chars.next() {
                        val.push(n);
                    }
                }
                (_, c) => val.push(c),
            }
        }
        out.push((k.trim().to_string(), val));
    }
    out
}

/// Quotes a value for an environment file so that [`parse_env_file`] (and systemd) read it back.
pub fn quote_env_file_value(value: &str) -> String {
    let mut s = String::from("\"");
    for c in value.chars() {
        if matches!(c, '\\' | '"' | '$' | '`') {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    s
}

/// One file that contributes to a unit's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSource {
    /// Target-system path.
    pub path: PathBuf,
    /// Parsed entries.
    pub entries: Vec<UnitEntry>,
}

/// An `EnvironmentFile=` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFileRef {
    /// Target-system path of the file.
    pub path: PathBuf,
    /// Whether a leading `-` makes a missing file acceptable.
    pub optional: bool,
    /// The unit file or drop-in that named it.
    pub named_in: PathBuf,
}

/// Where a variable's effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// An `Environment=` line in this file.
    Environment(PathBuf),
    /// An `EnvironmentFile=` file with this path.
    EnvironmentFile(PathBuf),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Environment(p) => write!(f, "Environment= in {}", p.display()),
            Self::EnvironmentFile(p) => write!(f, "EnvironmentFile {}", p.display()),
        }
    }
}

/// The loaded configuration of one service: unit file first, then drop-ins in systemd's order.
#[derive(Debug, Clone, Default)]
pub struct ServiceConfig {
    /// Unit file and drop-ins, in the order systemd applies them.
    pub sources: Vec<ConfigSource>,
}

impl ServiceConfig {
    /// Loads `service`'s unit file and drop-ins under `root`. Files that cannot be read are
    /// skipped (a missing unit file gives an empty unit file slot).
    pub fn load(root: &Root, service: &str) -> Self {
        let unit = paths::unit_name(service);
        let mut sources = Vec::new();
        for dir in paths::UNIT_DIRS {
            let p = Path::new(dir).join(&unit);
            if let Ok(text) = fs::read_to_string(root.resolve(&p)) {
                sources.push(ConfigSource {
                    entries: parse_unit(&text),
                    path: p,
                });
                break;
            }
        }
        // Drop-ins: by file name across all directories; a name in a higher-priority directory
        // masks the same name below. Type-wide `service.d/` drop-ins apply too.
        let mut by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
        for dir in paths::UNIT_DIRS.iter().rev() {
            for sub in ["service.d".to_string(), format!("{unit}.d")] {
                let d = Path::new(dir).join(sub);
                let Ok(rd) = fs::read_dir(root.resolve(&d)) else {
                    continue;
                };
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.ends_with(".conf") {
                        by_name.insert(name.clone(), d.join(&name));
                    }
                }
            }
        }
        for p in by_name.into_values() {
            if let Ok(text) = fs::read_to_string(root.resolve(&p)) {
                sources.push(ConfigSource {
                    entries: parse_unit(&text),
                    path: p,
                });
            }
        }
        Self { sources }
    }

    /// The same configuration without the sources for which `skip` returns true.
    pub fn without(&self, skip: impl Fn(&Path) -> bool) -> Self {
        Self {
            sources: self
                .sources
                .iter()
                .filter(|s| !skip(&s.path))
                .cloned()
                .collect(),
        }
    }

    fn service_values<'a>(&'a self, key: &'a str) -> impl Iterator<Item = (&'a Path, &'a str)> {
        self.sources.iter().flat_map(move |s| {
            s.entries
                .iter()
                .filter(move |e| e.section == "Service" && e.key == key)
                .map(move |e| (s.path.as_path(), e.value.as_str()))
        })
    }

    /// `User=` (last one wins), or `None` for root.
    pub fn user(&self) -> Option<String> {
        self.service_values("User")
            .last()
            .map(|(_, v)| v.to_string())
            .filter(|v| !v.is_empty() && v != "root" && v != "0")
    }

    /// `Environment=` assignments in effect, with the file that set each (empty value resets).
    pub fn environment(&self) -> BTreeMap<String, (String, PathBuf)> {
        let mut env = BTreeMap::new();
        for (path, value) in self.service_values("Environment") {
            if value.is_empty() {
                env.clear();
                continue;
            }
            for w in split_words(value) {
                if let Some((k, v)) = w.split_once('=') {
                    env.insert(k.to_string(), (v.to_string(), path.to_path_buf()));
                }
            }
        }
        env
    }

    /// `EnvironmentFile=` references in effect (empty value resets).
    pub fn environment_files(&self) -> Vec<EnvFileRef> {
        let mut files = Vec::new();
        for (path, value) in self.service_values("EnvironmentFile") {
            if value.is_empty() {
                files.clear();
                continue;
            }
            for w in split_words(value) {
                let (optional, p) = match w.strip_prefix('-') {
                    Some(rest) => (true, rest.to_string()),
                    None => (false, w),
                };
                files.push(EnvFileRef {
                    path: PathBuf::from(p),
                    optional,
                    named_in: path.to_path_buf(),
                });
            }
        }
        files
    }

    /// The effective value of `name` and where it came from: `EnvironmentFile=` files (read under
    /// `root`, in order) override `Environment=`, as in systemd.
    pub fn effective(&self, root: &Root, name: &str) -> Option<(String, Origin)> {
        let mut found = self
            .environment()
            .remove(name)
            .map(|(v, p)| (v, Origin::Environment(p)));
        for f in self.environment_files() {
            let Ok(text) = fs::read_to_string(root.resolve(&f.path)) else {
                continue;
            };
            for (k, v) in parse_env_file(&text) {
                if k == name {
                    found = Some((v, Origin::EnvironmentFile(f.path.clone())));
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_with_systemd_quoting() {
        assert_eq!(
            split_words(r#""LD_PRELOAD=/a b.so" FOO=bar 'X=y z' Q=a\"b P=100%%"#),
            vec!["LD_PRELOAD=/a b.so", "FOO=bar", "X=y z", "Q=a\"b", "P=100%"]
        );
        assert_eq!(split_words(r#"A="x y"z"#), vec!["A=x yz"]);
        assert_eq!(split_words(r"T=a\tb"), vec!["T=a\tb"]);
    }

    #[test]
    fn quoting_round_trips() {
        for v in ["/usr/lib64/libvgpu-cuda.so", "a b\"c\\d%e", "x\ny"] {
            let q = quote_assignment("LD_PRELOAD", v);
            assert_eq!(split_words(&q), vec![format!("LD_PRELOAD={v}")], "{q}");
            let e = format!("K={}", quote_env_file_value(v));
            if !v.contains('\n') {
                assert_eq!(parse_env_file(&e), vec![("K".to_string(), v.to_string())]);
            }
        }
    }

    #[test]
    fn parses_continuations_and_sections() {
        let u = parse_unit("[Unit]\n# c\nDescription=x\n[Service]\nEnvironment=A=1 \\\n  B=2\n");
        assert_eq!(u.len(), 2);
        assert_eq!(u[1].section, "Service");
        assert_eq!(split_words(&u[1].value), vec!["A=1", "B=2"]);
    }

    #[test]
    fn env_file_parsing() {
        let got = parse_env_file("# c\nLD_PRELOAD=\"/x.so /y.so\"\nexport B='q\\w'\nC = plain \n");
        assert_eq!(
            got,
            vec![
                ("LD_PRELOAD".into(), "/x.so /y.so".into()),
                ("B".into(), "q\\w".into()),
                ("C".into(), "plain".into())
            ]
        );
    }
}
