//! Logs as every Kokoa program writes them: to standard error, filtered by `KOKOA_LOG`
//! (`RUST_LOG` still counts; default `info`), as text or as one JSON object per line for a
//! log collector.
//!
//! A filter is a level and `target=level` directives, e.g. `info,kokoa_wg=debug` (tracing's
//! `Targets`: no span or field filters, which would link a regular-expression engine into
//! every program for them). One that does not parse counts as unset.

use std::{fmt, io::IsTerminal as _, str::FromStr};

use tracing_subscriber::{
    filter::{LevelFilter, Targets},
    prelude::*,
};

/// How log lines are written (`--log-format`, or `KOKOA_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines, coloured on a terminal.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and the event's
    /// fields at the top level.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "unknown log format {other:?}: use \"text\" or \"json\""
            )),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// Installs the process's log writer; call once, first thing in `main`.
pub fn init(format: LogFormat) {
    let filter = filter(|name| std::env::var(name).ok());
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(LevelFilter::TRACE);
    match format {
        LogFormat::Text => logs
            .with_ansi(std::io::stderr().is_terminal())
            .finish()
            .with(filter)
            .init(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .finish()
            .with(filter)
            .init(),
    }
}

/// The filter `KOKOA_LOG` names, else `RUST_LOG`, else `info`; `var` reads the environment.
fn filter(var: impl Fn(&str) -> Option<String>) -> Targets {
    ["KOKOA_LOG", "RUST_LOG"]
        .into_iter()
        .filter_map(var)
        .filter(|text| !text.trim().is_empty())
        .find_map(|text| text.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_back_from_their_names_and_others_are_named_in_the_error() {
        for format in [LogFormat::Text, LogFormat::Json] {
            assert_eq!(format.to_string().parse::<LogFormat>(), Ok(format));
        }
        let error = "xml".parse::<LogFormat>().unwrap_err();
        assert!(error.contains("\"xml\""), "{error}");
    }

    #[test]
    fn the_filter_comes_from_kokoa_log_then_rust_log_then_is_info() {
        use tracing::Level;
        let with = |kokoa: Option<&str>, rust: Option<&str>| {
            filter(|name| match name {
                "KOKOA_LOG" => kokoa.map(String::from),
                "RUST_LOG" => rust.map(String::from),
                _ => None,
            })
        };
        let f = with(Some("warn,kokoa_wg=debug"), Some("trace"));
        assert!(f.would_enable("kokoa_wg::apply", &Level::DEBUG));
        assert!(!f.would_enable("kokoa_origin", &Level::INFO));
        assert!(f.would_enable("kokoa_origin", &Level::WARN));
        let f = with(None, Some("debug"));
        assert!(f.would_enable("kokoa_origin", &Level::DEBUG));
        for (kokoa, rust) in [(None, None), (Some(""), None), (Some("=nonsense=="), None)] {
            let f = with(kokoa, rust);
            assert!(f.would_enable("kokoa_origin", &Level::INFO), "{kokoa:?}");
            assert!(!f.would_enable("kokoa_origin", &Level::DEBUG), "{kokoa:?}");
        }
    }
}
