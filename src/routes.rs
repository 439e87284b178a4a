//! Request to response, with no I/O: `Hello, World!` for every path and method, as the Go
//! net/http original answers, plus the health and readiness probes.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};

pub const HELLO: &[u8] = b"Hello, World!";

/// Go's `http.DetectContentType` answer for the body, which Go sends unasked.
const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

/// Answers `request`. `ready` is false once shutdown has begun, so `/readyz` turns 503.
///
/// hyper adds `Content-Length` (from the body) and `Date`, and leaves the body out for `HEAD`,
/// which together give Go's exact status, headers and body.
pub fn respond<B>(request: Request<B>, ready: bool) -> Response<Full<Bytes>> {
    let (status, body): (_, &'static [u8]) = match request.uri().path() {
        "/healthz" => (StatusCode::OK, b"ok"),
        "/readyz" if ready => (StatusCode::OK, b"ready"),
        "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, b"shutting down"),
        _ => (StatusCode::OK, HELLO),
    };
    // The request's header map becomes the response's: hyper recycles each response's map to
    // parse the next request into, so on a keep-alive connection no request allocates (a fresh
    // map cost two mallocs and frees per request, measured with callgrind).
    let mut headers = request.into_parts().0.headers;
    headers.clear();
    headers.insert(CONTENT_TYPE, TEXT_PLAIN);
    let mut response = Response::new(Full::new(Bytes::from_static(body)));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use hyper::Method;

    fn request(method: Method, path: &str) -> Request<()> {
        Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap()
    }

    async fn body(response: Response<Full<Bytes>>) -> Bytes {
        response.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn every_path_and_method_says_hello() {
        for method in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ] {
            for path in ["/", "/index.html", "/a/b?c=d", "/healthzz"] {
                let response = respond(request(method.clone(), path), true);
                assert_eq!(response.status(), StatusCode::OK, "{method} {path}");
                assert_eq!(
                    response.headers()[CONTENT_TYPE],
                    "text/plain; charset=utf-8"
                );
                assert_eq!(body(response).await, HELLO, "{method} {path}");
            }
        }
    }

    #[tokio::test]
    async fn healthz_is_ok_even_while_draining() {
        for ready in [true, false] {
            let response = respond(request(Method::GET, "/healthz"), ready);
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(body(response).await, "ok");
        }
    }

    #[test]
    fn request_headers_do_not_leak_into_the_response() {
        let request = Request::builder()
            .uri("/")
            .header("x-secret", "1")
            .body(())
            .unwrap();
        let response = respond(request, true);
        assert_eq!(response.headers().len(), 1, "{:?}", response.headers());
    }

    #[test]
    fn readyz_follows_readiness() {
        assert_eq!(
            respond(request(Method::GET, "/readyz"), true).status(),
            StatusCode::OK
        );
        assert_eq!(
            respond(request(Method::GET, "/readyz"), false).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
