//! The catalog of problem types: one entry per slug the Worker can put in a
//! problem's `type` (`/errors/<slug>`), with its title, statuses, what it
//! means and what to do about it. The problem documents take their `title`
//! from here; `GET /errors` and `GET /errors/<slug>` serve it as HTML pages, and
//! `docs/errors.md` is its Markdown rendering (a unit test compares the
//! committed file with [`markdown`]). Plain data: this module imports nothing of
//! the crate.

/// The path the problem types live under; a problem's `type` is this plus its
/// slug, a relative URI resolved against the request's URL.
pub const BASE: &str = "/errors/";

/// The index of every problem type.
pub const INDEX_PATH: &str = "/errors";

/// The pages' content type.
pub const CONTENT_TYPE: &str = "text/html; charset=utf-8";

/// The pages' headers: static text with its own style, nothing to run or load.
pub const HEADERS: [(&str, &str); 3] = [
    (
        "content-security-policy",
        "default-src 'none'; style-src 'unsafe-inline'",
    ),
    ("x-content-type-options", "nosniff"),
    ("cache-control", "public, max-age=3600"),
];

/// One problem type.
#[derive(Debug, PartialEq, Eq)]
pub struct ProblemType {
    pub slug: &'static str,
    /// The problem's `title`: the same on every occurrence.
    pub title: &'static str,
    /// The HTTP statuses it comes with.
    pub statuses: &'static [u16],
    /// What happened.
    pub meaning: &'static str,
    /// What the caller (or the operator) does about it.
    pub remedy: &'static str,
}

const fn t(
    slug: &'static str,
    title: &'static str,
    statuses: &'static [u16],
    meaning: &'static str,
    remedy: &'static str,
) -> ProblemType {
    ProblemType {
        slug,
        title,
        statuses,
        meaning,
        remedy,
    }
}

