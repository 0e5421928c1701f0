//! Every route that is not a keyed write, in one table: its method and path
//! template, what serves it ([`Kind`], which the Worker's router dispatches on
//! with an exhaustive `match`), and its description. The router's dispatch and
//! `Allow`, the request log's route templates and the OpenAPI document's paths
//! are all read from here; the keyed writes' routes are the command table's
//! (`commands`). Plain data: this module imports nothing of the crate.

/// A JSON answer.
pub const JSON: &str = "application/json";
/// An RFC 9457 problem.
pub const PROBLEM_JSON: &str = "application/problem+json";
/// A list's paging: `offset` and `limit`.
pub const PAGE_QUERY: [(&str, &str, bool); 2] =
    [("offset", "integer", false), ("limit", "integer", false)];
/// A list's `status` filter.
pub const STATUS_QUERY: (&str, &str, bool) = ("status", "string", false);

/// What serves a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Health,
    OpenApi,
    /// One of the console's files (`console::asset`).
    Console,
    /// Every problem type (`problem_types`), a page.
    ProblemTypes,
    /// One problem type's page: what a problem's `type` names.
    ProblemType,
    GetDocument,
    ListChunks,
    GetDataset,
    GetDatasetExamples,
    ListJobs,
    GetJob,
    ListExports,
    GetExport,
    GetExportDiff,
    GetExportAudit,
    GetExportFile,
    GetExportPreview,
    CheckApproval,
    GetBatch,
    Stats,
    Metrics,
    /// The caller as the Worker resolved the token (`GET /v1/me`).
    Me,
    KeyState,
    ReleaseKey,
}

impl Kind {
    /// Served without a token (and without `OPTIONS`): health, the API
    /// description, the console's files, the problem types' pages.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            Kind::Health | Kind::OpenApi | Kind::Console | Kind::ProblemTypes | Kind::ProblemType
        )
    }
}

/// A route's description, for the OpenAPI document.
pub struct Doc {
    pub id: &'static str,
    pub summary: &'static str,
    pub tag: &'static str,
    /// The success status, its content type (empty: no body) and schema name
    /// (`None`: a string, or for JSON any object).
    pub ok: (u16, &'static str, Option<&'static str>),
    /// Problem statuses beyond 401 and 503 (which every authenticated route has).
    pub errors: &'static [u16],
    /// Query parameters: name, type, required.
    pub query: &'static [(&'static str, &'static str, bool)],
    /// The request body's schema, for a route that takes one (optional).
    pub body: Option<&'static str>,
}

/// One route: method (lowercase, as OpenAPI writes it), path template (`{id}`
/// one segment, `{id}.jsonl` one segment with that ending, a final `{key}` the
/// rest of the path), what serves it, its description.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub kind: Kind,
    pub doc: Doc,
}

/// A console file's route.
const fn console(
    path: &'static str,
    id: &'static str,
    summary: &'static str,
    ct: &'static str,
) -> Route {
    Route {
        method: "get",
        path,
        kind: Kind::Console,
        doc: Doc {
            id,
            summary,
            tag: "console",
            ok: (200, ct, None),
            errors: &[],
            query: &[],
            body: None,
        },
    }
}

