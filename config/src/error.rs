//! Errors from loading and validating a config file.
//!
//! Every variant names the file; [`ConfigError::Field`] also names the offending field by its
//! dotted path as written in TOML (`cache.memory_mb`, `cluster.bootstrap[0]`, `plugins.royalty`).

use std::io;
use std::path::{Path, PathBuf};

/// Why a config file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read config file: {source}", file.display())]
    Read {
        /// The path that was being read.
        file: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// The file is not valid TOML.
    #[error("{}: invalid TOML: {message}", file.display())]
    Syntax {
        /// The file being parsed.
        file: PathBuf,
        /// The TOML parser's message, including line and column and a source excerpt.
        message: String,
    },
    /// A field is missing, unknown, of the wrong type or has an invalid value.
    #[error("{}: field `{field}`: {problem}", file.display())]
    Field {
        /// The file being parsed.
        file: PathBuf,
        /// Dotted path of the field, e.g. `cluster.bootstrap[0]`.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl ConfigError {
    /// The file this error is about.
    pub fn file(&self) -> &Path {
        match self {
            ConfigError::Read { file, .. }
            | ConfigError::Syntax { file, .. }
            | ConfigError::Field { file, .. } => file,
        }
    }

    /// The dotted field path, for [`ConfigError::Field`].
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Field { field, .. } => Some(field),
            _ => None,
        }
    }

    pub(crate) fn field_error(
        file: &Path,
        field: impl Into<String>,
        problem: impl Into<String>,
    ) -> Self {
        ConfigError::Field {
            file: file.to_owned(),
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// Converts a deserialization error (after the text is known to be valid TOML) into a
    /// field error naming the dotted path.
    pub(crate) fn from_deserialize(
        err: serde_path_to_error::Error<toml::de::Error>,
        file: &Path,
        text: &str,
    ) -> Self {
        let path = err.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let inner = err.into_inner();
        let message = inner.message();

        let position = inner
            .span()
            .map(|span| {
                let (line, column) = line_column(text, span.start);
                format!(" (line {line}, column {column})")
            })
            .unwrap_or_default();

        if let Some((name, rest)) = backticked_after(message, "unknown field ") {
            // serde says "expected `a`", "expected `a` or `b`" or "expected one of `a`, `b`, `c`";
            // normalise to the last form.
            let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
            let problem = if expected.is_empty() {
                format!("unknown field; this table takes no fields{position}")
            } else {
                format!(
                    "unknown field; expected one of `{}`{position}",
                    expected.join("`, `")
                )
            };
            return Self::field_error(file, append_segment(&path, name), problem);
        }
        if let Some((name, _)) = backticked_after(message, "missing field ") {
            return Self::field_error(
                file,
                append_segment(&path, name),
                "required field is missing",
            );
        }

        if path.is_empty() {
            // Not attributable to a field; should not happen for documents that parsed as TOML.
            return ConfigError::Syntax {
                file: file.to_owned(),
                message: inner.to_string().trim_end().to_owned(),
            };
        }
        Self::field_error(file, path, format!("{message}{position}"))
    }

    /// Wraps a TOML parse error, keeping its line/column report.
    pub(crate) fn syntax(file: &Path, err: &toml::de::Error) -> Self {
        ConfigError::Syntax {
            file: file.to_owned(),
            message: err.to_string().trim_end().to_owned(),
        }
    }
}

/// For `"<prefix>`name`<rest>"` returns `(name, rest)`.
fn backticked_after<'a>(message: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    let after = message.strip_prefix(prefix)?.strip_prefix('`')?;
    let (name, rest) = after.split_once('`')?;
    Some((name, rest))
}

/// `path` + `.name`, unless `path` already ends with that segment (serde_path_to_error records
/// the key before the unknown-field check fails).
fn append_segment(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else if path == name || path.ends_with(&format!(".{name}")) {
        path.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// 1-based line and column (in characters) of byte offset `at`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_display_format() {
        let e = ConfigError::field_error(Path::new("/etc/mhc.toml"), "cache.disk_gb", "too big");
        assert_eq!(
            e.to_string(),
            "/etc/mhc.toml: field `cache.disk_gb`: too big"
        );
        assert_eq!(e.field(), Some("cache.disk_gb"));
        assert_eq!(e.file(), Path::new("/etc/mhc.toml"));
    }

    #[test]
    fn read_display_names_file() {
        let e = ConfigError::Read {
            file: "/nope.toml".into(),
            source: io::Error::new(io::ErrorKind::NotFound, "gone"),
        };
        let s = e.to_string();
        assert!(s.starts_with("/nope.toml: "), "{s}");
        assert!(s.contains("gone"), "{s}");
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(e.field(), None);
    }

    #[test]
    fn helpers() {
        assert_eq!(append_segment("", "role"), "role");
        assert_eq!(append_segment("cache", "memry_mb"), "cache.memry_mb");
        assert_eq!(
            append_segment("cache.memry_mb", "memry_mb"),
            "cache.memry_mb"
        );
        assert_eq!(append_segment("memry_mb", "memry_mb"), "memry_mb");
        assert_eq!(line_column("a\nbc\nd", 0), (1, 1));
        assert_eq!(line_column("a\nbc\nd", 3), (2, 2));
        assert_eq!(line_column("a\nbc\nd", 5), (3, 1));
        assert_eq!(
            backticked_after("unknown field `x`, expected `y`", "unknown field "),
            Some(("x", ", expected `y`"))
        );
        assert_eq!(backticked_after("invalid type", "unknown field "), None);
    }
}