/// Every problem type, by status then slug.
pub const CATALOG: &[ProblemType] = &[
    t(
        "idempotency-key-required",
        "Idempotency key required",
        &[400],
        "This route requires an `Idempotency-Key` header (its key policy is `required`) and the request had none. Nothing was done.",
        "Send a key: a fresh one (a UUID) per logical operation, the same one on every retry of that operation.",
    ),
    t(
        "identity-from-token",
        "Identity comes from the token",
        &[400],
        "The body names the caller (a field such as `approved_by` or `prepared_by`) with a value other than the token's subject. The identity of the caller is always the token's; the request was refused, not corrected.",
        "Leave the field out, or send the token's own subject in it.",
    ),
    t(
        "internal-protocol",
        "Internal protocol error",
        &[400],
        "A message between the Worker and a key's Durable Object lacked a part it must carry. A client cannot cause this; it is a bug in idemgate.",
        "Retry with the same key; if it persists, report it with the answer's `X-Request-Id`.",
    ),
    t(
        "invalid-base64",
        "Invalid base64",
        &[400],
        "`content_base64` in a document upload is not standard base64. Nothing was stored.",
        "Encode the bytes with standard base64 (RFC 4648 section 4, with padding), or send the text in `content` instead.",
    ),
    t(
        "invalid-field",
        "Invalid field",
        &[400],
        "A field of the body or a query parameter is missing, has the wrong type or a value out of range; `detail` names it. Nothing was stored and the key was not used up.",
        "Fix the field as `detail` says and send the request again (the same key may be reused).",
    ),
    t(
        "invalid-idempotency-key",
        "Invalid idempotency key",
        &[400],
        "The key is empty, longer than allowed, has a character outside `A-Za-z0-9._:~+/=-` or a `/`-separated segment that is `.` or `..`, uses the reserved `derived:` prefix, `Idempotency-Key` and `X-Idempotency-Key` differ, or a training event's key is not its `event_id`.",
        "Send one well-formed key (a UUID fits), in `Idempotency-Key` alone or the same in both headers.",
    ),
    t(
        "invalid-json",
        "Invalid JSON",
        &[400],
        "The body is not a JSON object (or not JSON at all). Nothing was stored and the key was not used up.",
        "Send a JSON object with `Content-Type: application/json`.",
    ),
    t(
        "invalid-route",
        "Invalid route parameter",
        &[400],
        "The key admin routes (`/v1/idempotency/keys/{key}`) need a `route=` query parameter naming a keyed route, and it names none.",
        "Pass the keyed write's path with its ids filled in, e.g. `route=/v1/documents` or `route=/v1/training-jobs/job_1/cancel`.",
    ),
    t(
        "invalid-url",
        "Invalid URL",
        &[400],
        "The key in a key admin path has a malformed percent escape.",
        "Percent-encode the key as one path segment (`encodeURIComponent`).",
    ),
    t(
        "unknown-field",
        "Unknown field",
        &[400],
        "The body has a field the route does not know; `detail` names it. Bodies are closed so that a misspelt field is never silently ignored.",
        "Remove the field or fix its name (the OpenAPI document lists each body's fields).",
    ),
    t(
        "unreadable-body",
        "Unreadable body",
        &[400],
        "The request body could not be read (the connection broke while it was sent).",
        "Send the request again with the same key.",
    ),
    t(
        "unreadable-document",
        "Unreadable document",
        &[400],
        "The uploaded document could not be turned into text (its bytes are not valid UTF-8, or the CSV does not parse); `detail` says why.",
        "Upload the text as UTF-8, in the format its `content_type` names.",
    ),
    t(
        "unauthorized",
        "Unauthorized",
        &[401],
        "No token, or a token that does not verify: malformed, expired, not yet valid, signed with another key or algorithm, or with the wrong issuer or audience; `detail` says which. Nothing was done.",
        "Send `Authorization: Bearer <JWT>` with a valid, unexpired token from the configured issuer (docs/identity.md).",
    ),
    t(
        "forbidden",
        "Forbidden",
        &[403],
        "The token is valid but lacks the role the route needs (`approver`, `poster` or `admin`), or the caller may not act on this resource (e.g. approve an export they prepared).",
        "Use a token carrying the role, or have another person do it.",
    ),
    t(
        "not-found",
        "Not found",
        &[404],
        "No such route, or no such resource in the caller's tenant (a resource of another tenant is not found either).",
        "Check the path and the id, and that the token's tenant is the one that created it.",
    ),
    t(
        "method-not-allowed",
        "Method not allowed",
        &[405],
        "The path exists but does not take this method; the `Allow` header lists those it takes.",
        "Use one of the methods in `Allow`.",
    ),
    t(
        "idempotency-key-in-flight",
        "Request in progress",
        &[409],
        "A request with this idempotency key is still being processed. This one did nothing.",
        "Retry after `Retry-After` seconds with the same key and body (you will get the first request's answer), or send `Prefer: wait=N` to wait for it.",
    ),
    t(
        "invalid-transition",
        "Invalid state transition",
        &[409],
        "The resource's state does not allow this action (e.g. approving an export that is already posted); `current_state` says where it is. Nothing changed.",
        "Read the resource, then take an action its current state allows (docs/staging.md lists the transitions).",
    ),
    t(
        "data-too-large",
        "Data too large to store",
        &[413],
        "The data fits the body limit but not the rows it must be stored in (an export's data, or one of its values, is too large). Nothing was stored.",
        "Send less data: split the export, or shorten the large values.",
    ),
    t(
        "payload-too-large",
        "Payload too large",
        &[413],
        "The request body is larger than `MAX_BODY_BYTES`. It was not read, and the key was not used up.",
        "Send a smaller body (split the work), or raise `MAX_BODY_BYTES` if you operate this deployment.",
    ),
    t(
        "unsupported-media-type",
        "Unsupported media type",
        &[415],
        "A document's `content_type` is not one idemgate extracts text from.",
        "Upload `text/plain`, `text/markdown`, `text/html`, `application/json` or `text/csv`.",
    ),
    t(
        "change-reason-required",
        "Change reason required",
        &[422],
        "The approval changes the export's data (`approved_data` differs from the staged data) but gives no `change_reason`. Nothing was changed.",
        "Send the approval again with a `change_reason` saying why the data was changed, under a new idempotency key.",
    ),
    t(
        "empty-dataset",
        "Empty dataset",
        &[422],
        "A training job names a dataset that has no examples.",
        "Build a dataset with examples first (`POST /v1/training-data` from documents with text), then start the job with its id.",
    ),
    t(
        "idempotency-key-reused",
        "Idempotency key reused",
        &[422],
        "The key was already used with a different request (another body, route or method). The first request's answer stands; this one did nothing.",
        "Use a new key for a new operation; to retry the first one, send exactly its body again.",
    ),
    t(
        "quality-below-threshold",
        "Quality below threshold",
        &[422],
        "The export's quality score is below `STAGING_QUALITY_THRESHOLD`, so it cannot be approved; `detail` lists the validation errors.",
        "Fix the data (approve with corrected `approved_data` and a `change_reason`), or request changes from its preparer.",
    ),
    t(
        "second-approval-changes-data",
        "Second approval changes data",
        &[422],
        "A second approval confirms the data as first approved; this one sent different `approved_data`.",
        "Approve without `approved_data` (or with the same data); to change it, request changes or reject.",
    ),
    t(
        "internal",
        "Internal error",
        &[500],
        "idemgate failed unexpectedly (a bug). The key was released, so a retry runs the request again.",
        "Retry with the same key; if it persists, report it with the answer's `X-Request-Id`.",
    ),
    t(
        "misconfigured",
        "Worker misconfigured",
        &[500],
        "A setting of the deployment does not parse; every request is refused until it is fixed. `detail` names the settings, the Worker's log says why.",
        "Operator: fix the named variables (README, configuration) and deploy again. Caller: nothing to do but wait.",
    ),
    t(
        "answer-too-large",
        "Answer too large",
        &[502],
        "The origin function answered with a body larger than `MAX_STORED_ANSWER_BYTES`. It ran once, and this answer is final for the key: retrying with it gives the same answer and never runs the work again.",
        "Make the function answer less (e.g. an id to read the result by), or raise `MAX_STORED_ANSWER_BYTES`; use a new key to run it again.",
    ),
    t(
        "delivery-failed",
        "Delivery failed",
        &[502],
        "Posting the export to its destination failed; `detail` says why and `current_state` where the export now is (`failed` while attempts remain).",
        "Retry the post (a new key) once the destination is reachable; after the last attempt, the export must be rolled back.",
    ),
    t(
        "upstream-unreachable",
        "Upstream unreachable",
        &[502],
        "The origin function could not be reached, or answered a status no answer can carry. Nothing was stored and the key was released.",
        "Retry later with the same key.",
    ),
    t(
        "auth-keys-unavailable",
        "Signing keys unavailable",
        &[503],
        "The token's signing key is not known here and the JWKS (`AUTH_JWKS_URL`) could not be fetched. Nothing was done.",
        "Retry after `Retry-After` seconds; if it lasts, the operator checks that the JWKS URL answers.",
    ),
    t(
        "auth-not-configured",
        "Authentication not configured",
        &[503],
        "Neither `AUTH_JWT_SECRET` nor `AUTH_JWKS_URL` is set, so every authenticated route is refused.",
        "Operator: set one of them (docs/identity.md).",
    ),
    t(
        "storage-unavailable",
        "Storage unavailable",
        &[503],
        "D1 or the key's Durable Object could not be reached or failed. Nothing was written (a write is one transaction) and the key was released.",
        "Retry after `Retry-After` seconds with the same key.",
    ),
    t(
        "upstream-not-configured",
        "Upstream not configured",
        &[503],
        "`/functions/v1/*` was called but `UPSTREAM_BASE_URL` is not set.",
        "Operator: set `UPSTREAM_BASE_URL` to the origin functions' base URL.",
    ),
    t(
        "upstream-timeout",
        "Upstream timeout",
        &[504],
        "The origin function did not answer within `UPSTREAM_TIMEOUT_MS`. Nothing was stored and the key was released; the function may still have done its work.",
        "Retry with the same key (the function should itself be idempotent for the key it receives).",
    ),
];

