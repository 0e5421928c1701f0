"""Export staging's financial controls beyond the roles: an approver sends an
export back to its preparer (`request-changes`), and with
`STAGING_SECOND_APPROVAL=amount_changes` an approval whose corrections change an
amount waits for a second approver."""

import time

import pytest

from conftest import Client, Server, assert_problem, unique


def invoice(**over):
    data = {
        "vendor_name": "Acme Supplies",
        "invoice_number": "INV-3001",
        "invoice_date": "2026-10-31",
        "currency": "EUR",
        "total_amount": "30.00",
        "line_items": [{"description": "Widget", "quantity": 3, "unit_price": "10.00", "amount": "30.00"}],
    }
    data.update(over)
    return data


@pytest.fixture(scope="module")
def srv(origin):
    s = Server(DESTINATION_URL=f"{origin.url}/destination", STAGING_SECOND_APPROVAL="amount_changes",
               STAGING_APPROVAL_TIMEOUT_HOURS="0.001").start()
    yield s
    s.cleanup()


@pytest.fixture
def team(srv):
    tenant = unique("fin")
    preparer = unique("prep")
    return {
        "preparer": Client(srv, preparer, tenant),
        # The preparer holding the approver role too: still may not approve their own.
        "preparer_approver": Client(srv, preparer, tenant, ["approver"]),
        "approver": Client(srv, unique("appr"), tenant, ["approver"]),
        "approver2": Client(srv, unique("appr2"), tenant, ["approver"]),
        "clerk": Client(srv, unique("clerk"), tenant),
    }


def call(c, method, path, body=None, key=None):
    return c.server.request(method, path, body, c.headers(key or unique("k")))


def stage(c, data=None):
    body = {"invoice_id": unique("inv"), "export_format": "csv", "destination_system": "netsuite",
            "export_data": data or invoice()}
    r = call(c, "POST", "/v1/staging/exports", body)
    assert r.status == 201, r
    return r.json()


def act(c, eid, action, body=None, key=None):
    method = "POST" if action in ("post", "rollback") else "PUT"
    return call(c, method, f"/v1/staging/exports/{eid}/{action}", body or {}, key)


def trail(c, eid):
    return [(x["event"], x["actor"], x["from"], x["to"])
            for x in c.get(f"/v1/staging/exports/{eid}/audit").json()["entries"]]


def test_an_approver_sends_an_export_back_and_the_preparer_submits_it_again(team):
    p, a = team["preparer"], team["approver"]
    eid = stage(p)["id"]
    assert act(p, eid, "review", {"comments": "ready"}).status == 200
    r = act(a, eid, "request-changes", {"reason": "attach the delivery note"}, "rc-1")
    assert r.status == 200, r
    e = r.json()
    assert e["status"] == "prepared", e
    assert (e["changes_requested_by"], e["changes_requested_reason"]) == (a.sub, "attach the delivery note"), e
    assert isinstance(e["changes_requested_at"], int) and e["reviewed_by"] is None, e
    # The same request again: the same answer, no second audit row.
    again = act(a, eid, "request-changes", {"reason": "attach the delivery note"}, "rc-1")
    assert again.status == 200 and again.header("idempotent-replayed") == "true", again
    assert again.json()["changes_requested_at"] == e["changes_requested_at"]
    assert act(p, eid, "review", {"comments": "note attached"}).status == 200
    assert act(a, eid, "approve").json()["status"] == "approved"
    assert trail(p, eid) == [
        ("stage", p.sub, None, "prepared"),
        ("review", p.sub, "prepared", "under_review"),
        ("request_changes", a.sub, "under_review", "prepared"),
        ("review", p.sub, "prepared", "under_review"),
        ("approve", a.sub, "under_review", "approved"),
    ]


