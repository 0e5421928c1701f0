"""Export staging workflow: approvals, diffs, posting, rollback, audit trail."""

import csv
import hashlib
import io
import json
import subprocess
import time

import pytest

from conftest import ROOT, Client, Server, assert_problem, concurrently, unique


def invoice(**over):
    data = {
        "vendor_name": "Acme Supplies",
        "invoice_number": "INV-1001",
        "invoice_date": "2026-10-31",
        "currency": "EUR",
        "total_amount": "0.30",
        "line_items": [
            {"description": "Widget", "quantity": 1, "unit_price": "0.10", "amount": "0.10"},
            {"description": "Gadget", "quantity": 2, "unit_price": "0.10", "amount": "0.20"},
        ],
    }
    data.update(over)
    return data


@pytest.fixture(scope="module")
def srv(origin):
    s = Server(DESTINATION_URL=f"{origin.url}/destination", UPSTREAM_TIMEOUT_MS=2000,
               STAGING_APPROVAL_TIMEOUT_HOURS="0.001").start()
    yield s
    s.cleanup()


@pytest.fixture
def team(srv):
    tenant = unique("fin")
    return {
        "preparer": Client(srv, unique("prep"), tenant),
        "approver": Client(srv, unique("appr"), tenant, ["approver"]),
        "approver2": Client(srv, unique("appr2"), tenant, ["approver"]),
        "clerk": Client(srv, unique("clerk"), tenant),
        "poster": Client(srv, unique("poster"), tenant, ["poster"]),
    }


def call(c, method, path, body=None, key=None):
    return c.server.request(method, path, body, c.headers(key if key is not None else unique("k")))


def stage(c, data=None, fmt="csv", key=None, **extra):
    body = {"invoice_id": unique("inv"), "export_format": fmt, "destination_system": "netsuite",
            "export_data": data or invoice(), **extra}
    return call(c, "POST", "/v1/staging/exports", body, key)


def act(c, export_id, action, body=None, key=None):
    method = "PUT" if action in ("review", "approve", "reject") else "POST"
    return call(c, method, f"/v1/staging/exports/{export_id}/{action}", body or {}, key)


def staged_for_approval(team):
    e = stage(team["preparer"]).json()
    assert act(team["clerk"], e["id"], "review").status == 200
    return e["id"]


def test_staging_validates_scores_and_takes_the_preparer_from_the_token(team):
    r = stage(team["preparer"])
    assert r.status == 201, r
    e = r.json()
    assert e["status"] == "prepared" and e["quality_score"] == 100
    assert e["validation_errors"] == [] and e["prepared_by"] == team["preparer"].sub
    assert e["original_data"] == e["prepared_data"] == invoice()
    bad = stage(team["preparer"], invoice(currency="usd", invoice_date="2023-02-29", total_amount="0.35")).json()
    codes = {f["code"] for f in bad["validation_errors"]}
    assert {"invalid_currency", "invalid_date", "total_mismatch"} <= codes
    assert bad["quality_score"] < 70
    key = unique("k")
    forged = call(team["preparer"], "POST", "/v1/staging/exports",
                  {"invoice_id": "x", "export_format": "csv", "destination_system": "n", "export_data": invoice(),
                   "prepared_by": "someone-else"}, key)
    p = assert_problem(forged, 400, "identity-from-token")
    assert "`prepared_by`" in p["detail"] and "token" in p["detail"] and "someone-else" not in p["detail"], p
    # Naming oneself is accepted (AP Intake's body has the field); the refusal above
    # did not use up the key.
    own = call(team["preparer"], "POST", "/v1/staging/exports",
               {"invoice_id": "x", "export_format": "csv", "destination_system": "n", "export_data": invoice(),
                "prepared_by": team["preparer"].sub}, key)
    assert own.status == 201 and own.json()["prepared_by"] == team["preparer"].sub, own
    assert_problem(stage(team["preparer"], invoice(colour="red")), 400, "unknown-field")
    assert_problem(call(team["preparer"], "POST", "/v1/staging/exports", {"export_format": "csv"}, ""), 400)