/// Every route that is not a keyed write. Where two templates fit one path,
/// the first listed serves it (`{id}.jsonl` before `{id}`).
pub const ROUTES: &[Route] = &[
    Route {
        method: "get",
        path: "/healthz",
        kind: Kind::Health,
        doc: Doc {
            id: "healthz",
            summary: "Liveness",
            tag: "meta",
            ok: (200, JSON, Some("Health")),
            errors: &[],
            query: &[],
            body: None,
        },
    },
    Route {
        method: "get",
        path: "/openapi.json",
        kind: Kind::OpenApi,
        doc: Doc {
            id: "openapi",
            summary: "This document (OpenAPI 3.1)",
            tag: "meta",
            ok: (200, JSON, None),
            errors: &[],
            query: &[],
            body: None,
        },
    },
    Route {
        method: "get",
        path: "/errors",
        kind: Kind::ProblemTypes,
        doc: Doc {
            id: "listProblemTypes",
            summary: "Every problem type: what it means and what to do (a page)",
            tag: "meta",
            ok: (200, "text/html", None),
            errors: &[],
            query: &[],
            body: None,
        },
    },
    Route {
        method: "get",
        path: "/errors/{slug}",
        kind: Kind::ProblemType,
        doc: Doc {
            id: "getProblemType",
            summary: "A problem type, as a problem's `type` names it: what it means and what to do (a page)",
            tag: "meta",
            ok: (200, "text/html", None),
            errors: &[404],
            query: &[],
            body: None,
        },
    },
    console("/console", "console", "The approvers' console: a page", "text/html"),
    console("/console/app.js", "consoleScript", "The console's script", "text/javascript"),
    console("/console/app.css", "consoleStyle", "The console's style sheet", "text/css"),
    console("/console/favicon.svg", "consoleIcon", "The console's icon", "image/svg+xml"),
    Route {
        method: "get",
        path: "/v1/documents/{id}",
        kind: Kind::GetDocument,
        doc: Doc {
            id: "getDocument",
            summary: "A document: metadata, stats and extracted text",
            tag: "documents",
            ok: (200, JSON, Some("Document")),
            errors: &[404],
            query: &[],
            body: None,
        },
    },
    Route {
        method: "get",
        path: "/v1/documents/{id}/chunks",
        kind: Kind::ListChunks,
        doc: Doc {
            id: "listChunks",
            summary: "A document's chunks, paged",
            tag: "documents",
            ok: (200, JSON, Some("ChunkPage")),
            errors: &[404],
            query: &PAGE_QUERY,
            body: None,
        },
    },
    Route {
        method: "get",
        path: "/v1/training-data/{id}.jsonl",
        kind: Kind::GetDatasetExamples,
        doc: Doc {
            id: "getDatasetExamples",
            summary: "A dataset's examples, one JSON object a line",
            tag: "training",
            ok: (200, "application/x-ndjson", None),
            errors: &[404],
            query: &[],
            body: None,
        },
    },
    Route {
        method: "get",
        path: "/v1/training-data/{id}",
        kind: Kind::GetDataset,
        doc: Doc {
            id: "getDataset",
            summary: "A dataset's metadata and statistics",
            tag: "training",
            ok: (200, JSON, Some("Dataset")),
            errors: &[404],
            query: &[],
            body: None,
        },
    },
    Route {
        method: "get",
        path: "/v1/training-jobs",
        kind: Kind::ListJobs,
        doc: Doc {
            id: "listJobs",
            summary: "The tenant's training jobs, oldest first",
            tag: "training",
            ok: (200, JSON, Some("JobList")),
            errors: &[400],
            query: &[STATUS_QUERY, PAGE_QUERY[0], PAGE_QUERY[1]],
            body: None,
        },
    },
    Route {
        method: "get",
        path: "/v1/training-jobs/{id}",
        kind: Kind::GetJob,
        doc: Doc {
            id: "getJob",
            summary: "A job, its dispatch state and its event history",
            tag: "training",
            ok: (200, JSON, Some("Job")),
            errors: &[404],
            query: &[],
            body: None,
        },
    },
    Route {
        method: "get",
        path: "/v1/staging/exports",
        kind: Kind::ListExports,
        doc: Doc {
            id: "listExports",
            summary: "The tenant's exports, paged, optionally by status",
            tag: "staging",
            ok: (200, JSON, Some("ExportList")),
            errors: &[400],
            query: &[STATUS_QUERY, PAGE_QUERY[0], PAGE_QUERY[1]],
            body: None,
        },
    },
    Route {
        method: "get",
        path: "/v1/staging/exports/{id}",
        kind: Kind::GetExport,
        doc: Doc {
            id: "getExport",
            summary: "An export with its quality score and findings",
            tag: "staging",
            ok: (200, JSON, Some("Export")),
            errors: &[404],
            query: &[],
            body: None,
        },
    },
    Route {
        method: "get",
        path: "/v1/staging/exports/{id}/diff",
        kind: Kind::GetExportDiff,
        doc: Doc {
            id: "getExportDiff",
            summary: "The approval's field-level diff",
            tag: "staging",
            ok: (200, JSON, Some("Diff")),
            errors: &[404],
            query: &[],
            body: None,
        },
    },
    Route {
        method: "get",
        path: "/v1/staging/exports/{id}/audit",
        kind: Kind::GetExportAudit,
        doc: Doc {
            id: "getExportAudit",
            summary: "The export's audit trail",
            tag: "staging",
            ok: (200, JSON, Some("Audit")),
            errors: &[404],
            query: &[],
            body: None,
        },
    },
    Route {
        method: "get",
        path: "/v1/staging/exports/{id}/file",
        kind: Kind::GetExportFile,
        doc: Doc {
            id: "getExportFile",
            summary: "The posted file (CSV or JSON, as the export's format)",
            tag: "staging",
            ok: (200, "text/csv", None),
            errors: &[404],
            query: &[],
            body: None,
        },
    },
    Route {
        method: "get",
        path: "/v1/staging/exports/{id}/preview",
        kind: Kind::GetExportPreview,
        doc: Doc {
            id: "getExportPreview",
            summary: "The file as JSON: posted, or as posting would render it now",
            tag: "staging",
            ok: (200, JSON, Some("Preview")),
            errors: &[404],
            query: &[],
            body: None,
        },
    },
    Route {
        method: "post",
        path: "/v1/staging/exports/{id}/check",
        kind: Kind::CheckApproval,
        doc: Doc {
            id: "checkApproval",
            summary: "What approving with this data would do: findings, score, changes, second approval, file (writes nothing; no key)",
            tag: "staging",
            ok: (200, JSON, Some("Check")),
            errors: &[400, 404, 413],
            query: &[],
            body: Some("Approve"),
        },
    },
    Route {
        method: "get",
        path: "/v1/staging/batches/{id}",
        kind: Kind::GetBatch,
        doc: Doc {
            id: "getBatch",
            summary: "A batch's progress by state and average quality",
            tag: "staging",
            ok: (200, JSON, Some("BatchProgress")),
            errors: &[404],
            query: &[],
            body: None,
        },
    },
    Route {
        method: "get",
        path: "/v1/me",
        kind: Kind::Me,
        doc: Doc {
            id: "getCaller",
            summary: "Who the caller is, as the Worker resolved the token: sub, tenant, roles, and the header it came in",
            tag: "meta",
            ok: (200, JSON, Some("Caller")),
            errors: &[],
            query: &[],
            body: None,
        },
    },
    Route {
        method: "get",
        path: "/v1/idempotency/stats",
        kind: Kind::Stats,
        doc: Doc {
            id: "getIdempotencyStats",
            summary: "The tenant's records by route and status, and outcome counts (admin role)",
            tag: "idempotency",
            ok: (200, JSON, Some("Stats")),
            errors: &[403],
            query: &[],
            body: None,
        },
    },
    Route {
        method: "get",
        path: "/metrics",
        kind: Kind::Metrics,
        doc: Doc {
            id: "getMetrics",
            summary: "The tenant's idempotency counters, Prometheus text format 0.0.4 (admin role)",
            tag: "idempotency",
            ok: (200, "text/plain", None),
            errors: &[403],
            query: &[],
            body: None,
        },
    },
    Route {
        method: "get",
        path: "/v1/idempotency/keys/{key}",
        kind: Kind::KeyState,
        doc: Doc {
            id: "getKeyState",
            summary: "A key's state: processing or completed",
            tag: "idempotency",
            ok: (200, JSON, Some("KeyState")),
            errors: &[400, 403, 404],
            query: &[("route", "string", true), ("subject", "string", false)],
            body: None,
        },
    },
    Route {
        method: "delete",
        path: "/v1/idempotency/keys/{key}",
        kind: Kind::ReleaseKey,
        doc: Doc {
            id: "releaseKey",
            summary: "Release a key so its next request runs again (its owner or an admin)",
            tag: "idempotency",
            ok: (204, "", None),
            errors: &[400, 403, 404, 409],
            query: &[("route", "string", true), ("subject", "string", false)],
            body: None,
        },
    },
];