def test_requesting_changes_needs_the_approver_role_a_reason_and_an_export_under_review(team):
    p, a = team["preparer"], team["approver"]
    eid = stage(p)["id"]
    # Still with its preparer: nothing to send back.
    assert assert_problem(act(a, eid, "request-changes", {"reason": "x"}), 409)["current_state"] == "prepared"
    assert act(p, eid, "review").status == 200
    p403 = assert_problem(act(team["clerk"], eid, "request-changes", {"reason": "x"}), 403)
    assert p403["detail"] == "the approver role is required", p403
    assert_problem(act(a, eid, "request-changes", {}), 400)
    assert_problem(act(a, eid, "request-changes", {"reason": "  "}), 400)
    assert_problem(act(a, eid, "request-changes", {"reason": "x", "requested_by": "someone-else"}), 400)
    assert p.get(f"/v1/staging/exports/{eid}").json()["status"] == "under_review"
    assert [t[0] for t in trail(p, eid)] == ["stage", "review"]


def test_a_corrected_amount_waits_for_a_second_approver(team, origin):
    p, a, a2 = team["preparer"], team["approver"], team["approver2"]
    e = stage(p, invoice(total_amount="31.00"))
    assert e["quality_score"] < 100
    corrected = invoice()
    r = act(a, e["id"], "approve", {"approved_data": corrected, "change_reason": "total per PO"})
    assert r.status == 200, r
    first = r.json()
    assert first["status"] == "awaiting_second_approval", first
    assert first["approved_by"] == a.sub and first["approved_data"] == corrected, first
    assert first["second_approved_by"] is None and first["quality_score"] == 100, first
    assert first["staged_quality_score"] == e["quality_score"], first
    # Nobody posts it yet.
    assert assert_problem(act(a2, e["id"], "post"), 409)["current_state"] == "awaiting_second_approval"
    # Not by the one who made the first approval, nor by the preparer.
    p403 = assert_problem(act(a, e["id"], "approve"), 403)
    assert p403["detail"] == ("segregation of duties: the second approver must not be the approver "
                              "who made the first approval"), p403
    p403 = assert_problem(act(team["preparer_approver"], e["id"], "approve"), 403)
    assert p403["detail"] == "segregation of duties: the approver must not be the preparer of the export", p403
    # A second approval confirms; it does not correct again.
    other = invoice(total_amount="29.99", line_items=[
        {"description": "Widget", "quantity": 1, "unit_price": "29.99", "amount": "29.99"}])
    assert_problem(act(a2, e["id"], "approve", {"approved_data": other, "change_reason": "x"}), 422,
                   "second-approval-changes-data")
    r = act(a2, e["id"], "approve", {"approved_data": corrected, "approval_comments": "matches the PO"})
    assert r.status == 200, r
    done = r.json()
    assert done["status"] == "approved" and done["second_approved_by"] == a2.sub, done
    assert done["approved_by"] == a.sub and isinstance(done["second_approved_at"], int), done
    assert act(a2, e["id"], "post").json()["status"] == "posted"
    assert trail(p, e["id"])[1:4] == [
        ("first_approval", a.sub, "prepared", "awaiting_second_approval"),
        ("approve", a2.sub, "awaiting_second_approval", "approved"),
        ("post", a2.sub, "approved", "posted"),
    ]


def test_corrections_that_change_no_amount_are_approved_in_one_step(team):
    p, a = team["preparer"], team["approver"]
    for fix in ({"vendor_name": "Acme Supplies Ltd"}, {"total_amount": "30.0"},
                {"line_items": [{"description": "Widgets", "quantity": "3", "unit_price": "10", "amount": "30.00"}]}):
        eid = stage(p)["id"]
        r = act(a, eid, "approve", {"approved_data": invoice(**fix), "change_reason": "typo"})
        assert r.status == 200 and r.json()["status"] == "approved", (fix, r)
        assert r.json()["second_approved_by"] is None


def test_changes_requested_during_a_second_approval_withdraw_the_first(team):
    p, a, a2 = team["preparer"], team["approver"], team["approver2"]
    e = stage(p, invoice(total_amount="31.00"))
    assert act(a, e["id"], "approve", {"approved_data": invoice(), "change_reason": "total"}).status == 200
    r = act(a2, e["id"], "request-changes", {"reason": "the PO says 31.00; ask the vendor"})
    assert r.status == 200, r
    back = r.json()
    assert back["status"] == "prepared", back
    assert back["approved_data"] is None and back["approved_by"] is None, back
    assert back["quality_score"] == e["quality_score"], back
    assert back["validation_errors"] == e["validation_errors"], back
    assert back["changes_requested_by"] == a2.sub, back
    # The withdrawn approval stays in the trail.
    assert [t[0] for t in trail(p, e["id"])] == ["stage", "first_approval", "request_changes"]


