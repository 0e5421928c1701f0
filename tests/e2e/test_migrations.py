"""The D1 migrations over data written before them (SQLite, which D1 is): an
export approved with corrections before the staged findings had columns of their
own gets them back from its approval's audit row; one not yet approved keeps its
own."""

import json
import sqlite3

from conftest import ROOT

MIGRATIONS = sorted((ROOT / "migrations").glob("*.sql"))


def apply(db, start="", upto="~"):
    """The migrations named from `start` (included) to `upto` (excluded), in order."""
    for m in MIGRATIONS:
        if start <= m.name < upto:
            db.executescript(m.read_text())


def export(db, eid, findings, score, status="prepared"):
    db.execute(
        "INSERT INTO staged_exports (id, tenant, invoice_id, export_format, destination_system, status, version, "
        "original_data, prepared_data, validation_errors, validation_warnings, quality_score, prepared_by, "
        "max_retries, created_at, updated_at) VALUES (?, 't', 'inv', 'csv', 'erp', ?, 1, '{}', '{}', ?, '[]', ?, "
        "'clara', 3, 1, 1)", (eid, status, json.dumps(findings), score))


def test_the_staged_findings_of_exports_approved_before_the_migration_come_back_from_the_audit_trail():
    db = sqlite3.connect(":memory:")
    apply(db, upto="0007")
    staged = [{"code": "total_mismatch", "field": "total_amount", "message": "total differs"}]
    export(db, "exp_approved", staged, 65)
    # Approved with corrections: the row now holds the approved data's findings,
    # the approval's audit row the export as it was before.
    before = {"id": "exp_approved", "quality_score": 65, "validation_errors": staged, "validation_warnings": []}
    db.execute("INSERT INTO staging_audit (export_id, seq, tenant, actor, event, from_state, to_state, "
               "before_snapshot, after_snapshot, created_at) VALUES ('exp_approved', 2, 't', 'dan', 'approve', "
               "'prepared', 'approved', ?, '{}', 2)", (json.dumps(before),))
    db.execute("UPDATE staged_exports SET status = 'approved', validation_errors = '[]', quality_score = 100 "
               "WHERE id = 'exp_approved'")
    export(db, "exp_waiting", staged, 65)
    export(db, "exp_clean", [], 100)
    db.commit()
    apply(db, start="0007")
    rows = {r[0]: r[1:] for r in db.execute(
        "SELECT id, quality_score, validation_errors, staged_quality_score, staged_validation_errors, "
        "staged_validation_warnings FROM staged_exports")}
    assert rows["exp_approved"][0:2] == (100, "[]")
    assert rows["exp_approved"][2] == 65 and json.loads(rows["exp_approved"][3]) == staged
    assert json.loads(rows["exp_approved"][4]) == []
    assert rows["exp_waiting"][2] == 65 and json.loads(rows["exp_waiting"][3]) == staged
    assert rows["exp_clean"][2:] == (100, "[]", "[]")
    # The audit trail is untouched, and still append-only.
    assert db.execute("SELECT COUNT(*) FROM staging_audit").fetchone()[0] == 1