def test_full_happy_path_with_corrections_and_the_audit_trail_row_by_row(team, origin):
    prep, appr, clerk, poster = team["preparer"], team["approver"], team["clerk"], team["poster"]
    e = stage(prep, invoice(vendor_name="Acme Suplies"), key="k-stage").json()
    eid = e["id"]
    assert act(clerk, eid, "review", {"comments": "looks fine"}, "k-review").json()["status"] == "under_review"
    corrected = invoice(vendor_name="Acme Supplies")
    r = act(appr, eid, "approve", {"approved_data": corrected, "change_reason": "vendor typo",
                                   "approval_comments": "ok"}, "k-approve")
    assert r.status == 200, r
    assert r.json()["status"] == "approved" and r.json()["approved_by"] == appr.sub
    d = appr.get(f"/v1/staging/exports/{eid}/diff").json()
    assert [(c["path"], c["before"], c["after"]) for c in d["changes"]] == [("$.vendor_name", "Acme Suplies", "Acme Supplies")]
    assert d["change_reason"] == "vendor typo"
    deliveries = origin.count("/destination")
    posted = act(poster, eid, "post", {}, "k-post")
    assert posted.status == 200, posted
    p = posted.json()
    assert p["status"] == "posted" and p["external_reference"].startswith("ACC-")
    assert origin.count("/destination") == deliveries + 1
    headers, body = origin.requests["/destination"][-1]
    assert headers["idempotency-key"] == f"export-{eid}"
    f = clerk.get(f"/v1/staging/exports/{eid}/file")
    assert f.status == 200 and f.body == body
    assert p["file"]["sha256"] == hashlib.sha256(f.body).hexdigest() == f.header("x-export-sha256")
    assert p["file"]["size"] == len(f.body) and p["file"]["name"].endswith(".csv")
    rows = list(csv.reader(io.StringIO(f.body.decode(), newline="")))
    assert rows[0][:3] == ["invoice_number", "invoice_date", "vendor_name"] and rows[1][2] == "Acme Supplies"
    assert f.body.count(b"\r\n") == 3
    assert_problem(act(appr, eid, "rollback", {}, "k-rb0"), 400)
    rb = act(appr, eid, "rollback", {"reason": "wrong period"}, "k-rollback")
    assert rb.status == 200 and rb.json()["status"] == "rolled_back"
    assert origin.count("/destination/rollback") >= 1
    audit = clerk.get(f"/v1/staging/exports/{eid}/audit").json()["entries"]
    expected = [
        (1, "stage", None, "prepared", prep.sub, "k-stage"),
        (2, "review", "prepared", "under_review", clerk.sub, "k-review"),
        (3, "approve", "under_review", "approved", appr.sub, "k-approve"),
        (4, "post", "approved", "posted", poster.sub, "k-post"),
        (5, "rollback", "posted", "rolled_back", appr.sub, "k-rollback"),
    ]
    assert [(a["seq"], a["event"], a["from"], a["to"], a["actor"], a["idempotency_key"]) for a in audit] == expected
    assert audit[0]["before"] is None and audit[0]["after"]["status"] == "prepared"
    for a in audit[1:]:
        assert a["before"]["status"] == a["from"] and a["after"]["status"] == a["to"]
    assert audit[2]["after"]["approved_data"]["vendor_name"] == "Acme Supplies"
    assert audit[2]["before"]["prepared_data"]["vendor_name"] == "Acme Suplies"


def test_replayed_approve_and_post_add_no_audit_row_and_no_second_delivery(team, origin):
    eid = staged_for_approval(team)
    a1 = act(team["approver"], eid, "approve", {}, "k-a")
    a2 = act(team["approver"], eid, "approve", {}, "k-a")
    assert a1.status == a2.status == 200 and a2.header("idempotent-replayed") == "true" and a2.body == a1.body
    before = origin.count("/destination")
    p = [act(team["poster"], eid, "post", {}, "k-p") for _ in range(3)]
    assert all(r.status == 200 for r in p) and p[2].header("idempotent-replayed") == "true"
    assert origin.count("/destination") == before + 1
    audit = team["clerk"].get(f"/v1/staging/exports/{eid}/audit").json()["entries"]
    assert [a["event"] for a in audit] == ["stage", "review", "approve", "post"]


def test_50_concurrent_approvals_with_different_keys_approve_once(team):
    eid = staged_for_approval(team)
    replies = concurrently(50, lambda i: act(team["approver"], eid, "approve", {}, f"k-conc-{i}"))
    statuses = [r.status for r in replies]
    assert statuses.count(200) == 1, statuses
    assert statuses.count(409) == 49, statuses
    for r in replies:
        if r.status == 409:
            assert r.json()["current_state"] == "approved"
    audit = team["clerk"].get(f"/v1/staging/exports/{eid}/audit").json()["entries"]
    assert [a["event"] for a in audit].count("approve") == 1


def test_self_approval_missing_role_and_low_quality_are_refused(team, srv):
    eid = staged_for_approval(team)
    assert_problem(act(team["clerk"], eid, "approve"), 403)
    self_approver = Client(srv, team["preparer"].sub, team["preparer"].tenant, ["approver"])
    p = assert_problem(act(self_approver, eid, "approve"), 403)
    assert "segregation" in p["detail"]
    bad = stage(team["preparer"], invoice(total_amount="0.99")).json()
    act(team["clerk"], bad["id"], "review")
    p = assert_problem(act(team["approver"], bad["id"], "approve"), 422, "quality-below-threshold")
    assert "total_amount" in p["detail"]
    fixed = act(team["approver"], bad["id"], "approve",
                {"approved_data": invoice(total_amount="0.30"), "change_reason": "total corrected"})
    assert fixed.status == 200 and fixed.json()["quality_score"] == 100
    assert team["clerk"].get(f"/v1/staging/exports/{eid}").json()["status"] == "under_review"


