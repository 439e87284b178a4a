//! Minimal actix-web 4 "Hello, World!" peer. Listens on $HELLO_LISTEN
//! (HTTP/1.1 and h2c prior knowledge on the same port), one worker: the
//! harness pins it to one CPU.
use actix_web::{web, App, HttpResponse, HttpServer};

async fn hello() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain")
        .body("Hello, World!")
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::var("HELLO_LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".into());
    HttpServer::new(|| App::new().default_service(web::to(hello)))
        .workers(1)
        .bind_auto_h2c(addr)?
        .run()
        .await
}