/// The catalog entry of `slug`.
pub fn find(slug: &str) -> Option<&'static ProblemType> {
    CATALOG.iter().find(|t| t.slug == slug)
}

/// A problem's `type`: `/errors/<slug>`.
pub fn uri(slug: &str) -> String {
    format!("{BASE}{slug}")
}

fn statuses(t: &ProblemType) -> String {
    let s: Vec<String> = t.statuses.iter().map(u16::to_string).collect();
    s.join(", ")
}

/// Escapes text for HTML, and renders `code` spans.
fn html_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    let mut in_code = false;
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '`' => {
                out.push_str(if in_code { "</code>" } else { "<code>" });
                in_code = !in_code;
            }
            c => out.push(c),
        }
    }
    if in_code {
        out.push_str("</code>");
    }
    out
}

fn html_page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem}}\
         code{{background:#f2f2f2;padding:0 .2em}}dt{{font-weight:600}}</style>\n</head>\n<body>\n{body}</body>\n</html>\n"
    )
}

/// `GET /errors/<slug>`: the problem type's page.
pub fn html(t: &ProblemType) -> String {
    let title = html_text(t.title);
    html_page(
        &format!("{title} — idemgate"),
        &format!(
            "<h1>{title}</h1>\n<p>Problem type <code>{BASE}{slug}</code>, HTTP {statuses}.</p>\n\
             <h2>What it means</h2>\n<p>{meaning}</p>\n<h2>What to do</h2>\n<p>{remedy}</p>\n\
             <p><a href=\"{INDEX_PATH}\">Every problem type</a></p>\n",
            slug = t.slug,
            statuses = statuses(t),
            meaning = html_text(t.meaning),
            remedy = html_text(t.remedy),
        ),
    )
}

