//! `hello-server healthcheck`: a GET that needs no curl, for images without a shell.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::header::HOST;
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How long the whole check may take, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub enum HealthcheckError {
    InvalidUrl { url: String, reason: String },
    Connect { url: String, source: std::io::Error },
    Http { url: String, source: hyper::Error },
    Status { url: String, status: StatusCode },
    Timeout { url: String },
}

impl fmt::Display for HealthcheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidUrl { url, reason } => write!(f, "invalid --url {url:?}: {reason}"),
            Self::Connect { url, source } => write!(f, "cannot connect to {url}: {source}"),
            Self::Http { url, source } => write!(f, "request to {url} failed: {source}"),
            Self::Status { url, status } => write!(f, "{url} answered {status}"),
            Self::Timeout { url } => write!(f, "{url} did not answer within {TIMEOUT:?}"),
        }
    }
}

impl std::error::Error for HealthcheckError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Connect { source, .. } => Some(source),
            Self::Http { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The URL checked by default: `/healthz` on the port the server listens on, over loopback
/// when it listens on every address.
pub fn default_url(listen: SocketAddr) -> String {
    let host = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}/healthz", SocketAddr::new(host, listen.port()))
}

/// GETs `url` and succeeds on 200 within [`TIMEOUT`].
pub async fn check(url: &str) -> Result<(), HealthcheckError> {
    tokio::time::timeout(TIMEOUT, get(url))
        .await
        .unwrap_or_else(|_| {
            Err(HealthcheckError::Timeout {
                url: url.to_owned(),
            })
        })
}

async fn get(url: &str) -> Result<(), HealthcheckError> {
    let invalid = |reason: &str| HealthcheckError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = url
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| invalid(&e.to_string()))?;
    if uri.scheme_str() != Some("http") {
        return Err(invalid("only http:// URLs are supported"));
    }
    let authority = uri.authority().ok_or_else(|| invalid("no host"))?.clone();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(80);

    let stream =
        TcpStream::connect((host, port))
            .await
            .map_err(|source| HealthcheckError::Connect {
                url: url.to_owned(),
                source,
            })?;
    let http = |source| HealthcheckError::Http {
        url: url.to_owned(),
        source,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    tokio::spawn(connection);

    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = Request::get(path)
        .header(HOST, authority.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|e| invalid(&e.to_string()))?;
    let status = sender.send_request(request).await.map_err(http)?.status();
    if status == StatusCode::OK {
        Ok(())
    } else {
        Err(HealthcheckError::Status {
            url: url.to_owned(),
            status,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_url_uses_loopback_for_wildcard_addresses() {
        assert_eq!(
            default_url("0.0.0.0:8080".parse().unwrap()),
            "http://127.0.0.1:8080/healthz"
        );
        assert_eq!(
            default_url("[::]:9000".parse().unwrap()),
            "http://[::1]:9000/healthz"
        );
        assert_eq!(
            default_url("10.1.2.3:81".parse().unwrap()),
            "http://10.1.2.3:81/healthz"
        );
    }

    #[tokio::test]
    async fn non_http_urls_are_refused() {
        for url in [
            "https://127.0.0.1/healthz",
            "127.0.0.1:8080",
            "http://",
            "not a url",
        ] {
            let err = check(url).await.unwrap_err();
            assert!(
                matches!(err, HealthcheckError::InvalidUrl { .. }),
                "{url}: {err}"
            );
        }
    }
}
