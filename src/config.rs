//! Command line and environment: what the operator asked for, checked before anything starts.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The address used when neither `--listen`, `HELLO_LISTEN` nor `PORT` is set.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8080);

/// `hello-server`: answers every request with `Hello, World!`.
#[derive(Debug, Parser)]
#[command(name = "hello-server", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub listen: ListenArgs,

    #[command(flatten)]
    pub serve: ServeArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// Parses the command line and environment, or prints why not and exits (2 for a bad
    /// value, 0 for `--help`). clap names the flag even when the bad value came from the
    /// environment, so this adds which variable it was.
    pub fn parse_or_exit() -> Self {
        Self::try_parse().unwrap_or_else(|err| {
            // Printing can only fail if stderr is gone; the exit code still tells.
            let _ = err.print();
            if let Some(variable) = env_source(&err) {
                eprintln!("note: the value came from the environment variable {variable}");
            }
            std::process::exit(err.exit_code())
        })
    }
}

/// The environment variable that supplied the value `err` complains about, if any.
fn env_source(err: &clap::Error) -> Option<String> {
    use clap::CommandFactory;
    use clap::error::{ContextKind, ContextValue};

    let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) else {
        return None;
    };
    let long = arg.strip_prefix("--")?.split([' ', '=']).next()?;
    let flag_given =
        std::env::args().any(|a| a == format!("--{long}") || a.starts_with(&format!("--{long}=")));
    if flag_given {
        return None;
    }
    let command = Cli::command();
    let mut args = command
        .get_arguments()
        .chain(command.get_subcommands().flat_map(|c| c.get_arguments()));
    let variable = args.find(|a| a.get_long() == Some(long))?.get_env()?;
    std::env::var_os(variable).map(|_| variable.to_string_lossy().into_owned())
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Exit 0 if the server answers GET /healthz with 200 within 2 seconds, 1 otherwise.
    Healthcheck {
        /// URL to check [default: http://127.0.0.1:<listen port>/healthz]
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
}

/// Where to listen; shared by serving and `healthcheck`, which derives its URL from it.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Address to listen on, e.g. 0.0.0.0:8080 or [::]:8080 [default: 0.0.0.0:$PORT, else 0.0.0.0:8080]
    #[arg(long, env = "HELLO_LISTEN", value_name = "ADDR", global = true)]
    pub listen: Option<String>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Close connections that have not sent a complete request head in this time (also bounds idle keep-alive)
    #[arg(long, env = "HELLO_HEADER_READ_TIMEOUT", value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// Close connections whose client stops reading responses for this long
    #[arg(long, env = "HELLO_WRITE_TIMEOUT", value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
    pub write_timeout: Duration,

    /// Time in-flight requests get to finish after SIGTERM or SIGINT
    #[arg(long, env = "HELLO_SHUTDOWN_GRACE", value_name = "DUR", default_value = "8s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Keep accepting this long after a shutdown signal, with /readyz answering 503, so load balancers notice
    #[arg(long, env = "HELLO_SHUTDOWN_DELAY", value_name = "DUR", default_value = "0s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,

    /// Connections served at once; further connections wait in the kernel's backlog
    #[arg(long, env = "HELLO_MAX_CONNECTIONS", value_name = "N", default_value = "4096",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// Serve HTTP/2 with prior knowledge (h2c) on the same port as HTTP/1.1
    #[arg(long, env = "HELLO_H2C", value_name = "BOOL", default_value = "true", action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub h2c: bool,

    /// Log format
    #[arg(
        long,
        env = "HELLO_LOG_FORMAT",
        value_name = "FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines
    Text,
    /// One JSON object per line
    Json,
}

