//! What the document says about each keyed write beyond its template (the
//! command table gives the path, method, role and key policy).

use crate::commands::Endpoint;

/// What the document says about a keyed write beyond its template.
pub(super) struct KeyedDoc {
    pub(super) id: &'static str,
    pub(super) summary: &'static str,
    pub(super) tag: &'static str,
    pub(super) request: &'static str,
    pub(super) body_required: bool,
    /// The answer on success; `None`: the origin's answer, any status.
    pub(super) ok: Option<(u16, &'static str)>,
    pub(super) errors: &'static [u16],
}

/// Problems every keyed write may answer: a bad body or key (400), no or a bad
/// token (401), a missing export, job, document or function (404), the key in
/// flight or a state that forbids the transition (409), a body too large (413),
/// the key reused with another body or an unusable request (422), storage or
/// auth configuration down (503).
pub(super) const KEYED_ERRORS: [u16; 8] = [400, 401, 404, 409, 413, 415, 422, 503];

pub(super) fn keyed_doc(e: Endpoint) -> KeyedDoc {
    let doc = |id, summary, tag, request, ok| KeyedDoc {
        id,
        summary,
        tag,
        request,
        body_required: true,
        ok,
        errors: &[],
    };
    match e {
        Endpoint::UploadDocument => doc(
            "uploadDocument",
            "Process a document: extract text, stats and chunks",
            "documents",
            "UploadDocument",
            Some((201, "Document")),
        ),
        Endpoint::CreateDataset => doc(
            "createDataset",
            "Generate training data from documents",
            "training",
            "CreateDataset",
            Some((201, "Dataset")),
        ),
        Endpoint::CreateJob => doc(
            "createJob",
            "Start a training job (queued, dispatched to TRAINER_URL if set)",
            "training",
            "CreateJob",
            Some((201, "Job")),
        ),
        Endpoint::ReportJobEvent => doc(
            "reportJobEvent",
            "The trainer reports a job event; its event_id is the key",
            "training",
            "JobEvent",
            Some((200, "JobEventApplied")),
        ),
        Endpoint::CancelJob => KeyedDoc {
            body_required: false,
            ..doc(
                "cancelJob",
                "Cancel a job that has not finished",
                "training",
                "Cancel",
                Some((200, "JobEventApplied")),
            )
        },
        Endpoint::CallFunction => KeyedDoc {
            body_required: false,
            errors: &[502, 504],
            ..doc(
                "callFunction",
                "Front an origin function: it runs once per key; the answer is the origin's",
                "functions",
                "FunctionBody",
                None,
            )
        },
        Endpoint::StageExport => doc(
            "stageExport",
            "Stage an invoice export",
            "staging",
            "StageExport",
            Some((201, "Export")),
        ),
        Endpoint::ReviewExport => KeyedDoc {
            body_required: false,
            ..doc(
                "reviewExport",
                "Review an export",
                "staging",
                "Review",
                Some((200, "Export")),
            )
        },
        Endpoint::ApproveExport => KeyedDoc {
            body_required: false,
            ..doc(
                "approveExport",
                "Approve an export, optionally with corrected data (approver role)",
                "staging",
                "Approve",
                Some((200, "Export")),
            )
        },
        Endpoint::RejectExport => doc(
            "rejectExport",
            "Reject an export with a reason (approver role)",
            "staging",
            "Reject",
            Some((200, "Export")),
        ),
        Endpoint::PostExport => KeyedDoc {
            body_required: false,
            errors: &[502],
            ..doc(
                "postExport",
                "Post an approved export to the accounting system",
                "staging",
                "Post",
                Some((200, "Export")),
            )
        },
        Endpoint::RollbackExport => KeyedDoc {
            errors: &[502],
            ..doc(
                "rollbackExport",
                "Roll back a posted export",
                "staging",
                "Rollback",
                Some((200, "Export")),
            )
        },
        Endpoint::StageBatch => doc(
            "stageBatch",
            "Stage many exports at once (per-item results)",
            "staging",
            "StageBatch",
            Some((201, "BatchResult")),
        ),
    }
}
