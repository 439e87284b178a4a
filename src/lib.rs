//! hello-server: an HTTP "Hello, World!" service built for production.
//!
//! - [`config`]: command line and environment, validated before anything starts.
//! - [`server`]: the accept loop, each connection (HTTP/1.1 and h2c, timeouts, limits) and the
//!   graceful drain.
//! - [`io`]: the byte stream under a connection: protocol-detection replay and the timeouts
//!   hyper lacks.
//! - [`routes`]: request to response, pure.
//! - [`shutdown`]: the signals that start the drain.
//! - [`telemetry`]: text or JSON logs.
//! - [`healthcheck`]: the client behind `hello-server healthcheck`.

pub mod config;
pub mod healthcheck;
pub mod io;
pub mod routes;
pub mod server;
pub mod shutdown;
pub mod telemetry;
