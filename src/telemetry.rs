//! Logging: text or JSON lines on stderr, filtered by `RUST_LOG` (default `info`).

use std::fmt;
use std::io::IsTerminal;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// `RUST_LOG` that does not parse.
#[derive(Debug)]
pub struct InvalidLogFilter {
    value: String,
    reason: String,
}

impl fmt::Display for InvalidLogFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid RUST_LOG {:?}: {}", self.value, self.reason)
    }
}

impl std::error::Error for InvalidLogFilter {}

/// Parses `RUST_LOG` directives (`warn`, `hello_server=debug,hyper=info`). The `Targets`
/// filter covers these without `EnvFilter`'s regex engine, which would double the binary.
pub fn log_filter(rust_log: Option<&str>) -> Result<Targets, InvalidLogFilter> {
    match rust_log.map(str::trim) {
        None | Some("") => Ok(Targets::new().with_default(LevelFilter::INFO)),
        Some(value) => {
            value.parse().map_err(
                |e: tracing_subscriber::filter::ParseError| InvalidLogFilter {
                    value: value.to_owned(),
                    reason: e.to_string(),
                },
            )
        }
    }
}

/// Installs the global subscriber; call once, first thing in `main`.
pub fn init(format: LogFormat, filter: Targets) {
    let registry = tracing_subscriber::registry().with(filter);
    // Colour codes only for a person at a terminal, never into `docker logs` or journald.
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => registry.with(layer).init(),
        LogFormat::Json => registry
            .with(layer.json().flatten_event(true).with_current_span(false))
            .init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_filter_is_info() {
        let filter = log_filter(None).unwrap();
        assert!(filter.would_enable("hello_server", &tracing::Level::INFO));
        assert!(!filter.would_enable("hello_server", &tracing::Level::DEBUG));
    }

    #[test]
    fn directives_are_honoured() {
        let filter = log_filter(Some("warn,hello_server=debug")).unwrap();
        assert!(filter.would_enable("hello_server::server", &tracing::Level::DEBUG));
        assert!(!filter.would_enable("hyper", &tracing::Level::INFO));
    }

    #[test]
    fn garbage_is_an_error_naming_rust_log() {
        let err = log_filter(Some("hello=loud")).unwrap_err();
        assert!(err.to_string().starts_with("invalid RUST_LOG"), "{err}");
    }
}
