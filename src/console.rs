//! The approvers' console: a static page (`GET /console`), its script
//! (`/console/app.js`), its style sheet (`/console/app.css`) and its icon
//! (`/console/favicon.svg`), compiled into the Worker with `include_str!` — no
//! build step, no third-party origin.
//!
//! The page holds no data: it needs no auth. The script asks for a bearer token,
//! keeps it in the tab's `sessionStorage`, and calls only this Worker's own
//! staging API with it. Security rests on the headers below as much as on the
//! script: the Content-Security-Policy allows scripts, styles and `fetch` from
//! this origin only, no inline script, no plugin, no framing, and requires
//! Trusted Types with no policy — so an HTML string can never reach an HTML sink
//! (`innerHTML` throws), and export data, which comes from preparers and may
//! hold markup, is only ever written as text.

/// One static file of the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static str,
}

const PAGE: Asset = Asset {
    content_type: "text/html; charset=utf-8",
    body: include_str!("console/index.html"),
};
const SCRIPT: Asset = Asset {
    content_type: "text/javascript; charset=utf-8",
    body: include_str!("console/app.js"),
};
const STYLE: Asset = Asset {
    content_type: "text/css; charset=utf-8",
    body: include_str!("console/app.css"),
};
/// The tab's icon: plain shapes, no script, no style element, nothing external
/// (loaded as an image, under the page's `img-src 'self'`).
const ICON: Asset = Asset {
    content_type: "image/svg+xml",
    body: include_str!("console/favicon.svg"),
};

/// The path segments that belong to the console (the first one).
pub const PREFIX: &str = "console";

/// The console's file at `segments` (the path split on `/`, without the leading
/// empty one and any trailing slash), if there is one.
pub fn asset(segments: &[&str]) -> Option<Asset> {
    match segments {
        [PREFIX] => Some(PAGE),
        [PREFIX, "app.js"] => Some(SCRIPT),
        [PREFIX, "app.css"] => Some(STYLE),
        [PREFIX, "favicon.svg"] => Some(ICON),
        _ => None,
    }
}

/// What the page may load and do: its own script, style and API, nothing else.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'none'; \
     base-uri 'none'; frame-ancestors 'none'; require-trusted-types-for 'script'; \
     trusted-types 'none'";

/// Headers sent with every console file. `no-store`: the page, its script, its
/// style and its icon always come from the deployed Worker together, never a
/// stale mix.
pub const HEADERS: [(&str, &str); 6] = [
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("cache-control", "no-store"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("cross-origin-opener-policy", "same-origin"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_its_script_and_its_style_are_served_with_their_types() {
        assert_eq!(asset(&["console"]).unwrap().content_type, PAGE.content_type);
        assert!(asset(&["console", "app.js"])
            .unwrap()
            .content_type
            .starts_with("text/javascript"));
        assert!(asset(&["console", "app.css"])
            .unwrap()
            .content_type
            .starts_with("text/css"));
        assert_eq!(
            asset(&["console", "favicon.svg"]).unwrap().content_type,
            "image/svg+xml"
        );
        for other in [
            &["console", "index.html"][..],
            &["console", "app.js", "x"],
            &["console", "..", "app.js"],
            &["consoles"],
            &["console", "favicon.ico"],
            &["console", "favicon.svg", "x"],
        ] {
            assert_eq!(asset(other), None, "{other:?}");
        }
    }

    #[test]
    fn the_page_loads_only_its_own_script_and_style_and_nothing_inline() {
        let page = PAGE.body;
        assert!(page.contains(r#"<script src="/console/app.js""#));
        assert!(page.contains(r#"<link rel="stylesheet" href="/console/app.css">"#));
        assert!(
            page.contains(r#"<link rel="icon" href="/console/favicon.svg" type="image/svg+xml">"#)
        );
        // One script element, with a src: nothing inline for the policy to block.
        assert_eq!(page.matches("<script").count(), 1);
        assert!(!page.contains(" style=") && !page.contains("<style"));
        assert!(!has_event_handler_attribute(page));
        assert!(!page.contains("javascript:"));
        for origin in ["http://", "https://", "//cdn", "fonts."] {
            assert!(
                !page.contains(origin),
                "page names another origin: {origin}"
            );
            assert!(
                !STYLE.body.contains(origin),
                "style names another origin: {origin}"
            );
        }
    }

    /// Whether `html` has an attribute like ` onclick=`.
    fn has_event_handler_attribute(html: &str) -> bool {
        html.match_indices(" on").any(|(i, _)| {
            let rest = &html[i + 3..];
            let name = rest.bytes().take_while(u8::is_ascii_lowercase).count();
            name > 0 && rest[name..].starts_with('=')
        })
    }

    #[test]
    fn an_inline_event_handler_is_recognised() {
        assert!(has_event_handler_attribute(r#"<img src=x onerror="go()">"#));
        assert!(!has_event_handler_attribute("<p>based on facts</p>"));
    }

    #[test]
    fn the_icon_is_plain_svg_with_nothing_to_run_or_fetch() {
        let icon = ICON.body;
        assert!(icon.trim_start().starts_with("<svg "));
        assert!(icon.contains(r#"xmlns="http://www.w3.org/2000/svg""#));
        for banned in [
            "<script",
            "<style",
            "<foreignObject",
            "<image",
            "href=",
            "url(",
        ] {
            assert!(!icon.contains(banned), "favicon.svg has {banned}");
        }
        assert!(!has_event_handler_attribute(icon));
        // The namespace is the only URL in it.
        assert_eq!(icon.matches("http").count(), 1);
    }

    #[test]
    fn the_script_never_writes_html_strings() {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ] {
            assert!(!SCRIPT.body.contains(sink), "app.js uses {sink}");
        }
    }

    #[test]
    fn the_policy_allows_this_origin_only_and_no_inline_script() {
        let csp = CONTENT_SECURITY_POLICY;
        assert!(csp.starts_with("default-src 'none';"));
        assert!(csp.contains("script-src 'self';") && csp.contains("connect-src 'self';"));
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        assert!(csp.contains("frame-ancestors 'none'"));
        assert!(csp.contains("require-trusted-types-for 'script'"));
        assert!(HEADERS.contains(&("x-content-type-options", "nosniff")));
    }
}