def test_the_queue_lists_exports_awaiting_a_second_approval_with_their_deadline(team):
    p, a = team["preparer"], team["approver"]
    e = stage(p, invoice(total_amount="31.00"))
    assert act(a, e["id"], "approve", {"approved_data": invoice(), "change_reason": "total"}).status == 200
    for query in ("status=awaiting_second_approval", "status=prepared,under_review,awaiting_second_approval"):
        rows = p.get(f"/v1/staging/exports?{query}&limit=100").json()["exports"]
        row = next(x for x in rows if x["id"] == e["id"])
        assert row["status"] == "awaiting_second_approval" and isinstance(row["approval_deadline"], int), row


def test_zz_the_sweep_expires_exports_awaiting_a_second_approval(team, srv):
    p, a = team["preparer"], team["approver"]
    e = stage(p, invoice(total_amount="31.00"))
    assert act(a, e["id"], "approve", {"approved_data": invoice(), "change_reason": "total"}).status == 200
    time.sleep(4)  # STAGING_APPROVAL_TIMEOUT_HOURS=0.001 is 3.6 s
    deadline = time.time() + 90
    while p.get(f"/v1/staging/exports/{e['id']}").json()["status"] != "rejected":
        assert time.time() < deadline
        assert srv.request("GET", "/cdn-cgi/handler/scheduled?cron=*/15+*+*+*+*", timeout=120).status == 200
    last = trail(p, e["id"])[-1]
    assert last == ("expire", "system", "awaiting_second_approval", "rejected")


def test_a_check_shows_what_an_approval_would_do_and_writes_nothing(team, srv):
    p, a = team["preparer"], team["approver"]
    e = stage(p, invoice(total_amount="31.00"))
    path = f"/v1/staging/exports/{e['id']}/check"
    # The prepared data as it is: below the threshold, no changes.
    r = srv.request("POST", path, {}, a.headers())
    assert r.status == 200, r
    c = r.json()
    assert (c["quality_score"], c["approvable"], c["changes"]) == (e["quality_score"], False, []), c
    assert [f["code"] for f in c["validation_errors"]] == ["total_mismatch"], c
    assert "31.00" in c["preview"]["content"] and c["preview"]["content_type"].startswith("text/csv"), c
    # A corrected total: approvable, one change of an amount, so a second approval (the setting is on).
    r = srv.request("POST", path, {"approved_data": invoice()}, p.headers())
    c = r.json()
    assert r.status == 200 and c["approvable"] and c["quality_score"] == 100, r
    assert [(x["path"], x["before"], x["after"]) for x in c["changes"]] == [("$.total_amount", "31.00", "30.00")], c
    assert c["change_reason_required"] and c["changes_an_amount"] and c["second_approval_required"], c
    assert "31.00" not in c["preview"]["content"], c
    # Bad input is refused as the approval would refuse it; nothing was written.
    assert_problem(srv.request("POST", path, {"approved_data": {"surprise": 1}}, a.headers()), 400)
    assert_problem(srv.request("POST", path, {"approved_data": []}, a.headers()), 400)
    assert_problem(srv.request("POST", path, {"approved_by": "someone-else"}, a.headers()), 400)
    assert_problem(srv.request("POST", "/v1/staging/exports/exp_nope/check", {}, a.headers()), 404)
    assert_problem(srv.request("GET", path, None, a.headers()), 405)
    other = Client(srv, unique("x"), unique("other-tenant"), ["approver"])
    assert_problem(srv.request("POST", path, {}, other.headers()), 404)
    after = p.get(f"/v1/staging/exports/{e['id']}").json()
    assert (after["status"], after["version"], after["approved_data"]) == ("prepared", 1, None), after
    assert [t[0] for t in trail(p, e["id"])] == ["stage"]