def test_changing_data_at_approval_needs_a_reason(team):
    eid = staged_for_approval(team)
    r = act(team["approver"], eid, "approve", {"approved_data": invoice(vendor_name="Other")})
    assert_problem(r, 422, "change-reason-required")


def test_illegal_transitions_are_409_naming_the_current_state(team):
    e = stage(team["preparer"]).json()["id"]
    assert assert_problem(act(team["poster"], e, "post"), 409)["current_state"] == "prepared"
    assert assert_problem(act(team["approver"], e, "rollback", {"reason": "x"}), 409)["current_state"] == "prepared"
    assert act(team["approver"], e, "reject", {"reason": "duplicate"}).json()["status"] == "rejected"
    assert assert_problem(act(team["clerk"], e, "review"), 409)["current_state"] == "rejected"
    assert assert_problem(act(team["approver"], e, "approve"), 409)["current_state"] == "rejected"
    approved = staged_for_approval(team)
    assert act(team["approver"], approved, "approve").status == 200
    assert assert_problem(act(team["approver"], approved, "approve"), 409)["current_state"] == "approved"
    assert assert_problem(act(team["clerk"], approved, "review"), 409)["current_state"] == "approved"
    assert_problem(act(team["clerk"], "exp_nope", "review"), 404)


def test_review_is_optional_and_the_audit_trail_shows_where_each_decision_came_from(team):
    approved = stage(team["preparer"]).json()["id"]
    a = act(team["approver"], approved, "approve", {}, "k-skip-review")
    assert a.status == 200 and a.json()["status"] == "approved" and a.json()["reviewed_by"] is None, a
    rejected = stage(team["preparer"]).json()["id"]
    assert act(team["approver"], rejected, "reject", {"reason": "duplicate"}).json()["status"] == "rejected"
    reviewed = staged_for_approval(team)
    assert act(team["approver"], reviewed, "approve").status == 200
    trail = lambda eid: [(x["event"], x["from"], x["to"]) for x in
                         team["clerk"].get(f"/v1/staging/exports/{eid}/audit").json()["entries"]]
    assert trail(approved) == [("stage", None, "prepared"), ("approve", "prepared", "approved")]
    assert trail(rejected) == [("stage", None, "prepared"), ("reject", "prepared", "rejected")]
    assert trail(reviewed) == [("stage", None, "prepared"), ("review", "prepared", "under_review"),
                               ("approve", "under_review", "approved")]


def test_a_corrected_approval_keeps_the_staged_score_and_findings_beside_the_approved_ones(team):
    bad = invoice(total_amount="0.35")
    e = stage(team["preparer"], bad).json()
    staged_codes = [f["code"] for f in e["validation_errors"]]
    assert "total_mismatch" in staged_codes and e["quality_score"] < 100, e
    assert (e["staged_quality_score"], e["staged_validation_errors"]) == (e["quality_score"], e["validation_errors"])
    assert act(team["clerk"], e["id"], "review").status == 200
    r = act(team["approver"], e["id"], "approve", {"approved_data": invoice(), "change_reason": "total corrected"})
    assert r.status == 200, r
    for view in (r.json(), team["clerk"].get(f"/v1/staging/exports/{e['id']}").json(),
                 next(x for x in team["clerk"].get("/v1/staging/exports?status=approved").json()["exports"]
                      if x["id"] == e["id"])):
        assert view["quality_score"] == 100 and view["validation_errors"] == [], view
        assert view["staged_quality_score"] == e["quality_score"], view
        assert [f["code"] for f in view["staged_validation_errors"]] == staged_codes, view
        assert view["staged_validation_warnings"] == e["validation_warnings"], view


def test_money_moves_only_with_its_role_and_never_by_the_exports_preparer(team, srv, origin):
    """Posting needs `approver` or `poster`, rolling back `approver` and a
    reason; the preparer approves and posts nothing of their own, whatever their
    roles. Each refusal is a 403 problem naming the rule, and changes nothing."""
    eid = staged_for_approval(team)
    assert act(team["approver"], eid, "approve").status == 200
    deliveries = origin.count("/destination")
    for who in ("clerk", "preparer"):
        p = assert_problem(act(team[who], eid, "post", {}, unique("k")), 403)
        assert p["detail"] == "the approver or poster role is required", p
    # The poster role posts, but does not approve.
    other = staged_for_approval(team)
    p = assert_problem(act(team["poster"], other, "approve", {}, unique("k")), 403)
    assert p["detail"] == "the approver role is required", p
    assert act(team["poster"], eid, "post").json()["status"] == "posted"
    assert origin.count("/destination") == deliveries + 1
    for who in ("clerk", "poster", "preparer"):
        p = assert_problem(act(team[who], eid, "rollback", {"reason": "oops"}, unique("k")), 403)
        assert p["detail"] == "the approver role is required", p
    assert team["clerk"].get(f"/v1/staging/exports/{eid}").json()["status"] == "posted"
    # A preparer who is also an approver: submits for review, approves and posts nothing of their own.
    tenant = team["preparer"].tenant
    both = Client(srv, unique("both"), tenant, ["approver", "poster"])
    mine = stage(both).json()["id"]
    assert act(both, mine, "review").status == 200
    p = assert_problem(act(both, mine, "approve", {}, unique("k")), 403)
    assert p["detail"] == "segregation of duties: the approver must not be the preparer of the export", p
    assert act(team["approver"], mine, "approve").status == 200
    p = assert_problem(act(both, mine, "post", {}, unique("k")), 403)
    assert p["detail"] == "segregation of duties: the poster must not be the preparer of the export", p
    assert team["clerk"].get(f"/v1/staging/exports/{mine}").json()["status"] == "approved"
    audit = team["clerk"].get(f"/v1/staging/exports/{mine}/audit").json()["entries"]
    assert [a["event"] for a in audit] == ["stage", "review", "approve"]
    assert act(team["poster"], mine, "post").json()["status"] == "posted"
    assert act(both, mine, "rollback", {"reason": "posted to the wrong period"}).json()["status"] == "rolled_back"


