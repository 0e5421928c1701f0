use super::*;
use crate::problem::ApiError;
use std::collections::BTreeSet;

fn doc() -> Value {
    document()
}

#[test]
fn the_document_is_openapi_3_1_with_info_paths_and_components() {
    let d = doc();
    assert!(
        d["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        d["openapi"]
    );
    assert_eq!(d["info"]["title"], "idemgate");
    assert!(d["paths"].as_object().unwrap().len() > 20);
    assert!(d["components"]["schemas"]["Problem"].is_object());
    assert_eq!(
        d["components"]["securitySchemes"][BEARER]["scheme"],
        "bearer"
    );
}

#[test]
fn every_keyed_endpoint_of_the_command_table_is_in_the_document_with_its_method() {
    let d = doc();
    for e in Endpoint::ALL {
        let (method, path) = e.template().split_once(' ').unwrap();
        let op = &d["paths"][path][method.to_ascii_lowercase()];
        assert!(op.is_object(), "{} is missing", e.template());
        let params: Vec<&str> = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        for header in ["Idempotency-Key", "X-Idempotency-Key", "Prefer"] {
            assert!(params.contains(&header), "{} lacks {header}", e.template());
        }
        assert!(op["responses"]["422"].is_object() && op["responses"]["409"].is_object());
    }
}

#[test]
fn every_route_of_the_route_table_is_in_the_document_and_every_console_route_is_a_file() {
    let d = doc();
    for r in crate::route_table::ROUTES {
        let op = &d["paths"][r.path][r.method];
        assert_eq!(op["operationId"], r.doc.id, "{} {}", r.method, r.path);
        if r.kind == crate::route_table::Kind::Console {
            let segs: Vec<&str> = r.path.split('/').skip(1).collect();
            assert!(crate::console::asset(&segs).is_some(), "{}", r.path);
        }
    }
    // Nothing else: every documented path is the route table's or the command table's.
    let keyed: BTreeSet<String> = Endpoint::ALL
        .iter()
        .map(|e| e.template().split_once(' ').unwrap().1.to_string())
        .collect();
    for path in d["paths"].as_object().unwrap().keys() {
        assert!(
            keyed.contains(path) || crate::route_table::ROUTES.iter().any(|r| r.path == path),
            "{path}"
        );
    }
}

fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn every_ref_in_the_document_resolves() {
    let d = doc();
    let mut all = Vec::new();
    refs(&d, &mut all);
    assert!(all.len() > 30);
    for r in all {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("external ref {r}"));
        assert!(d.pointer(pointer).is_some(), "{r} does not resolve");
    }
}

#[test]
fn every_operation_has_a_unique_id_declared_path_parameters_and_responses() {
    let d = doc();
    let mut ids = BTreeSet::new();
    for (path, item) in d["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap();
            assert!(ids.insert(id.to_string()), "duplicate operationId {id}");
            assert!(
                !op["responses"].as_object().unwrap().is_empty(),
                "{method} {path}"
            );
            let declared: BTreeSet<&str> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "path")
                        .map(|p| p["name"].as_str().unwrap())
                        .collect()
                })
                .unwrap_or_default();
            let templated: BTreeSet<&str> = path
                .split('{')
                .skip(1)
                .map(|s| s.split('}').next().unwrap())
                .collect();
            assert_eq!(declared, templated, "{method} {path}");
        }
    }
}

#[test]
fn authenticated_operations_name_the_bearer_scheme_and_open_ones_none() {
    let d = doc();
    for (path, item) in d["paths"].as_object().unwrap() {
        for op in item.as_object().unwrap().values() {
            let open = path == "/healthz"
                || path.starts_with("/console")
                || path.starts_with("/errors")
                || path == super::super::PATH;
            let sec = op["security"].as_array().unwrap();
            assert_eq!(sec.is_empty(), open, "{path}");
            if !open {
                assert!(op["responses"]["401"].is_object(), "{path}");
            }
        }
    }
}

#[test]
fn the_problem_schema_is_the_problem_the_worker_sends() {
    let d = doc();
    let schema = &d["components"]["schemas"]["Problem"];
    let required: BTreeSet<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        required,
        BTreeSet::from(["type", "title", "status", "detail"])
    );
    let sent = ApiError::KeyReused { key: "k".into() }.to_problem().body;
    for (field, _) in sent.as_object().unwrap() {
        assert!(schema["properties"][field].is_object(), "{field}");
    }
    let description = d["info"]["description"].as_str().unwrap();
    for t in crate::problem_types::CATALOG {
        assert!(
            description.contains(&format!("`/errors/{}` (", t.slug)),
            "{}",
            t.slug
        );
    }
    assert!(description.contains("`/errors/idempotency-key-reused` (422): Idempotency key reused"));
    assert_eq!(schema["properties"]["type"]["format"], "uri-reference");
}