/// A setting that parsed but does not make sense; the message names the setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    InvalidListen { value: String, reason: String },
    InvalidPort { value: String, reason: String },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidListen { value, reason } => {
                write!(f, "invalid --listen / HELLO_LISTEN {value:?}: {reason}")
            }
            Self::InvalidPort { value, reason } => write!(f, "invalid PORT {value:?}: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl ListenArgs {
    /// The socket address to listen on: `--listen`/`HELLO_LISTEN`, else `0.0.0.0:$PORT`, else
    /// [`DEFAULT_LISTEN`]. `port_env` is the value of `PORT`, passed in so this stays pure.
    pub fn resolve(&self, port_env: Option<&str>) -> Result<SocketAddr, ConfigError> {
        if let Some(listen) = &self.listen {
            return parse_listen(listen);
        }
        match port_env {
            None => Ok(DEFAULT_LISTEN),
            Some(port) => {
                let port = port
                    .trim()
                    .parse::<u16>()
                    .map_err(|e| ConfigError::InvalidPort {
                        value: port.to_owned(),
                        reason: e.to_string(),
                    })?;
                Ok(SocketAddr::new(DEFAULT_LISTEN.ip(), port))
            }
        }
    }
}

/// Parses `HOST:PORT` with a literal IP (`0.0.0.0:8080`, `[::]:8080`), or a bare `:PORT` as Go
/// writes it. Host names are refused: a server should not depend on DNS to decide where it listens.
pub fn parse_listen(value: &str) -> Result<SocketAddr, ConfigError> {
    let invalid = |reason: &str| ConfigError::InvalidListen {
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    if let Some(port) = value.strip_prefix(':') {
        let port = port
            .parse::<u16>()
            .map_err(|e| invalid(&format!("bad port: {e}")))?;
        return Ok(SocketAddr::new(DEFAULT_LISTEN.ip(), port));
    }
    value
        .parse::<SocketAddr>()
        .map_err(|_| invalid("expected IP:PORT, e.g. 0.0.0.0:8080 or [::]:8080"))
}

/// Parses durations written as a whole number and a unit: `500ms`, `10s`, `1m`.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{value:?} has no unit; write e.g. 500ms, 10s or 1m"))?;
    let (number, unit) = value.split_at(split);
    if number.is_empty() {
        return Err(format!(
            "{value:?} does not start with a number; write e.g. 500ms, 10s or 1m"
        ));
    }
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{number:?} is too large"))?;
    let millis_per_unit = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("unknown unit {unit:?}; use ms, s, m or h")),
    };
    let millis = number
        .checked_mul(millis_per_unit)
        .ok_or_else(|| format!("{value:?} is too large"))?;
    Ok(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_each_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations_are_errors() {
        for bad in [
            "",
            "10",
            "s",
            "-1s",
            "1.5s",
            "10 days",
            "99999999999999999999s",
            "18446744073709551615h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn listen_accepts_ipv4_ipv6_and_bare_port() {
        assert_eq!(
            parse_listen("127.0.0.1:80").unwrap().to_string(),
            "127.0.0.1:80"
        );
        assert_eq!(parse_listen("[::]:8080").unwrap().to_string(), "[::]:8080");
        assert_eq!(parse_listen(":9000").unwrap().to_string(), "0.0.0.0:9000");
    }

    #[test]
    fn listen_rejects_names_and_garbage() {
        for bad in ["nonsense", "localhost:80", "1.2.3.4", ":99999", "[::]", ""] {
            let err = parse_listen(bad).unwrap_err();
            assert!(err.to_string().contains("HELLO_LISTEN"), "{err}");
        }
    }

    #[test]
    fn listen_flag_beats_port_which_beats_default() {
        let flag = ListenArgs {
            listen: Some("127.0.0.1:1".into()),
        };
        assert_eq!(flag.resolve(Some("2")).unwrap().port(), 1);
        let none = ListenArgs { listen: None };
        assert_eq!(none.resolve(Some("2")).unwrap().to_string(), "0.0.0.0:2");
        assert_eq!(none.resolve(None).unwrap(), DEFAULT_LISTEN);
    }

    #[test]
    fn bad_port_names_port() {
        let err = ListenArgs { listen: None }
            .resolve(Some("abc"))
            .unwrap_err();
        assert!(err.to_string().starts_with("invalid PORT \"abc\""), "{err}");
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