def test_a_post_rejects_unknown_fields_bad_names_and_other_identities_without_using_up_the_key(team):
    eid = staged_for_approval(team)
    act(team["approver"], eid, "approve")
    key = unique("k")
    path = f"/v1/staging/exports/{eid}/post"
    p = assert_problem(call(team["poster"], "POST", path, {"force": True, "dry_run": 1}, key), 400, "unknown-field")
    assert "`dry_run`" in p["detail"], p
    for bad in ("[]", "null", "{"):
        assert_problem(call(team["poster"], "POST", path, bad, key), 400, "invalid-json")
    for name in ("../../etc/passwd", "a/b.csv", "a\\b.csv", "..", "x\r\nSet-Cookie: a=b", "inv\u202ecsv.exe",
                 "n" * 256, ""):
        p = assert_problem(call(team["poster"], "POST", path, {"export_filename": name}, key), 400, "invalid-field")
        assert "export_filename" in p["detail"], (name, p)
    assert_problem(call(team["poster"], "POST", path, {"external_reference": "a\nb"}, key), 400, "invalid-field")
    p = assert_problem(call(team["poster"], "POST", path, {"posted_by": team["approver"].sub}, key), 400,
                       "identity-from-token")
    assert "`posted_by`" in p["detail"], p
    assert team["clerk"].get(f"/v1/staging/exports/{eid}").json()["status"] == "approved"
    r = call(team["poster"], "POST", path, "", key)
    assert r.status == 200 and r.json()["status"] == "posted", r


def test_the_callers_reference_is_kept_beside_the_destinations_and_the_file_keeps_its_name(team, origin):
    eid = staged_for_approval(team)
    act(team["approver"], eid, "approve")
    name = "Rechnung März 2026.csv"
    r = act(team["poster"], eid, "post", {"external_reference": "QB-12345", "export_filename": name,
                                         "posted_by": team["poster"].sub})
    assert r.status == 200, r
    e = r.json()
    assert e["external_reference"].startswith("ACC-") and e["caller_reference"] == "QB-12345"
    assert e["file"]["name"] == name
    headers, _ = origin.requests["/destination"][-1]
    assert headers["x-export-filename"] == "UTF-8''Rechnung%20M%C3%A4rz%202026.csv"
    f = team["clerk"].get(f"/v1/staging/exports/{eid}/file")
    assert f.status == 200, f
    assert f.header("content-disposition") == (
        "attachment; filename=\"Rechnung M_rz 2026.csv\"; filename*=UTF-8''Rechnung%20M%C3%A4rz%202026.csv")
    audit = team["clerk"].get(f"/v1/staging/exports/{eid}/audit").json()["entries"]
    assert audit[-1]["detail"]["caller_reference"] == "QB-12345"
    assert audit[-1]["detail"]["external_reference"] == e["external_reference"]


def test_a_destination_that_gives_no_reference_leaves_the_callers(team, origin):
    eid = staged_for_approval(team)
    act(team["approver"], eid, "approve")
    origin.destination_gives_reference = False
    try:
        mine = act(team["poster"], eid, "post", {"external_reference": "QB-777"})
        other = staged_for_approval(team)
        act(team["approver"], other, "approve")
        none = act(team["poster"], other, "post")
    finally:
        origin.destination_gives_reference = True
    assert mine.status == 200 and mine.json()["external_reference"] == "QB-777", mine
    assert none.status == 200 and none.json()["external_reference"] == f"netsuite:{other}", none
    assert none.json()["caller_reference"] is None