/// The path parameters of `path` if it fits `pattern` (both with a leading
/// `/`): each `{…}` segment's value, in order (`{id}.jsonl`: without the
/// ending; a final `{key}`: the rest of the path, slashes and all).
pub fn fit(pattern: &str, path: &str) -> Option<Vec<String>> {
    let mut segments = path.split('/').skip(1);
    let mut params = Vec::new();
    let mut pattern_segments = pattern.split('/').skip(1).peekable();
    while let Some(p) = pattern_segments.next() {
        let s = segments.next()?;
        if p == "{key}" && pattern_segments.peek().is_none() {
            let rest: Vec<&str> = std::iter::once(s).chain(segments.by_ref()).collect();
            let key = rest.join("/");
            return (!key.is_empty()).then_some({
                params.push(key);
                params
            });
        }
        match p.strip_prefix('{').and_then(|p| p.split_once('}')) {
            Some((_, ending)) => {
                let value = s.strip_suffix(ending)?;
                if value.is_empty() {
                    return None;
                }
                params.push(value.to_string());
            }
            None if p == s => {}
            None => return None,
        }
    }
    segments.next().is_none().then_some(params)
}

/// The routes whose template fits `path`, with their parameters.
pub fn matching(path: &str) -> impl Iterator<Item = (&'static Route, Vec<String>)> + '_ {
    ROUTES
        .iter()
        .filter_map(move |r| fit(r.path, path).map(|params| (r, params)))
}

/// The methods a path allows, for the `Allow` header: its routes' methods
/// (`HEAD` with `GET`), a keyed write's (`keyed`), and `OPTIONS` unless every
/// route of the path is open. In the order GET, HEAD, POST, PUT, DELETE,
/// OPTIONS.
pub fn allow<'a>(routes: impl Iterator<Item = &'a Route>, keyed: Option<&str>) -> String {
    let mut methods: Vec<String> = keyed.map(str::to_ascii_uppercase).into_iter().collect();
    let mut open = keyed.is_none();
    for r in routes {
        open &= r.kind.is_open();
        let m = r.method.to_ascii_uppercase();
        if m == "GET" {
            methods.push("HEAD".into());
        }
        methods.push(m);
    }
    if !open {
        methods.push("OPTIONS".into());
    }
    const ORDER: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"];
    ORDER
        .iter()
        .filter(|m| methods.iter().any(|x| x == *m))
        .copied()
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fit_their_paths_and_give_their_parameters() {
        let fits = |p: &str, path: &str| fit(p, path);
        assert_eq!(fits("/healthz", "/healthz"), Some(vec![]));
        assert_eq!(fits("/healthz", "/healthz/x"), None);
        assert_eq!(
            fits(
                "/v1/staging/exports/{id}/diff",
                "/v1/staging/exports/exp_1/diff"
            ),
            Some(vec!["exp_1".into()])
        );
        assert_eq!(
            fits("/v1/staging/exports/{id}", "/v1/staging/exports/"),
            None
        );
        assert_eq!(
            fits(
                "/v1/training-data/{id}.jsonl",
                "/v1/training-data/ds_1.jsonl"
            ),
            Some(vec!["ds_1".into()])
        );
        assert_eq!(
            fits("/v1/training-data/{id}.jsonl", "/v1/training-data/.jsonl"),
            None
        );
        assert_eq!(
            fits("/v1/training-data/{id}.jsonl", "/v1/training-data/ds_1"),
            None
        );
        assert_eq!(
            fits("/v1/idempotency/keys/{key}", "/v1/idempotency/keys/a/b/"),
            Some(vec!["a/b/".into()])
        );
        assert_eq!(
            fits("/v1/idempotency/keys/{key}", "/v1/idempotency/keys/"),
            None
        );
        assert_eq!(
            fits("/v1/idempotency/keys/{key}", "/v1/idempotency/keys"),
            None
        );
    }

    #[test]
    fn the_first_listed_template_serves_a_path_two_fit() {
        let (r, params) = matching("/v1/training-data/ds_1.jsonl").next().unwrap();
        assert_eq!(
            (r.kind, params),
            (Kind::GetDatasetExamples, vec!["ds_1".into()])
        );
        let (r, _) = matching("/v1/training-data/ds_1").next().unwrap();
        assert_eq!(r.kind, Kind::GetDataset);
    }

    #[test]
    fn allow_lists_each_paths_methods_in_one_order() {
        let allow_of =
            |path: &str, keyed: Option<&str>| allow(matching(path).map(|(r, _)| r), keyed);
        assert_eq!(allow_of("/healthz", None), "GET, HEAD");
        assert_eq!(allow_of("/console/app.js", None), "GET, HEAD");
        assert_eq!(
            allow_of("/v1/staging/exports", Some("POST")),
            "GET, HEAD, POST, OPTIONS"
        );
        assert_eq!(
            allow_of("/v1/staging/exports/e/approve", Some("PUT")),
            "PUT, OPTIONS"
        );
        assert_eq!(
            allow_of("/v1/staging/exports/e/check", None),
            "POST, OPTIONS"
        );
        assert_eq!(
            allow_of("/v1/idempotency/keys/k", None),
            "GET, HEAD, DELETE, OPTIONS"
        );
        assert_eq!(allow_of("/metrics", None), "GET, HEAD, OPTIONS");
        assert_eq!(allow_of("/nowhere", None), "");
    }

    #[test]
    fn every_route_has_one_method_and_template_and_a_unique_operation_id() {
        let mut seen = std::collections::BTreeSet::new();
        for r in ROUTES {
            assert!(["get", "post", "delete"].contains(&r.method), "{}", r.path);
            assert!(r.path.starts_with('/'), "{}", r.path);
            assert!(seen.insert(r.doc.id), "{} twice", r.doc.id);
            assert!(
                ROUTES
                    .iter()
                    .filter(|o| o.method == r.method && o.path == r.path)
                    .count()
                    == 1,
                "{} {} twice",
                r.method,
                r.path
            );
        }
    }
}