/// `GET /errors`: every problem type, linked.
pub fn html_index() -> String {
    let mut body = String::from(
        "<h1>idemgate problem types</h1>\n<p>Every error answer is RFC 9457 \
         <code>application/problem+json</code>; its <code>type</code> is one of these.</p>\n<dl>\n",
    );
    for t in CATALOG {
        body.push_str(&format!(
            "<dt><a href=\"{BASE}{slug}\">{title}</a> <code>{slug}</code> ({statuses})</dt>\n<dd>{meaning}</dd>\n",
            slug = t.slug,
            title = html_text(t.title),
            statuses = statuses(t),
            meaning = html_text(t.meaning),
        ));
    }
    body.push_str("</dl>\n");
    html_page("Problem types — idemgate", &body)
}

/// `docs/errors.md`: the catalog in Markdown.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Problem types\n\n\
         <!-- Generated from src/problem_types.rs by `./x generate`; a unit test fails when it differs. -->\n\n\
         Every error answer is RFC 9457 `application/problem+json`. Its `type` is\n\
         `/errors/<slug>`, a URI relative to the request's URL: the Worker serves\n\
         each type's description at that path (HTML), and every type at `/errors`\n\
         ([contract.md](contract.md#statuses)).\n\n\
         | slug | status | title |\n|---|---|---|\n",
    );
    for t in CATALOG {
        out.push_str(&format!(
            "| [`{slug}`](#{slug}) | {statuses} | {title} |\n",
            slug = t.slug,
            statuses = statuses(t),
            title = t.title
        ));
    }
    for t in CATALOG {
        out.push_str(&format!(
            "\n## {slug}\n\n**{title}** — HTTP {statuses}.\n\n{meaning}\n\n**What to do:** {remedy}\n",
            slug = t.slug,
            title = t.title,
            statuses = statuses(t),
            meaning = t.meaning,
            remedy = t.remedy,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn slugs_are_unique_lowercase_words_and_every_entry_is_filled_in() {
        let mut seen = BTreeSet::new();
        for t in CATALOG {
            assert!(seen.insert(t.slug), "{} twice", t.slug);
            assert!(
                t.slug.split('-').all(|w| !w.is_empty()
                    && w.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())),
                "{}",
                t.slug
            );
            assert!(!t.statuses.is_empty(), "{}", t.slug);
            assert!(
                t.statuses.iter().all(|s| (400..600).contains(s)),
                "{}",
                t.slug
            );
            for text in [t.title, t.meaning, t.remedy] {
                assert!(!text.trim().is_empty(), "{}", t.slug);
                assert_eq!(text.matches('`').count() % 2, 0, "{}: unbalanced `", t.slug);
            }
        }
    }

    #[test]
    fn the_catalog_is_ordered_by_status_then_slug() {
        for w in CATALOG.windows(2) {
            let (a, b) = ((w[0].statuses[0], w[0].slug), (w[1].statuses[0], w[1].slug));
            assert!(a < b, "{a:?} before {b:?}");
        }
    }

    #[test]
    fn a_page_escapes_its_text_and_renders_code() {
        assert_eq!(html_text("a <b> & `c`"), "a &lt;b&gt; &amp; <code>c</code>");
        let page = html(find("idempotency-key-reused").unwrap());
        assert!(page.contains("<title>Idempotency key reused — idemgate</title>"));
        assert!(page.contains("<code>/errors/idempotency-key-reused</code>, HTTP 422"));
        let index = html_index();
        for t in CATALOG {
            assert!(
                index.contains(&format!("href=\"/errors/{}\"", t.slug)),
                "{}",
                t.slug
            );
        }
    }

    #[test]
    fn docs_errors_md_is_the_catalog() {
        let committed = include_str!("../docs/errors.md");
        assert!(
            committed == markdown(),
            "docs/errors.md differs from the catalog in src/problem_types.rs: run `./x generate` and commit the result"
        );
    }
}