def test_failed_delivery_moves_to_failed_and_a_retry_posts(team, origin):
    eid = staged_for_approval(team)
    act(team["approver"], eid, "approve")
    origin.destination_status = 503
    try:
        r = act(team["poster"], eid, "post", {}, "k-post-retry")
        p = assert_problem(r, 502)
        assert p["current_state"] == "failed"
        e = team["clerk"].get(f"/v1/staging/exports/{eid}").json()
        assert e["status"] == "failed" and e["retries"] == 1 and "503" in e["last_error"]
    finally:
        origin.destination_status = 200
    again = act(team["poster"], eid, "post", {}, "k-post-retry")
    assert again.status == 200 and again.json()["status"] == "posted"
    audit = team["clerk"].get(f"/v1/staging/exports/{eid}/audit").json()["entries"]
    assert [(a["event"], a["to"]) for a in audit][-2:] == [("post_failed", "failed"), ("post", "posted")]


def test_a_rollback_the_destination_refuses_changes_nothing_and_a_retry_rolls_back(team, origin):
    eid = staged_for_approval(team)
    act(team["approver"], eid, "approve")
    assert act(team["poster"], eid, "post").json()["status"] == "posted"
    origin.rollback_status = 500
    try:
        r = act(team["approver"], eid, "rollback", {"reason": "wrong period"}, "k-rb-retry")
        p = assert_problem(r, 502, "delivery-failed")
        assert p["current_state"] == "posted" and "destination answered 500" in p["detail"], p
        assert team["clerk"].get(f"/v1/staging/exports/{eid}").json()["status"] == "posted"
    finally:
        origin.rollback_status = 200
    again = act(team["approver"], eid, "rollback", {"reason": "wrong period"}, "k-rb-retry")
    assert again.status == 200 and again.json()["status"] == "rolled_back", again
    audit = team["clerk"].get(f"/v1/staging/exports/{eid}/audit").json()["entries"]
    assert [a["event"] for a in audit][-2:] == ["post", "rollback"]


def test_posting_stops_after_max_retries(team, origin):
    e = stage(team["preparer"], max_retries=1).json()["id"]
    act(team["clerk"], e, "review")
    act(team["approver"], e, "approve")
    origin.destination_status = 500
    try:
        assert act(team["poster"], e, "post").status == 502  # the first attempt
        assert act(team["poster"], e, "post").status == 502  # the one retry
        p = assert_problem(act(team["poster"], e, "post"), 409)
        assert p["current_state"] == "failed" and "max_retries is 1" in p["detail"]
    finally:
        origin.destination_status = 200


def test_awkward_values_survive_the_csv_file(team):
    awkward = invoice(vendor_name='Müller, "Søn"\nLtd — 東京', line_items=[
        {"description": 'Bolts, "large"', "quantity": 1, "unit_price": "0.10", "amount": "0.10"},
        {"description": " leading space\r\nand CRLF", "quantity": 2, "unit_price": "0.10", "amount": "0.20"}])
    e = stage(team["preparer"], awkward).json()["id"]
    act(team["clerk"], e, "review")
    act(team["approver"], e, "approve")
    assert act(team["poster"], e, "post").status == 200
    body = team["clerk"].get(f"/v1/staging/exports/{e}/file").body.decode()
    rows = list(csv.reader(io.StringIO(body, newline="")))
    assert rows[1][2] == awkward["vendor_name"]
    assert [r[5] for r in rows[1:]] == ['Bolts, "large"', " leading space\r\nand CRLF"]


def test_json_export_renders_the_approved_data(team):
    e = stage(team["preparer"], fmt="json").json()["id"]
    act(team["clerk"], e, "review")
    act(team["approver"], e, "approve")
    p = act(team["poster"], e, "post").json()
    f = team["clerk"].get(f"/v1/staging/exports/{e}/file")
    assert f.header("content-type").startswith("application/json")
    doc = json.loads(f.body)
    assert doc["export_id"] == e and doc["invoice"] == invoice()
    assert p["file"]["name"].endswith(".json")


def approved_then_stored_as(team, srv, fmt):
    """An approved export whose stored format is then changed to `fmt` behind the
    Worker's back (past the column's CHECK, as a bad migration could)."""
    e = stage(team["preparer"]).json()["id"]
    assert act(team["clerk"], e, "review").status == 200
    assert act(team["approver"], e, "approve").status == 200
    srv.d1_write("PRAGMA ignore_check_constraints = ON; "
                 f"UPDATE staged_exports SET export_format = '{fmt}' WHERE id = '{e}'")
    return e


def test_an_export_format_the_code_does_not_know_is_an_internal_error_not_a_csv(team, srv, origin):
    e = approved_then_stored_as(team, srv, "xml")
    delivered = origin.count("/destination")
    # Used to render a CSV file for any format but "json" and deliver it, then
    # fail to write the row back (the CHECK) and answer 503, so every retry
    # delivered it again.
    r = act(team["poster"], e, "post", key="k-post")
    assert origin.count("/destination") == delivered
    assert_problem(r, 500, "internal")
    assert srv.d1(f"SELECT status, file_name, version FROM staged_exports WHERE id = '{e}'") == \
        [{"status": "approved", "file_name": None, "version": 3}]
    # The 500 was not stored: once the row is readable again, the same key posts it.
    srv.d1_write(f"UPDATE staged_exports SET export_format = 'csv' WHERE id = '{e}'")
    r = act(team["poster"], e, "post", key="k-post")
    assert r.status == 200 and r.header("idempotent-replayed") is None, r
    assert r.json()["status"] == "posted" and r.json()["file"]["name"].endswith(".csv"), r