#[test]
fn idempotency_answer_headers_are_documented_on_keyed_answers() {
    let d = doc();
    let ok = &d["paths"]["/v1/documents"]["post"]["responses"]["201"]["headers"];
    for h in [
        "Idempotent-Replayed",
        "X-Idempotency-Replay",
        "Preference-Applied",
        "Idempotency-Key",
        "Location",
    ] {
        assert!(ok[h].is_object(), "{h}");
    }
    let busy = &d["paths"]["/v1/documents"]["post"]["responses"]["409"]["headers"];
    assert!(busy["Retry-After"].is_object());
}

#[test]
fn the_committed_openapi_json_is_the_generated_document() {
    assert!(
        super::super::TEXT == text(),
        "openapi.json differs from the document the code generates \
         (src/openapi/generate.rs): run `./x generate` and commit openapi.json"
    );
}

/// The operations without a 4xx answer, as JSON pointers to their responses.
fn without_4xx(d: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (path, item) in d["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if !op["responses"]
                .as_object()
                .unwrap()
                .keys()
                .any(|s| s.starts_with('4'))
            {
                let path = path.replace('~', "~0").replace('/', "~1");
                out.insert(format!("#/paths/{path}/{method}/responses"));
            }
        }
    }
    out
}

#[test]
fn the_lint_ignores_exactly_the_open_operations_without_a_4xx() {
    let d = doc();
    let ignored: BTreeSet<String> = include_str!("../../../.redocly.lint-ignore.yaml")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- '")?.strip_suffix('\''))
        .map(String::from)
        .collect();
    assert_eq!(ignored, without_4xx(&d));
    // Each is an open route that reads nothing from the request.
    for r in crate::route_table::ROUTES {
        let pointer = format!(
            "#/paths/{}/{}/responses",
            r.path.replace('/', "~1"),
            r.method
        );
        if ignored.contains(&pointer) {
            assert!(
                r.kind.is_open()
                    && !r.path.contains('{')
                    && r.doc.query.is_empty()
                    && r.doc.body.is_none(),
                "{}",
                r.path
            );
        }
    }
}

fn properties(d: &Value, schema: &str) -> BTreeSet<String> {
    d["components"]["schemas"][schema]["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("{schema}"))
        .keys()
        .cloned()
        .collect()
}

#[test]
fn request_schemas_name_exactly_the_fields_their_parsers_accept() {
    use crate::staging::requests as staging;
    use crate::training;
    let d = doc();
    let cases: [(&str, &[&str]); 10] = [
        ("UploadDocument", &crate::documents::UPLOAD_FIELDS),
        ("CreateDataset", &training::DATASET_FIELDS),
        ("CreateJob", &training::JOB_FIELDS),
        ("Hyperparameters", &training::HYPERPARAMETER_FIELDS),
        ("JobEvent", &training::EVENT_FIELDS),
        ("StageExport", &staging::STAGE_FIELDS),
        ("StageBatch", &staging::BATCH_FIELDS),
        ("Review", &staging::REVIEW_FIELDS),
        ("Approve", &staging::APPROVE_FIELDS),
        ("Post", &staging::POST_FIELDS),
    ];
    for (schema, fields) in cases {
        let want: BTreeSet<String> = fields.iter().map(|f| f.to_string()).collect();
        assert_eq!(properties(&d, schema), want, "{schema}");
        assert_eq!(
            d["components"]["schemas"][schema]["additionalProperties"], false,
            "{schema}"
        );
    }
}

#[test]
fn every_link_names_an_operation_of_the_document_with_an_id_parameter() {
    let d = doc();
    let ops: BTreeSet<String> = d["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .map(|op| op["operationId"].as_str().unwrap().to_string())
        .collect();
    let mut seen = 0;
    for item in d["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            for response in op["responses"].as_object().unwrap().values() {
                for link in response["links"]
                    .as_object()
                    .into_iter()
                    .flat_map(|l| l.values())
                {
                    assert!(
                        ops.contains(link["operationId"].as_str().unwrap()),
                        "{link}"
                    );
                    seen += 1;
                }
            }
        }
    }
    assert_eq!(seen, LINKS.iter().map(|l| l.3.len()).sum::<usize>());
}
