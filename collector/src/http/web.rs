//! The operations dashboard's files. They are compiled into the binary so the
//! page works on a gateway-less, internet-less control-room network; setting
//! `CITYSENSE_WEB_DIR` serves them from that directory instead, for
//! dashboard development without a rebuild.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// (name under /assets/, content type, bytes). index.html is served at `/`.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("index.html", "text/html; charset=utf-8", include_bytes!("web/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("web/app.js")),
    ("layout.js", "text/javascript; charset=utf-8", include_bytes!("web/layout.js")),
    ("app.css", "text/css; charset=utf-8", include_bytes!("web/app.css")),
    ("vendor/uPlot.iife.min.js", "text/javascript; charset=utf-8", include_bytes!("web/vendor/uPlot.iife.min.js")),
    ("vendor/uPlot.min.css", "text/css; charset=utf-8", include_bytes!("web/vendor/uPlot.min.css")),
];

fn serve(name: &str) -> Response {
    let Some((_, ctype, bytes)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let body: Vec<u8> = match std::env::var_os("CITYSENSE_WEB_DIR") {
        Some(dir) => match std::fs::read(std::path::Path::new(&dir).join(name)) {
            Ok(b) => b,
            Err(e) => return (StatusCode::NOT_FOUND, format!("{name}: {e}")).into_response(),
        },
        None => bytes.to_vec(),
    };
    // The files change only with the binary; `no-cache` still lets the browser revalidate after an upgrade.
    ([(header::CONTENT_TYPE, *ctype), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

pub async fn index() -> Response {
    serve("index.html")
}

pub async fn asset(Path(name): Path<String>) -> Response {
    serve(&name)
}