def test_reading_an_export_the_code_cannot_decode_is_500_not_503(team, srv):
    e = approved_then_stored_as(team, srv, "xml")
    for path in (f"/v1/staging/exports/{e}", f"/v1/staging/exports/{e}/diff", "/v1/staging/exports"):
        assert_problem(team["clerk"].get(path), 500, "internal")
    # A stored JSON column that does not parse: 500, where it used to read as null.
    other = approved_then_stored_as(team, srv, "csv")
    srv.d1_write(f"UPDATE staged_exports SET diff = '[{{oops' WHERE id = '{other}'")
    assert_problem(team["clerk"].get(f"/v1/staging/exports/{other}/diff"), 500, "internal")


# The largest value rust_decimal holds (2**96 - 1): the amounts below sit at and past it.
EDGE = "79228162514264337593543950335"


def overflow_invoice():
    """One line whose amount minus quantity x unit_price, and whose total minus the
    line sum, are both beyond a decimal's range: this used to panic the Worker."""
    return invoice(total_amount=EDGE, line_items=[
        {"description": "Widget", "quantity": "1", "unit_price": EDGE, "amount": f"-{EDGE}"}])


def sum_overflow_invoice():
    """Two lines that each fit but whose sum does not."""
    return invoice(total_amount=EDGE, line_items=[
        {"description": d, "quantity": 1, "unit_price": EDGE, "amount": EDGE} for d in ("a", "b")])


def timed(fn):
    start = time.monotonic()
    reply = fn()
    return reply, time.monotonic() - start


def test_out_of_range_amounts_are_staged_with_findings_and_the_key_still_answers(team):
    prep = team["preparer"]
    for data, expected in [
        (overflow_invoice(), [("total_amount", "total_mismatch"), ("line_items[0].amount", "line_amount_mismatch")]),
        (sum_overflow_invoice(), [("total_amount", "total_mismatch")]),
    ]:
        key = unique("k-overflow")
        body = {"invoice_id": unique("inv"), "export_format": "csv", "destination_system": "netsuite",
                "export_data": data}
        r, took = timed(lambda: prep.server.request("POST", "/v1/staging/exports", body, prep.headers(key), timeout=30))
        assert r.status == 201, r
        assert took < 10, took
        e = r.json()
        assert [(f["field"], f["code"]) for f in e["validation_errors"]] == expected
        assert e["quality_score"] < 70 and e["original_data"] == data
        # The key's Durable Object is alive: the same request replays the answer.
        again, took = timed(lambda: prep.server.request("POST", "/v1/staging/exports", body, prep.headers(key),
                                                        timeout=30))
        assert again.status == 201 and again.header("idempotent-replayed") == "true", again
        assert again.body == r.body and took < 10
        assert prep.get(f"/v1/staging/exports/{e['id']}").json()["quality_score"] == e["quality_score"]
        # Below the threshold: an approver cannot approve it as it is.
        act(team["clerk"], e["id"], "review")
        assert_problem(act(team["approver"], e["id"], "approve"), 422, "quality-below-threshold")


def test_out_of_range_amounts_in_a_batch_are_staged_with_findings_and_the_key_still_answers(team):
    prep = team["preparer"]
    items = [{"invoice_id": f"inv-{name}", "export_format": "csv", "destination_system": "sap", "export_data": data}
             for name, data in [("overflow", overflow_invoice()), ("sum", sum_overflow_invoice()), ("ok", invoice())]]
    key = unique("k-batch-overflow")

    def send():
        return prep.server.request("POST", "/v1/staging/batches", {"exports": items}, prep.headers(key), timeout=30)

    r, took = timed(send)
    assert r.status == 201, r
    assert took < 10, took
    b = r.json()
    assert (b["total"], b["staged"], b["invalid"]) == (3, 3, 0)
    assert [i["status"] for i in b["items"]] == ["staged"] * 3
    assert [i["validation_errors"] for i in b["items"]] == [2, 1, 0]
    assert b["items"][0]["quality_score"] < 70 and b["items"][1]["quality_score"] < 70
    assert b["items"][2]["quality_score"] == 100
    again, took = timed(send)
    assert again.status == 201 and again.header("idempotent-replayed") == "true", again
    assert again.body == r.body and took < 10
    progress = prep.get(f"/v1/staging/batches/{b['batch_id']}").json()
    assert progress["by_state"]["prepared"] == 3


