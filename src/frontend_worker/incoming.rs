//! The request as the runtime hands it to the Worker, read only where the
//! Worker looks.
//!
//! workers-rs's `Request::from` also reads the request's `cf` object on every
//! request — in production about thirty properties about the client's network,
//! none of which idemgate uses, each read a call into the runtime. Here the
//! method, the path and the headers are read once each (the headers all in one
//! call, the first time one is asked for), and nothing else.

use crate::commands::plan::Plan;
use crate::commands::Keyed;
use crate::config::Config;
use std::cell::OnceCell;
use worker::worker_sys::web_sys;
use worker::{Method, Url};

pub struct Incoming {
    raw: web_sys::Request,
    method: String,
    path: String,
    /// Every header (names in lowercase), read on the first ask.
    headers: OnceCell<Vec<(String, String)>>,
}

impl Incoming {
    pub fn new(raw: web_sys::Request) -> Self {
        Incoming {
            method: raw.method(),
            path: path_of(&raw.url()).to_string(),
            headers: OnceCell::new(),
            raw,
        }
    }

    /// The method as sent (`QUERY`, `PROPFIND` and the like included).
    pub fn method_name(&self) -> &str {
        &self.method
    }

    /// The method as workers-rs names it (one it does not know reads as GET).
    pub fn method(&self) -> Method {
        Method::from(self.method.clone())
    }

    /// The URL's path, percent-encoded as sent.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The headers a caller is resolved from (`isolate::resolve_caller`).
    pub fn credentials(&self) -> super::isolate::Credentials {
        super::isolate::Credentials {
            authorization: self.header("authorization"),
            access: self.header(crate::auth::ACCESS_HEADER),
        }
    }

    /// One header's value (`name` in lowercase), as `Headers.get` reads it.
    pub fn header(&self, name: &'static str) -> Option<String> {
        let headers = self.headers.get_or_init(|| {
            crate::http::parse_header_lines(&crate::js::header_lines(&self.raw.headers()))
        });
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    /// The whole URL, parsed (for a route that reads the query).
    pub fn url(&self) -> Option<Url> {
        Url::parse(&self.raw.url()).ok()
    }

    /// The body as a stream, unread (none for an empty body).
    pub fn body_stream(&self) -> Option<web_sys::ReadableStream> {
        self.raw.body()
    }

    /// The request's [`Plan`], from its method, path and headers.
    pub fn plan(&self, keyed: Option<&Keyed>, cfg: &Config) -> Plan {
        Plan::of(self.method_name(), keyed, cfg, &|name| self.header(name))
    }

    /// The body, by one `arrayBuffer()`.
    pub async fn bytes(&self) -> worker::Result<Vec<u8>> {
        let body = js_sys::futures::JsFuture::from(self.raw.array_buffer()?).await?;
        Ok(js_sys::Uint8Array::new(&body).to_vec())
    }
}

/// The path of a URL as the runtime serializes it (`scheme://authority/path?query`):
/// from the first `/` after the authority up to the query or fragment; `/` when
/// there is none.
fn path_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[after_scheme..];
    let Some(start) = rest.find(['/', '?', '#']) else {
        return "/";
    };
    let path = &rest[start..];
    let path = &path[..path.find(['?', '#']).unwrap_or(path.len())];
    if path.is_empty() {
        "/"
    } else {
        path
    }
}

#[cfg(test)]
mod tests {
    use super::path_of;

    #[test]
    fn the_path_is_what_lies_between_the_authority_and_the_query() {
        for (url, path) in [
            (
                "https://idemgate.example/functions/v1/echo",
                "/functions/v1/echo",
            ),
            (
                "https://idemgate.example/v1/training-jobs?status=queued&limit=5",
                "/v1/training-jobs",
            ),
            ("http://127.0.0.1:8787/healthz#top", "/healthz"),
            ("https://idemgate.example", "/"),
            ("https://idemgate.example/", "/"),
            ("https://idemgate.example?x=/y", "/"),
            (
                "https://user:pw@idemgate.example:443/v1/idempotency/keys/a%2Fb",
                "/v1/idempotency/keys/a%2Fb",
            ),
            (
                "https://idemgate.example//double//slashes/",
                "//double//slashes/",
            ),
            ("https://idemgate.example/a?b#c?d", "/a"),
        ] {
            assert_eq!(path_of(url), path, "{url}");
        }
    }

    #[test]
    fn the_path_matches_the_url_crates_reading_of_every_url_the_runtime_could_send() {
        use worker::Url;
        let hosts = [
            "https://h.example",
            "http://127.0.0.1:8787",
            "https://u@h.example:1",
        ];
        let paths = [
            "",
            "/",
            "/a",
            "/a/b/",
            "/%20x",
            "/a;b",
            "/a,b",
            "/:@!$&'()*+",
        ];
        let tails = ["", "?", "?q=1", "?q=/a?b", "#", "#f", "?q#f"];
        for h in hosts {
            for p in paths {
                for t in tails {
                    let url = Url::parse(&format!("{h}{p}{t}")).unwrap();
                    assert_eq!(path_of(url.as_str()), url.path(), "{url}");
                }
            }
        }
    }
}