def test_csv_injection_is_neutralised_in_the_posted_file_but_numbers_are_not(team, origin):
    formula = '=HYPERLINK("http://x","x")'
    data = invoice(vendor_name=formula, total_amount="0.20", line_items=[
        {"description": "@SUM(1+1)", "quantity": 1, "unit_price": "0.10", "amount": "0.10"},
        {"description": "-credit", "quantity": -1, "unit_price": "0.10", "amount": "-0.10"},
        {"description": "Gadget", "quantity": 2, "unit_price": "0.10", "amount": "0.20"}])
    e = stage(team["preparer"], data).json()
    assert e["quality_score"] >= 70, e
    assert act(team["clerk"], e["id"], "review").status == 200
    approved = act(team["approver"], e["id"], "approve")
    assert approved.status == 200 and approved.json()["approved_by"] == team["approver"].sub, approved
    posted = act(team["poster"], e["id"], "post")
    assert posted.status == 200, posted
    f = team["clerk"].get(f"/v1/staging/exports/{e['id']}/file")
    assert f.status == 200
    _, delivered = origin.requests["/destination"][-1]
    assert delivered == f.body
    rows = list(csv.reader(io.StringIO(f.body.decode(), newline="")))
    assert [r[2] for r in rows[1:]] == ["'" + formula] * 3
    assert [r[5] for r in rows[1:]] == ["'@SUM(1+1)", "'-credit", "Gadget"]
    # Numbers stay numbers, the negative ones included.
    assert [r[6:] for r in rows[1:]] == [["1", "0.10", "0.10", "0.20"], ["-1", "0.10", "-0.10", "0.20"],
                                         ["2", "0.10", "0.20", "0.20"]]
    # The stored data is untouched; a JSON export carries the text as it is.
    assert team["clerk"].get(f"/v1/staging/exports/{e['id']}").json()["approved_data"]["vendor_name"] == formula
    j = stage(team["preparer"], data, fmt="json").json()["id"]
    act(team["clerk"], j, "review")
    act(team["approver"], j, "approve")
    assert act(team["poster"], j, "post").status == 200
    doc = json.loads(team["clerk"].get(f"/v1/staging/exports/{j}/file").body)
    assert doc["invoice"]["vendor_name"] == formula
    assert doc["invoice"]["line_items"][0]["description"] == "@SUM(1+1)"


def test_export_data_too_large_for_a_storage_row_is_413_before_the_key_is_used(team):
    big = invoice()
    big["line_items"][0]["description"] = "d" * 300_000  # fits MAX_BODY_BYTES, not the row budget
    p = assert_problem(stage(team["preparer"], big, key="k-too-big"), 413, "data-too-large")
    assert "262144" in p["detail"]
    # Nothing was stored: the same key stages a smaller export.
    ok = stage(team["preparer"], key="k-too-big")
    assert ok.status == 201 and ok.header("idempotent-replayed") is None
    # Corrections at approval are held to the same budget.
    export_id = staged_for_approval(team)
    r = act(team["approver"], export_id, "approve", {"approved_data": big, "change_reason": "typo"})
    assert_problem(r, 413, "data-too-large")
    # In a batch, the item is invalid and the others are staged.
    r = call(team["preparer"], "POST", "/v1/staging/batches",
             {"exports": [{"invoice_id": unique("inv"), "export_format": "csv", "destination_system": "netsuite",
                           "export_data": d} for d in (invoice(), big)]})
    assert r.status == 201, r
    items = r.json()["items"]
    assert [i["status"] for i in items] == ["staged", "invalid"]
    assert "262144" in items[1]["error"]


def test_a_batch_of_1000_is_staged_with_per_item_results_and_progress(team):
    items = [{"invoice_id": f"inv-{i}", "export_format": "csv", "destination_system": "sap",
              "export_data": invoice(invoice_number=f"INV-{i}")} for i in range(997)]
    items.append({"invoice_id": "bad-1", "export_format": "xml", "destination_system": "sap", "export_data": invoice()})
    items.append({"invoice_id": "bad-2", "export_format": "csv", "destination_system": "sap", "export_data": invoice(x=1)})
    items.append({"invoice_id": "low", "export_format": "csv", "destination_system": "sap",
                  "export_data": invoice(currency="XXX1")})
    r = call(team["preparer"], "POST", "/v1/staging/batches", {"exports": items}, "k-batch")
    assert r.status == 201, r
    b = r.json()
    assert (b["total"], b["staged"], b["invalid"]) == (1000, 998, 2)
    assert [i["status"] for i in b["items"][997:]] == ["invalid", "invalid", "staged"]
    assert "export_format" in b["items"][997]["error"] and "x" in b["items"][998]["error"]
    first = b["items"][0]["export_id"]
    act(team["clerk"], first, "review")
    progress = team["clerk"].get(f"/v1/staging/batches/{b['batch_id']}").json()
    assert progress["by_state"]["prepared"] == 997 and progress["by_state"]["under_review"] == 1
    assert 99 < progress["average_quality"] < 100
    too_many = call(team["preparer"], "POST", "/v1/staging/batches", {"exports": items + items[:1]})
    assert_problem(too_many, 400)
    replay = call(team["preparer"], "POST", "/v1/staging/batches", {"exports": items}, "k-batch")
    assert replay.header("idempotent-replayed") == "true" and replay.body == r.body


def test_a_batch_staging_an_item_in_someone_elses_name_is_refused_whole(team, srv):
    mine = {"invoice_id": "i-1", "export_format": "csv", "destination_system": "sap", "export_data": invoice(),
            "prepared_by": team["preparer"].sub}
    forged = {**mine, "invoice_id": "i-2", "prepared_by": team["approver"].sub}
    r = call(team["preparer"], "POST", "/v1/staging/batches", {"exports": [mine, forged]})
    p = assert_problem(r, 400, "identity-from-token")
    assert "exports[1].prepared_by" in p["detail"], p
    ok = call(team["preparer"], "POST", "/v1/staging/batches", {"exports": [mine]})
    assert ok.status == 201 and ok.json()["staged"] == 1, ok


def test_exports_are_listed_by_status_and_paged(team):
    ids = [stage(team["preparer"]).json()["id"] for _ in range(3)]
    act(team["clerk"], ids[0], "review")
    page = team["clerk"].get("/v1/staging/exports?status=prepared&limit=1").json()
    assert [e["id"] for e in page["exports"]] == [ids[1]] and page["next_offset"] == 1
    assert [e["id"] for e in team["clerk"].get("/v1/staging/exports?status=under_review").json()["exports"]] == [ids[0]]
    assert_problem(team["clerk"].get("/v1/staging/exports?status=nope"), 400)
    # The approval queue: several states at once, with what an approver decides with.
    act(team["approver"], ids[2], "approve")
    queue = team["clerk"].get("/v1/staging/exports?status=prepared,under_review").json()["exports"]
    assert [e["id"] for e in queue] == ids[:2]
    for e in queue:
        assert e["summary"] == {"vendor_name": "Acme Supplies", "invoice_number": "INV-1001",
                                "invoice_date": "2026-10-31", "total_amount": "0.30", "currency": "EUR"}, e
        assert e["approval_deadline"] == e["updated_at"] + int(0.001 * 3600 * 1000), e
        assert "prepared_data" not in e and "approved_data" not in e
    approved = team["clerk"].get("/v1/staging/exports?status=approved").json()["exports"]
    assert [(e["id"], e["approval_deadline"]) for e in approved] == [(ids[2], None)]
    for bad in ("prepared,", "prepared,nope", ","):
        p = assert_problem(team["clerk"].get(f"/v1/staging/exports?status={bad}"), 400, "invalid-field")
        assert "comma-separated" in p["detail"], p


def test_another_tenant_sees_none_of_it(team, srv):
    eid = staged_for_approval(team)
    other = Client(srv, unique("other"), None, ["approver"])
    for path in ["", "/diff", "/audit", "/file"]:
        assert_problem(other.get(f"/v1/staging/exports/{eid}{path}"), 404)
    assert other.get("/v1/staging/exports").json()["exports"] == []
    assert_problem(act(other, eid, "approve"), 404)
    assert team["clerk"].get(f"/v1/staging/exports/{eid}").json()["status"] == "under_review"


def test_the_audit_trail_cannot_be_updated_or_deleted(team, srv):
    eid = staged_for_approval(team)
    for sql in [f"UPDATE staging_audit SET actor = 'x' WHERE export_id = '{eid}'",
                f"DELETE FROM staging_audit WHERE export_id = '{eid}'"]:
        out = subprocess.run([str(ROOT / "node_modules/.bin/wrangler"), "d1", "execute", "idemgate", "--local",
                              "--persist-to", srv.state_dir, "--command", sql],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode != 0 and "append-only" in (out.stdout + out.stderr)
    assert len(team["clerk"].get(f"/v1/staging/exports/{eid}/audit").json()["entries"]) == 2


def test_zz_sweep_expires_exports_waiting_for_approval(team, srv):
    waiting = stage(team["preparer"]).json()["id"]
    reviewed = staged_for_approval(team)
    time.sleep(4)  # STAGING_APPROVAL_TIMEOUT_HOURS=0.001 is 3.6 s
    # Each run expires a bounded number (oldest first): the 1000-export batch
    # above is also waiting, so run the sweep until it reaches these two.
    deadline = time.time() + 90
    while team["clerk"].get(f"/v1/staging/exports/{reviewed}").json()["status"] != "rejected":
        assert time.time() < deadline
        assert srv.request("GET", "/cdn-cgi/handler/scheduled?cron=*/15+*+*+*+*", timeout=120).status == 200
    for eid in (waiting, reviewed):
        e = team["clerk"].get(f"/v1/staging/exports/{eid}").json()
        assert e["status"] == "rejected" and e["rejection_reason"] == "approval_timeout"
        last = team["clerk"].get(f"/v1/staging/exports/{eid}/audit").json()["entries"][-1]
        assert (last["event"], last["actor"], last["to"]) == ("expire", "system", "rejected")
