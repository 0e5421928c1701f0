"""The approvers' console (`GET /console`) in a real browser: Debian's chromium
(`/usr/bin/chromium`, installed by `./x test`) driven by Playwright, against a real
`wrangler dev`. Exports are staged through the API as a preparer; everything an
approver does happens in the page, and what it did is checked through the API.

The browser is required: without it these tests fail, they never skip.
"""

import json
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect, sync_playwright

from conftest import SECRET, Client, Server, assert_problem, unique
from jwks_server import AUD, TEAM, Jwks, Key
from jwt import token as make_token

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
ROOT = Path(__file__).resolve().parents[2]
# Bounded browser runs: every wait gives up after this many milliseconds.
TIMEOUT_MS = 15000

expect.set_options(timeout=TIMEOUT_MS)


def invoice(**over):
    data = {
        "vendor_name": "Acme Suplies",
        "invoice_number": "INV-2001",
        "invoice_date": "2026-10-31",
        "currency": "EUR",
        "total_amount": "30.00",
        "line_items": [{"description": "Widget", "quantity": 3, "unit_price": "10.00", "amount": "30.00"}],
    }
    data.update(over)
    return data


def stage(client, data=None, invoice_id=None):
    body = {"invoice_id": invoice_id or unique("inv"), "export_format": "csv", "destination_system": "netsuite",
            "export_data": data or invoice()}
    r = client.server.request("POST", "/v1/staging/exports", body, client.headers(unique("stage")))
    assert r.status == 201, r
    return r.json()


def review(client, export_id):
    r = client.server.request("PUT", f"/v1/staging/exports/{export_id}/review", {},
                              client.headers(unique("review")))
    assert r.status == 200, r


def audit(client, export_id, event):
    r = client.get(f"/v1/staging/exports/{export_id}/audit")
    assert r.status == 200, r
    return [e for e in r.json()["entries"] if e["event"] == event]


@pytest.fixture
def team(server):
    tenant = unique("fin")
    return {
        "preparer": Client(server, unique("prep"), tenant),
        "approver": Client(server, unique("appr"), tenant, ["approver"]),
        # Prepares and holds the approver role: segregation of duties stops them.
        "both": Client(server, unique("both"), tenant, ["approver"]),
        "clerk": Client(server, unique("clerk"), tenant),
    }


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: ./x test installs it (apt-get install -y chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True, timeout=60000)
        yield b
        b.close()


@pytest.fixture
def make_page(browser, server):
    """Opens pages in their own browser contexts (a viewport, a locale, a time
    zone: Playwright's context options; `srv`: another server than the shared
    one), closed after the test."""
    contexts = []

    def make(srv=server, **options):
        context = browser.new_context(**{"viewport": {"width": 1280, "height": 1000}, **options},
                                      base_url=f"http://127.0.0.1:{srv.port}")
        contexts.append(context)
        context.set_default_timeout(TIMEOUT_MS)
        pg = context.new_page()
        pg.errors = []
        pg.on("pageerror", lambda e: pg.errors.append(str(e)))
        # Anything the policy blocked: the page must never try.
        pg.on("console", lambda m: pg.errors.append(m.text)
              if "Content Security Policy" in m.text or "Trusted" in m.text else None)
        return pg

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def page(make_page):
    return make_page()


def sign_in(page, client):
    """Signs `client` in through the sign-in panel, signing out whoever is signed
    in first. The panel's button says "Sign in"; once signed in the panel is
    gone and the header names the person beside "Sign out"."""
    page.goto("/console")
    settled(page)
    if page.locator("#sign-out").is_visible():
        sign_out(page)
    panel = page.locator("#token-panel")
    expect(panel).to_be_visible()
    expect(page.locator("#token-save")).to_have_text("Sign in")
    expect(page.locator("#sign-out")).to_be_hidden()
    page.fill("#token-input", client.token)
    page.click("#token-save")
    expect(page.locator("#whoami")).to_contain_text(f"Signed in as {client.sub}")
    expect(panel).to_be_hidden()
    expect(page.locator("#sign-out")).to_be_visible()
    expect(page.locator("#sign-out")).to_have_text("Sign out")


def settled(page):
    """Waits until the page knows whether someone is signed in (it asks the
    server first): the sign-in panel or the person's name is shown."""
    page.wait_for_function(
        "() => !document.getElementById('token-panel').hidden || !document.getElementById('session').hidden",
        timeout=TIMEOUT_MS)


def sign_out(page):
    page.click("#sign-out")
    expect(page.locator("#token-panel")).to_be_visible()
    expect(page.locator("#sign-out")).to_be_hidden()
    expect(page.locator("#main")).to_be_hidden()


# Every word (a run of non-space characters of one text node) under the element
# that the browser laid out on more than one line: a word broken mid-word. Its
# line boxes are the distinct tops of its client rects (a rect starting more
# than half a line below the previous one is a new line). Answers the words
# checked and the broken ones.
BROKEN_WORDS = """(root) => {
  const out = { checked: 0, broken: [] };
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    for (const m of n.data.matchAll(/\\S+/g)) {
      const range = document.createRange();
      range.setStart(n, m.index);
      range.setEnd(n, m.index + m[0].length);
      const rects = [...range.getClientRects()].filter((r) => r.width > 0 && r.height > 0);
      if (!rects.length) continue;
      out.checked += 1;
      const tops = rects.map((r) => r.top).sort((a, b) => a - b);
      let lines = 1;
      for (let i = 1; i < tops.length; i++) if (tops[i] - tops[i - 1] > rects[0].height / 2) lines += 1;
      if (lines > 1) out.broken.push(m[0]);
    }
  }
  return out;
}"""


def broken_words(page, selector, at_least=1):
    """The words under `selector` broken across lines (checked: at least `at_least` words)."""
    found = page.locator(selector).evaluate(BROKEN_WORDS)
    assert found["checked"] >= at_least, (selector, found)
    return found["broken"]


def assert_the_word_check_sees_a_broken_word(page):
    """The check above finds a word the browser does break (a narrow box that
    breaks anywhere): it cannot pass by seeing nothing."""
    page.evaluate("""() => { const d = document.createElement('div'); d.id = 'word-probe';
        d.style.width = '40px'; d.style.overflowWrap = 'anywhere';
        d.textContent = 'short Unbreakablewordthatmustwrap'; document.body.append(d); }""")
    assert broken_words(page, "#word-probe", 2) == ["Unbreakablewordthatmustwrap"]
    page.evaluate("document.getElementById('word-probe').remove()")


def assert_no_page_overflow(page):
    sizes = page.evaluate("""() => ({ scroll: document.documentElement.scrollWidth, inner: window.innerWidth,
        boxes: [...document.querySelectorAll('.scroll')].filter((b) => b.offsetParent)
                 .map((b) => [b.firstElementChild.id, b.scrollWidth, b.clientWidth]) })""")
    assert sizes["scroll"] <= sizes["inner"], sizes
    # The tables are cards here: none scrolls inside its own box either.
    assert all(scroll <= client for _, scroll, client in sizes["boxes"]), sizes


def assert_within_width(page, selector, width):
    for box in [page.locator(selector).nth(i).bounding_box() for i in range(page.locator(selector).count())]:
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, (selector, box)


def iso(ms):
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


MONTHS_GB = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sept", "Oct", "Nov", "Dec"]


def local_gb(ms, zone):
    """A time as the page shows it to a reader in `zone` with an en-GB browser."""
    d = datetime.fromtimestamp(ms / 1000, ZoneInfo(zone))
    return f"{d.day} {MONTHS_GB[d.month - 1]} {d.year}, {d:%H:%M:%S}"


def fields(page, selector):
    """A <dl>'s terms and their descriptions, as shown."""
    return page.locator(selector).evaluate(
        "(dl) => Object.fromEntries([...dl.querySelectorAll('dt')].map((dt) => [dt.textContent, dt.nextElementSibling.textContent]))")


def keyed(client, method, path, body, key=None):
    key = key or unique("key")
    r = client.server.request(method, path, body, client.headers(key))
    assert r.status in (200, 201), r
    return key, r.json()


def open_export(page, export_id):
    page.click(f'#exports button[data-export-id="{export_id}"]')
    expect(page.locator("#detail-fields")).to_contain_text(export_id)


def requests_to(page, export_id, action):
    """Records every request the page sends for `action` on the export."""
    seen = []
    suffix = f"/v1/staging/exports/{export_id}/{action}"
    page.on("request", lambda r: seen.append(r) if r.url.endswith(suffix) else None)
    return seen


def test_the_console_is_served_without_auth_with_a_strict_policy(server):
    r = server.request("GET", "/console")
    assert r.status == 200, r
    assert r.header("content-type") == "text/html; charset=utf-8"
    csp = r.header("content-security-policy")
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "unsafe-inline" not in csp and "require-trusted-types-for 'script'" in csp
    assert r.header("x-content-type-options") == "nosniff"
    assert r.header("cache-control") == "no-store"
    page = r.body.decode()
    assert '<script src="/console/app.js"' in page
    for origin in ("http://", "https://", "//cdn"):
        assert origin not in page
    js = server.request("GET", "/console/app.js")
    assert js.status == 200 and js.header("content-type").startswith("text/javascript")
    assert js.header("x-content-type-options") == "nosniff"
    assert server.request("GET", "/console/app.css").header("content-type").startswith("text/css")
    head = server.request("HEAD", "/console/")
    assert head.status == 200 and head.body == b"" and head.header("content-security-policy") == csp
    assert_problem(server.request("POST", "/console", b"x"), 405)
    assert_problem(server.request("GET", "/console/secrets.js"), 404)


def test_the_preview_is_the_file_posting_will_record(server, team):
    export = stage(team["preparer"])
    path = f"/v1/staging/exports/{export['id']}"
    before = team["approver"].get(f"{path}/preview")
    assert before.status == 200, before
    p = before.json()
    assert (p["source"], p["status"], p["content_type"]) == ("prepared", "prepared", "text/csv; charset=utf-8")
    assert p["file_name"] == f"INV-2001-{export['id']}.csv"
    assert p["content"].splitlines()[1].startswith("INV-2001,2026-10-31,Acme Suplies,EUR,1,Widget,3")
    assert p["size"] == len(p["content"].encode())
    review(team["clerk"], export["id"])
    corrected = invoice(vendor_name="Acme Supplies")
    r = server.request("PUT", f"{path}/approve", {"approved_data": corrected, "change_reason": "typo"},
                       team["approver"].headers(unique("approve")))
    assert r.status == 200, r
    approved = team["approver"].get(f"{path}/preview").json()
    assert approved["source"] == "approved" and "Acme Supplies" in approved["content"]
    r = server.request("POST", f"{path}/post", {}, team["approver"].headers(unique("post")))
    assert r.status == 200, r
    posted_file = team["approver"].get(f"{path}/file")
    assert posted_file.body.decode() == approved["content"]
    posted = team["approver"].get(f"{path}/preview").json()
    assert posted["source"] == "posted" and posted["content"] == approved["content"]
    assert posted["file_name"] == approved["file_name"]
    assert_problem(Client(server, unique("other")).get(f"{path}/preview"), 404)


def test_the_list_shows_exports_by_status_with_quality_and_findings(page, team):
    good = stage(team["preparer"])
    bad = stage(team["preparer"], invoice(total_amount="31.00", currency="euro"))
    review(team["clerk"], good["id"])
    sign_in(page, team["approver"])
    bad_row = page.locator(f'#exports tr[data-export-id="{bad["id"]}"]')
    expect(bad_row).to_contain_text("prepared")
    expect(bad_row).to_contain_text(str(bad["quality_score"]))
    expect(bad_row).to_contain_text("2 errors: ")
    # In words, not codes.
    expect(bad_row).to_contain_text("line amounts sum to 30.00 but total_amount is 31.00")
    expect(bad_row).not_to_contain_text("total_mismatch")
    expect(page.locator(f'#exports tr[data-export-id="{good["id"]}"]')).to_contain_text("under review")
    page.select_option("#status-filter", "under_review")
    expect(page.locator("#exports tbody tr")).to_have_count(1)
    expect(page.locator("#exports tbody tr")).to_contain_text(good["invoice_id"])
    page.select_option("#status-filter", "rejected")
    expect(page.locator("#list-empty")).to_be_visible()
    page.select_option("#status-filter", "")
    open_export(page, bad["id"])
    expect(page.locator("#findings li.error")).to_have_count(2)
    expect(page.locator("#findings")).to_contain_text("total_amount")


def test_the_default_view_is_the_approval_queue_with_what_an_approver_decides_with(page, team):
    waiting = stage(team["preparer"], invoice(vendor_name="Acme Supplies", invoice_number="INV-7001"))
    reviewed = stage(team["preparer"], invoice(invoice_number="INV-7002"))
    review(team["clerk"], reviewed["id"])
    done = stage(team["preparer"], invoice(vendor_name="Acme Supplies", invoice_number="INV-7003"))
    r = team["approver"].server.request("PUT", f"/v1/staging/exports/{done['id']}/approve", {},
                                        team["approver"].headers(unique("approve")))
    assert r.status == 200, r
    sign_in(page, team["approver"])
    expect(page.locator("#status-filter")).to_have_value("prepared,under_review,awaiting_second_approval")
    rows = page.locator("#exports tbody tr")
    expect(page.locator(f'#exports tr[data-export-id="{waiting["id"]}"]')).to_have_count(1)
    expect(page.locator(f'#exports tr[data-export-id="{reviewed["id"]}"]')).to_have_count(1)
    expect(page.locator(f'#exports tr[data-export-id="{done["id"]}"]')).to_have_count(0)
    row = page.locator(f'#exports tr[data-export-id="{waiting["id"]}"]')
    cells = row.locator("td")
    expect(cells.nth(0)).to_have_text(f"INV-7001{waiting['invoice_id']}")
    expect(cells.nth(1)).to_have_text("Acme Supplies")
    expect(cells.nth(2)).to_have_text("2026-10-31")
    expect(cells.nth(3)).to_have_text("30.00 EUR")
    expect(cells.nth(4)).to_have_text("prepared")
    # Decide by: the approval-timeout sweep's deadline, after the export's last change.
    deadline = team["approver"].get(f"/v1/staging/exports?status=prepared").json()
    mine = next(x for x in deadline["exports"] if x["id"] == waiting["id"])
    assert mine["approval_deadline"] == mine["updated_at"] + 3600 * 1000 * 72, mine
    assert mine["summary"]["invoice_number"] == "INV-7001", mine
    expect(cells.nth(7)).not_to_be_empty()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console-queue.png"), full_page=True)
    page.select_option("#status-filter", "")
    expect(page.locator(f'#exports tr[data-export-id="{done["id"]}"]')).to_have_count(1)
    expect(page.locator(f'#exports tr[data-export-id="{done["id"]}"] td').nth(7)).to_have_text("")
    assert rows.count() >= 3
    assert page.errors == []


def test_a_corrected_approval_shows_the_staged_score_and_findings_beside_the_approved_ones(page, team):
    bad = stage(team["preparer"], invoice(total_amount="31.00"))
    assert bad["quality_score"] < 100
    review(team["preparer"], bad["id"])  # the preparer submits it for review
    fixed = {**bad["prepared_data"], "total_amount": "30.00"}
    r = team["approver"].server.request("PUT", f"/v1/staging/exports/{bad['id']}/approve",
                                        {"approved_data": fixed, "change_reason": "total corrected"},
                                        team["approver"].headers(unique("approve")))
    assert r.status == 200 and r.json()["quality_score"] == 100, r
    sign_in(page, team["approver"])
    page.select_option("#status-filter", "approved")
    row = page.locator(f'#exports tr[data-export-id="{bad["id"]}"]')
    expect(row).to_contain_text(f"100 (staged {bad['quality_score']})")
    open_export(page, bad["id"])
    fields = page.locator("#detail-fields")
    expect(fields).to_contain_text(f"100 (staged {bad['quality_score']})")
    expect(fields).to_contain_text("Submitted for review by")
    expect(fields).not_to_contain_text("Reviewed by")
    expect(page.locator("#findings li.error.staged")).to_have_count(1)
    expect(page.locator("#findings")).to_contain_text("error, as staged total_amount")
    expect(page.locator("#findings")).to_contain_text("line amounts sum to 30.00 but total_amount is 31.00")
    assert page.errors == []


def test_an_approver_corrects_and_approves_once_however_often_approve_is_pressed(page, team):
    export = stage(team["preparer"])
    sign_in(page, team["approver"])
    open_export(page, export["id"])
    expect(page.locator("#detail-fields")).to_contain_text("prepared")
    expect(page.locator("#preview")).to_contain_text("INV-2001,2026-10-31,Acme Suplies")
    page.click("#review-open")
    expect(page.locator("#action-result")).to_contain_text("Export put under review.")
    expect(page.locator("#detail-fields")).to_contain_text("under review")

    approves = requests_to(page, export["id"], "approve")
    page.click("#approve-open")
    key = page.text_content("#approve-key")
    assert key.startswith("console-approve-")
    page.check("#approve-correct")
    page.fill("#approve-data", page.input_value("#approve-data").replace("Acme Suplies", "Acme Supplies"))
    page.fill("#approve-reason", "vendor name typo")
    page.dblclick("#approve-submit")
    expect(page.locator("#action-result")).to_contain_text("Export approved.")

    # The diff view: the correction, field by field, and the file as it will be posted.
    expect(page.locator("#diff tbody tr")).to_have_count(1)
    row = page.locator("#diff tbody tr").first
    expect(row).to_contain_text("$.vendor_name")
    expect(row.locator("td.before")).to_have_text('"Acme Suplies"')
    expect(row.locator("td.after")).to_have_text('"Acme Supplies"')
    expect(page.locator("#diff-note")).to_contain_text("vendor name typo")
    expect(page.locator("#preview-note")).to_contain_text("from the approved data")
    expect(page.locator("#preview")).to_contain_text("Acme Supplies")
    expect(page.locator('#audit tr[data-event="approve"]')).to_have_count(1)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console-diff.png"), full_page=True)

    assert len(approves) == 1, [r.url for r in approves]
    assert approves[0].header_value("idempotency-key") == key
    rows = audit(team["approver"], export["id"], "approve")
    assert len(rows) == 1 and rows[0]["idempotency_key"] == key and rows[0]["actor"] == team["approver"].sub
    assert team["approver"].get(f"/v1/staging/exports/{export['id']}").json()["status"] == "approved"
    assert page.errors == []


def test_a_click_on_another_action_while_an_approval_finishes_does_nothing(page, team):
    """The second click of a double click can land on whatever the first one moved
    under the pointer: until the approved export is shown, no action opens."""
    export = stage(team["preparer"])
    review(team["clerk"], export["id"])
    sign_in(page, team["approver"])
    open_export(page, export["id"])
    page.click("#approve-open")
    # Hold the page's read of the export after the approval.
    held = []
    pattern = f"**/v1/staging/exports/{export['id']}"
    page.route(pattern, lambda route: held.append(route))
    page.click("#approve-submit")
    result = page.locator("#action-result")
    expect(result).to_have_text("Export approved.")
    page.click("#approve-open")
    page.click("#reject-open")
    expect(page.locator("#approve-form")).to_be_hidden()
    expect(page.locator("#reject-form")).to_be_hidden()
    expect(result).to_have_text("Export approved.")
    page.wait_for_function("true")
    assert len(held) == 1
    held[0].continue_()
    page.unroute(pattern)
    expect(page.locator("#detail-fields")).to_contain_text("approved")
    expect(page.locator("#approve-open")).to_be_hidden()
    expect(result).to_have_text("Export approved.")


def test_pressing_approve_again_after_a_lost_answer_resends_the_same_key_and_approves_once(page, team):
    export = stage(team["preparer"])
    review(team["clerk"], export["id"])
    sign_in(page, team["approver"])
    open_export(page, export["id"])
    page.click("#approve-open")
    key = page.text_content("#approve-key")

    # The network loses the answer: the server approves, the page sees a reset.
    lost = []

    def drop_answer(route):
        answer = route.fetch()
        lost.append((route.request.header_value("idempotency-key"), answer.status))
        route.abort("connectionreset")

    pattern = f"**/v1/staging/exports/{export['id']}/approve"
    page.route(pattern, drop_answer)
    page.click("#approve-submit")
    result = page.locator("#action-result")
    expect(result).to_contain_text("No answer from the server")
    expect(result).to_contain_text("the same request key is sent")
    assert lost == [(key, 200)]
    page.unroute(pattern)

    approves = requests_to(page, export["id"], "approve")
    expect(page.locator("#approve-key")).to_have_text(key)
    page.click("#approve-submit")
    expect(result).to_contain_text("Export approved.")
    expect(result).to_contain_text("already been applied")
    assert [r.header_value("idempotency-key") for r in approves] == [key]
    rows = audit(team["approver"], export["id"], "approve")
    assert len(rows) == 1 and rows[0]["idempotency_key"] == key
    expect(page.locator('#audit tr[data-event="approve"]')).to_have_count(1)
    assert page.evaluate("Object.keys(sessionStorage).filter(k => k.includes('intent'))") == []


def test_a_reload_after_a_failed_attempt_keeps_the_approval_and_its_key(page, team):
    export = stage(team["preparer"])
    review(team["clerk"], export["id"])
    sign_in(page, team["approver"])
    open_export(page, export["id"])
    page.click("#approve-open")
    key = page.text_content("#approve-key")

    # The requests never reach the server.
    sent = requests_to(page, export["id"], "approve")
    pattern = f"**/v1/staging/exports/{export['id']}/approve"
    page.route(pattern, lambda route: route.abort("internetdisconnected"))
    page.fill("#approve-comments", "looks wrong")
    page.click("#approve-submit")
    expect(page.locator("#action-result")).to_contain_text("No answer from the server")
    expect(page.locator("#approve-key")).to_have_text(key)
    # Edited after an unanswered attempt: another request, so a new key, which its
    # own retry keeps.
    page.fill("#approve-comments", "looks right")
    page.click("#approve-submit")
    expect(page.locator("#action-result")).to_contain_text("No answer from the server")
    edited = page.text_content("#approve-key")
    assert edited != key
    page.click("#approve-submit")
    expect(page.locator("#action-result")).to_contain_text("No answer from the server")
    expect(page.locator("#approve-key")).to_have_text(edited)
    assert [r.header_value("idempotency-key") for r in sent] == [key, edited, edited]
    page.unroute(pattern)
    key = edited

    # The approver reloads and tries again: the same intent, so the same key and body.
    approves = requests_to(page, export["id"], "approve")
    page.reload()
    expect(page.locator("#whoami")).to_contain_text(team["approver"].sub)
    open_export(page, export["id"])
    page.click("#approve-open")
    expect(page.locator("#approve-key")).to_have_text(key)
    expect(page.locator("#approve-comments")).to_have_value("looks right")
    expect(page.locator("#action-result")).to_contain_text("reuses its request key")
    page.click("#approve-submit")
    expect(page.locator("#action-result")).to_have_text("Export approved.")

    assert [r.header_value("idempotency-key") for r in approves] == [key]
    rows = audit(team["approver"], export["id"], "approve")
    assert len(rows) == 1 and rows[0]["idempotency_key"] == key
    assert rows[0]["detail"]["comments"] == "looks right"

    # Once approved, nothing is left to retry and approving is no longer offered
    # (the export has left the queue, the default view: it is among all).
    page.reload()
    expect(page.locator(f'#exports tr[data-export-id="{export["id"]}"]')).to_have_count(0)
    page.select_option("#status-filter", "")
    open_export(page, export["id"])
    expect(page.locator("#approve-open")).to_be_hidden()
    assert page.evaluate("Object.keys(sessionStorage).filter(k => k.includes('intent'))") == []


def client_retry_statuses():
    """The TypeScript client's default `retryStatuses`, read from its source."""
    source = (ROOT / "clients" / "typescript" / "src" / "retry.ts").read_text()
    policy = re.search(r"DEFAULT_RETRY_POLICY[^=]*=\s*Object\.freeze\(\{(.*?)\}\);", source, re.S)
    assert policy, "DEFAULT_RETRY_POLICY not found in clients/typescript/src/retry.ts"
    listed = re.search(r"retryStatuses:\s*Object\.freeze\(\[([\d,\s]*)\]\)", policy.group(1))
    assert listed, "retryStatuses not found in the client's DEFAULT_RETRY_POLICY"
    statuses = [int(s) for s in listed.group(1).replace(",", " ").split()]
    assert statuses, "the client's retryStatuses is empty"
    return statuses


def test_the_console_retries_with_the_same_key_exactly_the_statuses_the_client_retries(page, team):
    # The client's rule (clients/typescript: DEFAULT_RETRY_POLICY.retryStatuses,
    # read from its source here, and `retryable` in client.ts): the listed 5xx,
    # a 409 in flight and a 429 with Retry-After are retried with the same key,
    # unless the answer is a replay; every other answer is final. The console
    # keeps a decision's key for exactly those, and starts a new one otherwise.
    retried = client_retry_statuses()
    export = stage(team["preparer"])
    review(team["clerk"], export["id"])
    sign_in(page, team["approver"])
    open_export(page, export["id"])
    page.click("#approve-open")
    sent = requests_to(page, export["id"], "approve")
    pattern = f"**/v1/staging/exports/{export['id']}/approve"
    later = datetime.now(timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")
    # (status, problem slug, extra headers, kept?)
    cases = [(s, "x", {}, True) for s in retried]
    cases += [(s, "x", {}, False) for s in range(500, 512) if s not in retried]
    cases += [
        (409, "idempotency-key-in-flight", {"retry-after": "1"}, True),
        (409, "invalid-transition", {}, False),
        (429, "x", {"retry-after": "2"}, True),
        (429, "x", {"retry-after": later}, True),
        (429, "x", {}, False),
        (429, "x", {"retry-after": "soon"}, False),
        (retried[0], "x", {"idempotent-replayed": "true", "x-idempotency-replay": "true"}, False),
    ]
    problem = '{"type":"/errors/%s","title":"x","status":%d,"detail":"x"}'
    for i, (status, slug, headers, _kept) in enumerate(cases):
        def answer(route, _request, status=status, slug=slug, headers=headers):
            route.fulfill(status=status, content_type="application/problem+json",
                          headers=headers, body=problem % (slug, status))
        page.route(pattern, answer)
        page.click("#approve-submit")
        expect(page.locator("#action-result")).not_to_have_text("Sending…")
        expect(page.locator("#approve-submit")).to_be_enabled()
        assert len(sent) == i + 1, (status, len(sent))
        page.unroute(pattern)
    page.click("#approve-open")
    page.click("#approve-submit")
    expect(page.locator("#action-result")).to_have_text("Export approved.")
    keys = [r.header_value("idempotency-key") for r in sent]
    assert len(keys) == len(cases) + 1, keys
    for i, (status, slug, headers, kept) in enumerate(cases):
        what = f"{status} {slug} {headers}"
        if kept:
            assert keys[i + 1] == keys[i], f"{what} keeps the decision's key, as the client retries it"
        else:
            assert keys[i + 1] != keys[i], f"{what} is final, as for the client: the next press is a new request"
    assert len(audit(team["approver"], export["id"], "approve")) == 1


def test_a_token_that_expires_mid_decision_keeps_the_decision_for_a_fresh_token(page, team):
    export = stage(team["preparer"])
    review(team["clerk"], export["id"])
    approver = team["approver"]
    # Long enough to sign in and open the decision on a loaded machine; then it expires.
    ttl = 8
    expires = int(time.time()) + ttl
    short = make_token(SECRET, approver.sub, approver.tenant, ["approver"], ttl=ttl)
    page.goto("/console")
    page.fill("#token-input", short)
    page.click("#token-save")
    open_export(page, export["id"])
    page.click("#approve-open")
    key = page.text_content("#approve-key")
    page.fill("#approve-comments", "after lunch")
    time.sleep(max(0.0, expires + 1.5 - time.time()))
    page.click("#approve-submit")
    expect(page.locator("#message")).to_contain_text("Your token was not accepted")
    expect(page.locator("#main")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('idemgate.console.token')") is None

    sign_in(page, approver)
    open_export(page, export["id"])
    page.click("#approve-open")
    expect(page.locator("#approve-key")).to_have_text(key)
    expect(page.locator("#approve-comments")).to_have_value("after lunch")
    page.click("#approve-submit")
    expect(page.locator("#action-result")).to_have_text("Export approved.")
    rows = audit(approver, export["id"], "approve")
    assert len(rows) == 1 and rows[0]["idempotency_key"] == key


def test_an_approver_rejects_with_a_reason_and_a_burst_of_submits_sends_one_request(page, team):
    export = stage(team["preparer"])
    sign_in(page, team["approver"])
    open_export(page, export["id"])
    rejects = requests_to(page, export["id"], "reject")
    page.click("#reject-open")
    page.click("#reject-submit")
    expect(page.locator("#action-result")).to_have_text("A reason is required to reject an export.")
    assert rejects == []

    page.fill("#reject-reason", "duplicate of INV-2000")
    # Three submits in one task: the first disables the button, the rest find it busy.
    page.evaluate("""() => { const f = document.getElementById('reject-form');
                           f.requestSubmit(); f.requestSubmit(); f.requestSubmit(); }""")
    expect(page.locator("#action-result")).to_contain_text("Export rejected.")
    expect(page.locator("#detail-fields")).to_contain_text("duplicate of INV-2000")
    expect(page.locator('#audit tr[data-event="reject"]')).to_have_count(1)
    assert len(rejects) == 1
    rows = audit(team["approver"], export["id"], "reject")
    assert len(rows) == 1 and rows[0]["detail"]["reason"] == "duplicate of INV-2000"
    assert rows[0]["to"] == "rejected"


def test_refusals_are_explained_in_words(page, team):
    export = stage(team["both"])
    review(team["clerk"], export["id"])

    # The preparer, even with the approver role, cannot approve their own export:
    # the page says so before anyone presses Approve (rejecting stays open).
    sign_in(page, team["both"])
    open_export(page, export["id"])
    expect(page.locator("#approve-open")).to_be_disabled()
    expect(page.locator("#reject-open")).to_be_enabled()
    why = page.locator("#actions-why")
    expect(why).to_have_text("You prepared this export, so someone else must approve it (segregation of duties).")
    # The server refuses it all the same, in words, if the page is got round.
    page.evaluate("document.getElementById('approve-open').disabled = false")
    page.click("#approve-open")
    page.click("#approve-submit")
    result = page.locator("#action-result")
    expect(result).to_contain_text("You prepared this export, so you cannot approve it")
    expect(result).to_contain_text("segregation of duties")
    expect(result).to_contain_text("HTTP 403")
    expect(page.locator("#approve-submit")).to_be_enabled()

    # Without the approver role: both decisions disabled, with the reason.
    sign_in(page, team["clerk"])
    open_export(page, export["id"])
    expect(page.locator("#approve-open")).to_be_disabled()
    expect(page.locator("#reject-open")).to_be_disabled()
    expect(page.locator("#review-open")).to_be_hidden()
    expect(why.locator("li")).to_have_text(["Approving needs the approver role, which you do not have.",
                                            "Rejecting needs the approver role, which you do not have.",
                                            "Requesting changes needs the approver role, which you do not have."])
    expect(page.locator("#request-changes-open")).to_be_disabled()
    expect(page.locator("#approve-open")).to_have_attribute("title", re.compile("approver role"))
    page.evaluate("document.getElementById('reject-open').disabled = false")
    page.click("#reject-open")
    page.fill("#reject-reason", "not mine to reject")
    page.click("#reject-submit")
    expect(result).to_contain_text("Your token lacks the role needed for this")

    # Corrections that score below the quality threshold.
    sign_in(page, team["approver"])
    open_export(page, export["id"])
    expect(page.locator("#approve-open")).to_be_enabled()
    expect(why).to_be_hidden()
    page.click("#approve-open")
    page.check("#approve-correct")
    page.fill("#approve-data", '{"vendor_name": "Acme"}')
    page.fill("#approve-reason", "trimmed")
    page.click("#approve-submit")
    expect(result).to_contain_text("below the quality threshold")
    # Corrections that are not JSON never leave the page.
    page.fill("#approve-data", "{not json")
    page.click("#approve-submit")
    expect(result).to_contain_text("The approved data is not valid JSON")
    # Nothing was approved or rejected.
    assert audit(team["approver"], export["id"], "approve") == []
    assert audit(team["approver"], export["id"], "reject") == []

    # The export moved on behind the page's back (another tab, another approver).
    page.click("#approve-cancel")
    page.click("#reject-open")
    page.fill("#reject-reason", "wrong vendor")
    r = team["approver"].server.request("PUT", f"/v1/staging/exports/{export['id']}/approve", {},
                                        team["approver"].headers(unique("approve")))
    assert r.status == 200, r
    page.click("#reject-submit")
    expect(result).to_contain_text("This export is approved, so it cannot be rejected now.")
    expect(result).to_contain_text("HTTP 409")
    assert audit(team["approver"], export["id"], "reject") == []

    # A token the server refuses.
    sign_out(page)
    page.fill("#token-input", team["approver"].token[:-4] + "AAAA")
    page.click("#token-save")
    expect(page.locator("#message")).to_contain_text("Your token was not accepted")
    expect(page.locator("#main")).to_be_hidden()


def test_export_data_is_shown_as_text_never_run_as_markup(page, team):
    hostile = "<img src=x onerror=window.__pwned=1>"
    script = "<script>window.__pwned=2</script>"
    export = stage(team["preparer"], invoice(vendor_name=hostile, invoice_number=script), invoice_id=script)
    sign_in(page, team["approver"])
    button = page.locator(f'#exports button[data-export-id="{export["id"]}"]')
    expect(button).to_have_text(script)
    open_export(page, export["id"])
    expect(page.locator("#detail-title")).to_have_text(f"Invoice {script}")
    expect(page.locator("#data")).to_contain_text(hostile)
    expect(page.locator("#preview")).to_contain_text(hostile)
    assert page.locator("#main img").count() == 0
    assert page.locator("#main script").count() == 0
    assert page.evaluate("window.__pwned") is None
    assert page.errors == []
    # The policy's Trusted Types make an HTML string sink throw, whatever the script
    # does — and the browser reports it, as it would any blocked action of the page.
    assert page.evaluate("""() => { try { document.body.innerHTML = '<b>x</b>'; return 'assigned'; }
                                    catch (e) { return e.name; } }""") == "TypeError"
    expect(page.locator("body")).not_to_contain_text("assigned")
    page.wait_for_function("true")
    assert any("TrustedHTML" in e for e in page.errors), page.errors


def test_signing_in_and_out_in_words_with_the_panel_only_while_signed_out(page, team):
    export = stage(team["preparer"])
    page.goto("/console")
    panel = page.locator("#token-panel")
    expect(panel).to_be_visible()
    expect(page.locator("#token-heading")).to_have_text("Sign in")
    expect(page.locator("#token-save")).to_have_text("Sign in")
    expect(page.get_by_role("button", name=re.compile("token", re.I))).to_have_count(0)
    expect(page.locator("#session")).to_be_hidden()
    expect(page.locator("#main")).to_be_hidden()

    sign_in(page, team["approver"])
    whoami = page.locator("header #whoami")
    expect(whoami).to_have_text(f"Signed in as {team['approver'].sub} (tenant {team['approver'].tenant}) · roles: approver")
    # The name and roles are a small line beside "Sign out", in the header.
    sign_out_button = page.locator("header #sign-out")
    name_box, button_box = whoami.bounding_box(), sign_out_button.bounding_box()
    assert abs((name_box["y"] + name_box["height"] / 2) - (button_box["y"] + button_box["height"] / 2)) < 8, \
        (name_box, button_box)
    assert button_box["x"] >= name_box["x"] + name_box["width"], (name_box, button_box)
    assert page.locator("header #whoami").evaluate("(e) => parseFloat(getComputedStyle(e).fontSize)") < \
        page.locator("h1").evaluate("(e) => parseFloat(getComputedStyle(e).fontSize)") / 1.5

    # A decision left open in this tab: signing out forgets it with the token.
    open_export(page, export["id"])
    page.click("#approve-open")
    assert page.evaluate("Object.keys(sessionStorage).filter(k => k.includes('intent'))") != []
    sign_out(page)
    expect(page.locator("#token-save")).to_have_text("Sign in")
    expect(page.locator("#session")).to_be_hidden()
    expect(whoami).to_have_text("")
    assert page.evaluate("sessionStorage.getItem('idemgate.console.token')") is None
    assert page.evaluate("Object.keys(sessionStorage).filter(k => k.includes('intent'))") == []
    page.reload()
    expect(panel).to_be_visible()
    expect(page.locator("#main")).to_be_hidden()

    sign_in(page, team["clerk"])
    expect(whoami).to_contain_text("no role")
    # Still signed in after a reload, without the panel.
    page.reload()
    expect(whoami).to_contain_text(f"Signed in as {team['clerk'].sub}")
    expect(panel).to_be_hidden()
    expect(page.locator("#sign-out")).to_be_visible()
    assert page.errors == []


def test_a_stale_error_goes_when_the_person_moves_on(page, team):
    first = stage(team["preparer"])
    second = stage(team["preparer"])
    sign_in(page, team["approver"])
    message, result = page.locator("#message"), page.locator("#action-result")

    def refused_reject():
        page.click("#reject-open")
        page.click("#reject-submit")
        expect(result).to_have_text("A reason is required to reject an export.")
        expect(result).to_be_visible()

    # Another export opened.
    open_export(page, first["id"])
    refused_reject()
    open_export(page, second["id"])
    expect(result).to_be_hidden()
    expect(result).to_have_text("")

    # A server refusal, then another action started.
    r = team["approver"].server.request("PUT", f"/v1/staging/exports/{second['id']}/reject", {"reason": "elsewhere"},
                                        team["approver"].headers(unique("reject")))
    assert r.status == 200, r
    page.click("#reject-open")
    page.fill("#reject-reason", "wrong vendor")
    page.click("#reject-submit")
    expect(result).to_contain_text("This export is rejected, so it cannot be rejected now.")
    open_export(page, first["id"])
    refused_reject()
    page.click("#approve-open")
    expect(result).to_be_hidden()

    # A read that failed, then another export opened: the message about the first goes.
    pattern = f"**/v1/staging/exports/{second['id']}"
    page.route(pattern, lambda route: route.fulfill(
        status=503, content_type="application/problem+json",
        body='{"type":"/errors/x","title":"x","status":503,"detail":"x"}'))
    page.select_option("#status-filter", "")
    page.click(f'#exports button[data-export-id="{second["id"]}"]')
    expect(message).to_contain_text("The server could not complete the request")
    page.unroute(pattern)
    open_export(page, first["id"])
    expect(message).to_be_hidden()
    expect(message).to_have_text("")

    # The list reloaded.
    refused_reject()
    page.click("#refresh")
    expect(result).to_be_hidden()
    page.route(pattern, lambda route: route.fulfill(status=404, content_type="application/problem+json",
                                                    body='{"type":"x","title":"x","status":404,"detail":"x"}'))
    page.click(f'#exports button[data-export-id="{second["id"]}"]')
    expect(message).to_contain_text("This export does not exist")
    page.unroute(pattern)
    page.select_option("#status-filter", "rejected")
    expect(message).to_be_hidden()

    # Signed out, then in.
    page.select_option("#status-filter", "")
    open_export(page, first["id"])
    refused_reject()
    sign_out(page)
    expect(result).to_have_text("")
    expect(message).to_be_hidden()
    page.fill("#token-input", team["approver"].token[:-4] + "AAAA")
    page.click("#token-save")
    expect(message).to_contain_text("Your token was not accepted")
    page.fill("#token-input", team["approver"].token)
    page.click("#token-save")
    expect(page.locator("#whoami")).to_contain_text(team["approver"].sub)
    expect(page.locator(f'#exports tr[data-export-id="{first["id"]}"]')).to_have_count(1)
    expect(message).to_be_hidden()
    expect(message).to_have_text("")


def test_the_favicon_is_an_svg_served_like_the_other_files_and_linked(page, server):
    icon = server.request("GET", "/console/favicon.svg")
    assert icon.status == 200, icon
    assert icon.header("content-type") == "image/svg+xml"
    body = icon.body.decode()
    assert body.lstrip().startswith("<svg ") and "<script" not in body and "<style" not in body
    page_reply = server.request("GET", "/console")
    for name in ("content-security-policy", "x-content-type-options", "cache-control", "referrer-policy",
                 "x-frame-options", "cross-origin-opener-policy"):
        assert icon.header(name) is not None and icon.header(name) == page_reply.header(name), name
    head = server.request("HEAD", "/console/favicon.svg")
    assert head.status == 200 and head.body == b"" and head.header("content-type") == "image/svg+xml"

    page.goto("/console")
    link = page.locator('head link[rel="icon"]')
    expect(link).to_have_count(1)
    expect(link).to_have_attribute("href", "/console/favicon.svg")
    expect(link).to_have_attribute("type", "image/svg+xml")
    # Loaded as the browser loads an icon, an image, under the page's own policy.
    loaded = page.evaluate("""() => new Promise((done) => {
        const img = new Image();
        img.onload = () => done({ ok: true, width: img.naturalWidth, height: img.naturalHeight });
        img.onerror = () => done({ ok: false });
        img.src = document.querySelector('link[rel="icon"]').href; })""")
    assert loaded == {"ok": True, "width": 32, "height": 32}, loaded
    page.wait_for_function("true")
    assert page.errors == []


def test_the_audit_trail_says_who_did_what_when_and_why_in_words(make_page, team):
    zone = "America/New_York"
    page = make_page(locale="en-GB", timezone_id=zone)
    preparer, approver = team["preparer"], team["approver"]
    stage_key, export = keyed(preparer, "POST", "/v1/staging/exports",
                              {"invoice_id": unique("inv"), "export_format": "csv", "destination_system": "netsuite",
                               "export_data": invoice()})
    path = f"/v1/staging/exports/{export['id']}"
    keys = [stage_key]
    keys.append(keyed(preparer, "PUT", f"{path}/review", {"comments": "totals checked against the PDF"})[0])
    keys.append(keyed(approver, "PUT", f"{path}/approve",
                      {"approved_data": invoice(vendor_name="Acme Supplies"), "change_reason": "vendor name typo",
                       "approval_comments": "fine otherwise"})[0])
    keys.append(keyed(approver, "POST", f"{path}/post", {"external_reference": "QB-123"})[0])
    keys.append(keyed(approver, "POST", f"{path}/rollback", {"reason": "posted to the wrong period"})[0])
    entries = approver.get(f"{path}/audit").json()["entries"]
    assert [e["event"] for e in entries] == ["stage", "review", "approve", "post", "rollback"]
    assert [e["idempotency_key"] for e in entries] == keys

    sign_in(page, approver)
    page.select_option("#status-filter", "")
    open_export(page, export["id"])
    rows = page.locator("#audit tbody tr")
    expect(rows).to_have_count(5)
    expect(page.locator("#audit thead th")).to_have_text(["When (your time)", "Who", "What", "Reason and comments"])
    expected = [
        ("stage", preparer.sub, "Staged for approval", ""),
        ("review", preparer.sub, "Submitted for review", "Comments: totals checked against the PDF"),
        ("approve", approver.sub, "Approved with corrections",
         "1 field correctedReason: vendor name typoComments: fine otherwise"),
        ("post", approver.sub, "Posted to netsuite as QB-123", ""),
        ("rollback", approver.sub, "Rolled back", "Reason: posted to the wrong period"),
    ]
    for i, (event, who, what, notes) in enumerate(expected):
        row = rows.nth(i)
        expect(row).to_have_attribute("data-event", event)
        expect(row.locator("td.who")).to_have_text(who)
        expect(row.locator("td.what")).to_have_text(what)
        expect(row.locator("td.notes")).to_have_text(notes)
        # When: the reader's local time, in words; the instant itself in the element.
        stamp = row.locator("td.when time")
        expect(stamp).to_have_attribute("datetime", iso(entries[i]["created_at"]))
        expect(stamp).to_have_text(local_gb(entries[i]["created_at"], zone))
    expect(rows.nth(2).locator("td.notes .note")).to_have_text(
        ["1 field corrected", "Reason: vendor name typo", "Comments: fine otherwise"])
    # New York is behind UTC: the times shown are not UTC's.
    utc_hour = datetime.fromtimestamp(entries[0]["created_at"] / 1000, timezone.utc).strftime("%H:%M:%S")
    expect(rows.nth(0).locator("td.when")).not_to_contain_text(utc_hour)

    trail = page.locator("#audit").inner_text()
    for machine in ['{', '}', '"', "console-", "idempotency", "sha256", "null", "under_review", *keys]:
        assert machine not in trail, (machine, trail)
    assert_the_word_check_sees_a_broken_word(page)
    assert broken_words(page, "#audit", 30) == []
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#audit").screenshot(path=str(ARTIFACTS / "console-audit.png"))
    assert page.errors == []


def test_an_audit_event_the_page_does_not_know_is_shown_by_its_name_in_words(page, team):
    """A newer server may record events this page has no words for (asking for
    changes, a second approval): they read as their name, their state change
    and their reason or comments — never as JSON or a key."""
    export = stage(team["preparer"])
    review(team["clerk"], export["id"])
    path = f"/v1/staging/exports/{export['id']}/audit"
    secret = unique("key-never-shown")

    def newer_server(route):
        answer = route.fetch()
        data = answer.json()
        last = data["entries"][-1]
        data["entries"] += [
            {**last, "seq": last["seq"] + 1, "event": "request_changes", "actor": team["approver"].sub,
             "from": "under_review", "to": "prepared", "idempotency_key": secret,
             "detail": {"reason": "attach the delivery note", "fields": ["$.line_items"]}},
            {**last, "seq": last["seq"] + 2, "event": "second_approval", "actor": team["approver"].sub,
             "from": "under_review", "to": "under_review", "idempotency_key": secret,
             "detail": {"comments": "ok by me", "step": {"n": 2}}},
            {**last, "seq": last["seq"] + 3, "event": "", "actor": "system", "from": None, "to": "prepared",
             "idempotency_key": None, "detail": None},
        ]
        route.fulfill(response=answer, json=data)

    page.route(f"**{path}", newer_server)
    sign_in(page, team["approver"])
    open_export(page, export["id"])
    rows = page.locator("#audit tbody tr")
    expect(rows).to_have_count(5)
    changes = page.locator('#audit tr[data-event="request_changes"]')
    expect(changes.locator("td.what")).to_have_text("Request changes")
    expect(changes.locator("td.who")).to_have_text(team["approver"].sub)
    expect(changes.locator("td.notes .note")).to_have_text(
        ["Moved from under review to prepared", "Reason: attach the delivery note"])
    second = page.locator('#audit tr[data-event="second_approval"]')
    expect(second.locator("td.what")).to_have_text("Second approval")
    expect(second.locator("td.notes .note")).to_have_text(["Comments: ok by me"])
    expect(rows.nth(4).locator("td.what")).to_have_text("Changed")
    expect(rows.nth(4).locator("td.who")).to_have_text("System (automatic)")
    trail = page.locator("#audit").inner_text()
    for machine in ['{', '"', "[", secret, "line_items", "step"]:
        assert machine not in trail, (machine, trail)
    assert page.errors == []


def test_a_rolled_back_export_says_who_posted_it_and_who_rolled_it_back_and_why(page, server):
    tenant = unique("fin")
    alice = Client(server, unique("alice"), tenant)
    bob = Client(server, unique("bob"), tenant, ["approver"])
    export = stage(alice)
    waiting = stage(alice, invoice(invoice_number="INV-2002"))
    path = f"/v1/staging/exports/{export['id']}"
    keyed(bob, "PUT", f"{path}/approve", {})
    keyed(bob, "POST", f"{path}/post", {"external_reference": "QB-4711"})
    keyed(bob, "POST", f"{path}/rollback", {"reason": "duplicate posting of INV-2001"})
    row = bob.get(path).json()
    assert row["status"] == "rolled_back" and row["posted_by"] == bob.sub, row

    sign_in(page, bob)
    page.select_option("#status-filter", "rolled_back")
    open_export(page, export["id"])
    outcome = page.locator("#outcome")
    expect(outcome).to_be_visible()
    expect(page.locator("#outcome-heading")).to_have_text("Posted, then rolled back")
    shown = fields(page, "#outcome-fields")
    times = {k: page.locator("#outcome-fields dd time").nth(i).get_attribute("datetime")
             for i, k in enumerate(["Posted at", "Rolled back at"])}
    assert {k: v for k, v in shown.items() if not k.endswith(" at")} == {
        "Posted by": bob.sub,
        "Posted to": "netsuite",
        "External reference": "QB-4711",
        "Rolled back by": bob.sub,
        "Reason": "duplicate posting of INV-2001",
    }, shown
    assert times == {"Posted at": iso(row["posted_at"]), "Rolled back at": iso(row["rolled_back_at"])}, times
    for name in ("Posted at", "Rolled back at"):
        assert re.fullmatch(r"\S.*\d{4}.*\d{2}:\d{2}:\d{2}.*", shown[name]) and "T" not in shown[name], shown
    # Above the rest of the detail.
    assert outcome.bounding_box()["y"] < page.locator("#detail-fields").bounding_box()["y"]
    expect(page.locator('#audit tr[data-event="rollback"] td.notes')).to_have_text(
        "Reason: duplicate posting of INV-2001")

    # An export that was never posted has no outcome to show.
    page.select_option("#status-filter", "")
    open_export(page, waiting["id"])
    expect(outcome).to_be_hidden()
    assert page.errors == []


def test_the_queue_on_a_phone_keeps_words_whole_and_fits_the_screen(make_page, team):
    width = 390
    page = make_page(viewport={"width": width, "height": 844})
    long_vendor = "Nordwestdeutsche Büroausstattungs-Großhandelsgesellschaft mbH & Co. KG"
    exports = [
        stage(team["preparer"], invoice(vendor_name=long_vendor, invoice_number="INV-2026-000123-A"),
              invoice_id=unique("inv-source-system-reference")),
        stage(team["preparer"], invoice(total_amount="31.00", currency="euro", invoice_date="31/10/2026")),
        stage(team["preparer"], invoice(invoice_number="INV-7002")),
    ]
    review(team["clerk"], exports[2]["id"])
    sign_in(page, team["approver"])
    for export in exports:
        expect(page.locator(f'#exports tr[data-export-id="{export["id"]}"]')).to_have_count(1)
    expect(page.locator(f'#exports tr[data-export-id="{exports[1]["id"]}"]')).to_contain_text("YYYY-MM-DD")

    assert_no_page_overflow(page)
    assert_the_word_check_sees_a_broken_word(page)
    assert broken_words(page, "#exports tbody", 60) == []
    for selector in ("#sign-out", "#status-filter", "#refresh", "#exports tbody button"):
        assert_within_width(page, selector, width)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console-phone.png"), full_page=True)

    # An export's detail, its buttons and a form, on the phone.
    page.click(f'#exports button[data-export-id="{exports[0]["id"]}"]')
    expect(page.locator("#detail-fields")).to_contain_text(exports[0]["id"])
    assert_no_page_overflow(page)
    assert broken_words(page, "#detail-fields", 10) == []
    assert broken_words(page, "#audit", 4) == []
    for selector in ("#review-open", "#approve-open", "#reject-open"):
        assert_within_width(page, selector, width)
    page.click("#approve-open")
    expect(page.locator("#approve-form")).to_be_visible()
    assert_within_width(page, "#approve-submit", width)
    assert_within_width(page, "#approve-comments", width)
    assert_no_page_overflow(page)
    page.click("#approve-submit")
    expect(page.locator("#action-result")).to_have_text("Export approved.")
    assert_no_page_overflow(page)
    assert broken_words(page, "#audit", 8) == []
    assert page.errors == []


# ---- corrections in a form, the check, request changes, second approval ----


def check_requests(page, export_id):
    """Records the body of every check the page asks for on the export."""
    seen = []
    suffix = f"/v1/staging/exports/{export_id}/check"
    page.on("request", lambda r: seen.append(r.post_data_json) if r.url.endswith(suffix) else None)
    return seen


def test_an_approver_corrects_in_the_form_sees_the_check_and_approves_the_typed_strings(page, team):
    # A line whose amount is not quantity x unit price, and a total that is not the lines' sum.
    bad = invoice(total_amount="31.00",
                  line_items=[{"description": "Widget", "quantity": 3, "unit_price": "11.00", "amount": "30.00"}])
    export = stage(team["preparer"], bad)
    assert export["quality_score"] < 70, export
    sign_in(page, team["approver"])
    open_export(page, export["id"])
    checks = check_requests(page, export["id"])
    approves = requests_to(page, export["id"], "approve")
    page.click("#approve-open")
    key = page.text_content("#approve-key")

    # The form, prefilled from the prepared data; the check of the data as it is, once.
    expect(page.locator("#correct-vendor_name")).to_have_value("Acme Suplies")
    expect(page.locator("#correct-total_amount")).to_have_value("31.00")
    line = page.locator("#correct-lines tbody tr").first
    expect(page.locator("#correct-lines tbody tr")).to_have_count(1)
    expect(line.locator('input[data-field="quantity"]')).to_have_value("3")
    expect(line.locator('input[data-field="amount"]')).to_have_value("30.00")
    expect(page.locator("#approve-data")).to_be_hidden()
    score = page.locator("#check-score")
    expect(score).to_contain_text(f"Quality score {export['quality_score']} is below the threshold of 70")
    expect(score).to_contain_text("approval will be refused")
    findings = page.locator("#check-findings li")
    expect(findings).to_have_count(2)
    expect(page.locator("#check-findings")).to_contain_text("total_amount: line amounts sum to 30.00 but total_amount is 31.00")
    expect(page.locator("#check-findings")).not_to_contain_text("total_mismatch")
    expect(page.locator("#check-notes")).to_contain_text("No change against the prepared data")
    expect(page.locator("#check-diff")).to_be_hidden()
    expect(page.locator("#check-preview")).to_contain_text("31.00")
    assert checks == [{}], checks

    # Typing: the check follows, once the typing stops.
    page.locator("#correct-total_amount").fill("")
    page.locator("#correct-total_amount").press_sequentially("33.0", delay=20)
    line.locator('input[data-field="amount"]').fill("33.00")
    expect(score).to_contain_text("Quality score 100 (threshold 70): it can be approved.")
    expect(page.locator("#check-state")).to_be_hidden()
    expect(findings).to_have_text(["No findings."])
    expect(page.locator("#check-diff tbody tr")).to_have_count(2)
    expect(page.locator("#check-diff tbody tr td.path")).to_have_text(["$.line_items[0].amount", "$.total_amount"])
    expect(page.locator("#check-diff tbody tr").nth(1).locator("td.after")).to_have_text('"33.0"')
    expect(page.locator("#check-notes")).to_contain_text("a change reason is required")
    expect(page.locator("#check-notes")).to_contain_text("The corrections change an amount; no second approval is needed.")
    expect(page.locator("#check-preview")).to_contain_text("33.0")
    expect(page.locator("#check-preview")).not_to_contain_text("31.00")
    expect(page.locator("#check-preview-note")).to_contain_text(f"{export['id']}.csv")
    # Debounced: not one check per keystroke; the last one sent the typed strings.
    assert 2 <= len(checks) <= 4, checks
    last = checks[-1]["approved_data"]
    assert last["total_amount"] == "33.0" and last["line_items"][0]["amount"] == "33.00", last
    assert last["line_items"][0]["quantity"] == 3 and last["line_items"][0]["unit_price"] == "11.00", last
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#approve-form").screenshot(path=str(ARTIFACTS / "console-correction.png"))

    # A correction needs its reason; then one approval with the decision's key.
    page.click("#approve-submit")
    expect(page.locator("#action-result")).to_contain_text("a change reason is required")
    page.fill("#approve-reason", "amounts per the delivery note")
    page.click("#approve-submit")
    expect(page.locator("#action-result")).to_have_text("Export approved.")
    expect(page.locator("#detail-fields")).to_contain_text("approved")
    expect(page.locator("#diff tbody tr")).to_have_count(2)
    row = team["approver"].get(f"/v1/staging/exports/{export['id']}").json()
    assert row["status"] == "approved", row
    assert row["approved_data"] == {**bad, "total_amount": "33.0", "line_items": [
        {"description": "Widget", "quantity": 3, "unit_price": "11.00", "amount": "33.00"}]}, row
    assert row["change_reason"] == "amounts per the delivery note", row
    rows = audit(team["approver"], export["id"], "approve")
    assert len(rows) == 1 and rows[0]["idempotency_key"] == key, rows
    assert [r.header_value("idempotency-key") for r in approves] == [key]
    assert page.errors == []


def test_the_form_adds_and_removes_lines_and_the_json_view_takes_precedence_while_open(page, team):
    export = stage(team["preparer"])
    sign_in(page, team["approver"])
    open_export(page, export["id"])
    page.click("#approve-open")
    expect(page.locator("#check-score")).to_contain_text("Quality score 100")
    # A second line: the total no longer matches until it is corrected too.
    page.click("#correct-add-line")
    new = page.locator("#correct-lines tbody tr").nth(1)
    new.locator('input[data-field="description"]').fill("Freight")
    new.locator('input[data-field="quantity"]').fill("1")
    new.locator('input[data-field="unit_price"]').fill("5.00")
    new.locator('input[data-field="amount"]').fill("5.00")
    expect(page.locator("#check-findings")).to_contain_text("total_amount")
    expect(page.locator("#check-diff tbody tr td.path")).to_have_text(["$.line_items[1]"])
    page.fill("#correct-total_amount", "35.00")
    expect(page.locator("#check-score")).to_contain_text("Quality score 100")
    expect(page.locator("#check-diff tbody tr")).to_have_count(2)
    # The JSON view starts from the form; while open it is what is checked.
    page.check("#approve-correct")
    data = json.loads(page.input_value("#approve-data"))
    assert data["total_amount"] == "35.00" and data["line_items"][1] == {
        "description": "Freight", "quantity": "1", "unit_price": "5.00", "amount": "5.00"}, data
    expect(page.locator("#correct-total_amount")).to_be_disabled()
    data["vendor_name"] = "Acme Supplies"
    page.fill("#approve-data", json.dumps(data))
    expect(page.locator("#check-diff tbody tr td.path")).to_have_text(
        ["$.line_items[1]", "$.total_amount", "$.vendor_name"])
    page.fill("#approve-data", "{not json")
    expect(page.locator("#check-state")).to_contain_text("not valid JSON")
    page.fill("#approve-data", json.dumps(data))
    # Closed: the form takes the JSON's data.
    page.uncheck("#approve-correct")
    expect(page.locator("#correct-vendor_name")).to_have_value("Acme Supplies")
    # The line removed again: back to the prepared lines.
    page.locator("#correct-lines tbody tr").nth(1).locator("button.remove-line").click()
    page.fill("#correct-total_amount", "30.00")
    expect(page.locator("#check-diff tbody tr td.path")).to_have_text(["$.vendor_name"])
    page.fill("#approve-reason", "vendor name")
    page.click("#approve-submit")
    expect(page.locator("#action-result")).to_have_text("Export approved.")
    row = team["approver"].get(f"/v1/staging/exports/{export['id']}").json()
    assert row["approved_data"] == invoice(vendor_name="Acme Supplies"), row
    assert page.errors == []


def test_only_the_latest_check_is_shown(page, team):
    export = stage(team["preparer"])
    sign_in(page, team["approver"])
    open_export(page, export["id"])
    page.click("#approve-open")
    expect(page.locator("#check-score")).to_contain_text("Quality score 100")
    # The next check's answer (a total of 99.00: a finding) is held back until a
    # later check (30.0: no finding) has been answered and shown.
    held = []
    pattern = f"**/v1/staging/exports/{export['id']}/check"
    page.route(pattern, lambda route: held.append(route) if not held else route.continue_())
    page.fill("#correct-total_amount", "99.00")
    deadline = time.time() + TIMEOUT_MS / 1000
    while not held:
        assert time.time() < deadline
        page.wait_for_timeout(50)
    assert held[0].request.post_data_json["approved_data"]["total_amount"] == "99.00"
    expect(page.locator("#check-state")).to_have_text("Checking…")
    page.fill("#correct-total_amount", "30.0")
    expect(page.locator("#check-diff tbody tr td.after")).to_have_text(['"30.0"'])
    expect(page.locator("#check-state")).to_be_hidden()
    with page.expect_request_finished(lambda r: r.url.endswith("/check")):
        held[0].continue_()
    page.wait_for_timeout(300)
    # The stale answer came back and was dropped.
    expect(page.locator("#check-findings")).to_have_text("No findings.")
    expect(page.locator("#check-diff tbody tr td.after")).to_have_text(['"30.0"'])
    expect(page.locator("#check-preview")).not_to_contain_text("99.00")
    page.unroute(pattern)
    assert page.errors == []


def test_an_approver_requests_changes_and_the_export_goes_back_to_its_preparer(page, team):
    export = stage(team["preparer"])
    sign_in(page, team["approver"])
    open_export(page, export["id"])
    # With its preparer still: nothing to send back yet.
    button = page.locator("#request-changes-open")
    expect(button).to_be_visible()
    expect(button).to_be_disabled()
    expect(page.locator("#actions-why")).to_contain_text("The export is with its preparer")
    review(team["preparer"], export["id"])
    page.click("#refresh")
    open_export(page, export["id"])
    expect(button).to_be_enabled()
    expect(page.locator("#actions-why")).to_be_hidden()
    sent = requests_to(page, export["id"], "request-changes")
    button.click()
    key = page.text_content("#request-changes-key")
    assert key.startswith("console-request-changes-"), key
    page.click("#request-changes-submit")
    expect(page.locator("#action-result")).to_contain_text("A reason is required to request changes")
    assert sent == []
    page.fill("#request-changes-reason", "attach the delivery note")
    page.dblclick("#request-changes-submit")
    expect(page.locator("#action-result")).to_have_text("Export sent back to its preparer.")
    note = page.locator("#changes-requested")
    expect(note).to_contain_text(f"Changes requested by {team['approver'].sub} on ")
    expect(note).to_contain_text(": attach the delivery note")
    expect(note.locator("time")).to_have_count(1)
    expect(page.locator("#detail-fields")).to_contain_text("prepared")
    expect(page.locator('#audit tr[data-event="request_changes"] td.notes')).to_contain_text(
        "Reason: attach the delivery note")
    expect(button).to_be_disabled()
    assert [r.header_value("idempotency-key") for r in sent] == [key]
    row = team["approver"].get(f"/v1/staging/exports/{export['id']}").json()
    assert row["status"] == "prepared", row
    assert (row["changes_requested_by"], row["changes_requested_reason"]) == (
        team["approver"].sub, "attach the delivery note"), row
    rows = audit(team["approver"], export["id"], "request_changes")
    assert len(rows) == 1 and rows[0]["idempotency_key"] == key, rows
    assert page.errors == []


@pytest.fixture(scope="module")
def dual(origin):
    """A server that asks for a second approval when a correction changes an
    amount, and posts to an accounting destination (the test origin's)."""
    s = Server(STAGING_SECOND_APPROVAL="amount_changes", DESTINATION_URL=f"{origin.url}/destination",
               UPSTREAM_TIMEOUT_MS=2000).start()
    yield s
    s.cleanup()


def test_a_corrected_amount_waits_for_a_second_approver_who_approves_it_in_the_page(make_page, dual):
    tenant = unique("fin")
    preparer = Client(dual, unique("prep"), tenant)
    preparer_approver = Client(dual, preparer.sub, tenant, ["approver"])
    a = Client(dual, unique("appr-a"), tenant, ["approver"])
    b = Client(dual, unique("appr-b"), tenant, ["approver"])
    export = stage(preparer, invoice(total_amount="31.00"))
    page = make_page(srv=dual)

    # Approver A corrects the total in the form: the check says a second approver is needed.
    sign_in(page, a)
    open_export(page, export["id"])
    page.click("#approve-open")
    page.fill("#correct-total_amount", "30.00")
    expect(page.locator("#check-notes")).to_contain_text("A second approver will be needed")
    expect(page.locator("#check-score")).to_contain_text("Quality score 100")
    page.fill("#approve-reason", "total per the PO")
    page.click("#approve-submit")
    result = page.locator("#action-result")
    expect(result).to_contain_text("first approval")
    expect(result).to_contain_text("waits for a second approver")
    box = page.locator("#second-approval")
    expect(box).to_be_visible()
    expect(box).to_contain_text(f"{a.sub} made the first approval")
    expect(box).to_contain_text("A second approver is needed")
    expect(page.locator("#second-approval-changes li")).to_have_text(['$.total_amount: "31.00" → "30.00"'])
    expect(page.locator("#detail-fields")).to_contain_text("awaiting second approval")
    # A may not make the second approval; the page says why before anyone presses.
    approve = page.locator("#approve-open")
    expect(approve).to_have_text("Approve (second approval)")
    expect(approve).to_be_disabled()
    expect(page.locator("#actions-why")).to_contain_text("You made the first approval")
    expect(page.locator("#request-changes-open")).to_be_enabled()
    row = a.get(f"/v1/staging/exports/{export['id']}").json()
    assert (row["status"], row["approved_by"], row["second_approved_by"]) == (
        "awaiting_second_approval", a.sub, None), row

    # Nor may the preparer, even with the approver role.
    sign_in(page, preparer_approver)
    open_export(page, export["id"])
    expect(approve).to_be_disabled()
    expect(page.locator("#actions-why")).to_contain_text("You prepared this export")

    # Approver B: the default view lists it, in words; the second approval sends an empty body.
    sign_in(page, b)
    expect(page.locator("#status-filter")).to_have_value("prepared,under_review,awaiting_second_approval")
    listed = page.locator(f'#exports tr[data-export-id="{export["id"]}"]')
    expect(listed).to_have_count(1)
    expect(listed.locator("td").nth(4)).to_have_text("awaiting second approval")
    page.select_option("#status-filter", "awaiting_second_approval")
    expect(listed).to_have_count(1)
    open_export(page, export["id"])
    expect(approve).to_be_enabled()
    expect(approve).to_have_text("Approve (second approval)")
    expect(page.locator("#diff-note")).to_contain_text("corrected at the first approval")
    approves = requests_to(page, export["id"], "approve")
    approve.click()
    expect(page.locator("#approve-submit")).to_have_text("Approve (second approval)")
    expect(page.locator("#approve-corrections")).to_be_hidden()
    expect(page.locator("#approve-second-note")).to_contain_text(f"{a.sub} made the first approval")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console-second-approval.png"), full_page=True)
    page.click("#approve-submit")
    expect(result).to_have_text("Export approved.")
    expect(page.locator("#detail-fields")).to_contain_text(f"Second approval by{b.sub}")
    shown = fields(page, "#detail-fields")
    assert shown["Status"] == "approved" and shown["First approval by"] == a.sub, shown
    assert shown["Second approval by"] == b.sub, shown
    expect(box).to_be_hidden()
    expect(page.locator('#audit tr[data-event="approve"] td.what')).to_have_text("Approved (second approval)")
    assert len(approves) == 1 and approves[0].post_data_json == {}, [r.post_data for r in approves]
    row = b.get(f"/v1/staging/exports/{export['id']}").json()
    assert (row["status"], row["approved_by"], row["second_approved_by"]) == ("approved", a.sub, b.sub), row
    assert row["approved_data"]["total_amount"] == "30.00", row
    assert [e["event"] for e in b.get(f"/v1/staging/exports/{export['id']}/audit").json()["entries"]] == [
        "stage", "first_approval", "approve"]
    assert page.errors == []


def test_a_reload_after_a_lost_corrected_approval_restores_the_form_and_its_key(page, team):
    export = stage(team["preparer"], invoice(total_amount="31.00"))
    sign_in(page, team["approver"])
    open_export(page, export["id"])
    page.click("#approve-open")
    key = page.text_content("#approve-key")
    page.fill("#correct-total_amount", "30.000")
    page.fill("#approve-reason", "total per the PO")
    expect(page.locator("#check-score")).to_contain_text("Quality score 100")
    pattern = f"**/v1/staging/exports/{export['id']}/approve"
    page.route(pattern, lambda route: route.abort("internetdisconnected"))
    page.click("#approve-submit")
    expect(page.locator("#action-result")).to_contain_text("No answer from the server")
    page.unroute(pattern)

    approves = requests_to(page, export["id"], "approve")
    page.reload()
    expect(page.locator("#whoami")).to_contain_text(team["approver"].sub)
    open_export(page, export["id"])
    page.click("#approve-open")
    expect(page.locator("#approve-key")).to_have_text(key)
    expect(page.locator("#correct-total_amount")).to_have_value("30.000")
    expect(page.locator("#approve-reason")).to_have_value("total per the PO")
    expect(page.locator("#check-diff tbody tr td.after")).to_have_text(['"30.000"'])
    page.click("#approve-submit")
    expect(page.locator("#action-result")).to_have_text("Export approved.")
    assert [r.header_value("idempotency-key") for r in approves] == [key]
    row = team["approver"].get(f"/v1/staging/exports/{export['id']}").json()
    assert row["approved_data"] == invoice(total_amount="30.000") and row["change_reason"] == "total per the PO", row
    assert page.errors == []


def pressed_anyway_is_refused(page, action, says, fill=None):
    """Enables the action's button the page disabled, as someone getting round
    the page would, sends the action, and checks the server's 403 is said."""
    page.evaluate(f"document.getElementById('{action}-open').disabled = false")
    page.click(f"#{action}-open")
    for selector, value in (fill or {}).items():
        page.fill(selector, value)
    page.click(f"#{action}-submit")
    result = page.locator("#action-result")
    expect(result).to_contain_text(says)
    expect(result).to_contain_text("HTTP 403")


def test_post_and_rollback_in_the_page_need_their_roles_and_never_the_preparer(page, team):
    tenant = team["approver"].tenant
    poster = Client(team["approver"].server, unique("poster"), tenant, ["poster"])
    approver, clerk, both = team["approver"], team["clerk"], team["both"]
    export = stage(team["preparer"])
    own = stage(both, invoice(invoice_number="INV-2003"))
    for e in (export, own):
        keyed(approver, "PUT", f"/v1/staging/exports/{e['id']}/approve", {})
    result, why = page.locator("#action-result"), page.locator("#actions-why")

    # A clerk: Post is shown disabled with the reason; pressed anyway, the server refuses it.
    sign_in(page, clerk)
    page.select_option("#status-filter", "approved")
    open_export(page, export["id"])
    expect(page.locator("#post-open")).to_be_visible()
    expect(page.locator("#post-open")).to_be_disabled()
    expect(page.locator("#rollback-open")).to_be_hidden()
    for hidden in ("review", "approve", "reject", "request-changes"):
        expect(page.locator(f"#{hidden}-open")).to_be_hidden()
    expect(why.locator("li")).to_have_text(["Posting needs the approver or poster role, which you do not have."])
    expect(page.locator("#post-open")).to_have_attribute("title", re.compile("approver or poster role"))
    pressed_anyway_is_refused(page, "post", "Your token lacks the role needed for this: it cannot be posted by you.")
    assert audit(approver, export["id"], "post") == []

    # The preparer, though an approver: not their own export.
    sign_in(page, both)
    page.select_option("#status-filter", "approved")
    open_export(page, own["id"])
    expect(page.locator("#post-open")).to_be_disabled()
    expect(why).to_have_text("You prepared this export, so someone else must post it (segregation of duties).")
    pressed_anyway_is_refused(page, "post", "You prepared this export, so you cannot post it")
    assert audit(approver, own["id"], "post") == []

    # A poster posts, with a reference of their own, once however often Post is pressed.
    sign_in(page, poster)
    page.select_option("#status-filter", "approved")
    open_export(page, export["id"])
    expect(page.locator("#post-open")).to_be_enabled()
    expect(why).to_be_hidden()
    posts = requests_to(page, export["id"], "post")
    page.click("#post-open")
    page.fill("#post-reference", "QB-7788")
    page.locator("#post-submit").dblclick()
    expect(result).to_have_text("Export posted.")
    expect(page.locator("#outcome-heading")).to_have_text("Posted")
    shown = fields(page, "#outcome-fields")
    assert shown["Posted by"] == poster.sub and shown["External reference"] == "QB-7788", shown
    assert len(posts) == 1 and posts[0].method == "POST" and posts[0].post_data_json == {
        "external_reference": "QB-7788"}, [r.post_data for r in posts]
    assert posts[0].headers["idempotency-key"].startswith("console-post-")
    expect(page.locator("#post-open")).to_be_hidden()

    # Rolling back needs the approver role: a poster cannot, whatever the page shows.
    expect(page.locator("#rollback-open")).to_be_disabled()
    expect(why).to_have_text("Rolling back needs the approver role, which you do not have.")
    pressed_anyway_is_refused(page, "rollback", "it cannot be rolled back by you", {"#rollback-reason": "oops"})
    assert audit(approver, export["id"], "rollback") == []

    # An approver rolls it back, and only with a reason.
    sign_in(page, approver)
    page.select_option("#status-filter", "posted")
    open_export(page, export["id"])
    expect(page.locator("#rollback-open")).to_be_enabled()
    rollbacks = requests_to(page, export["id"], "rollback")
    page.click("#rollback-open")
    page.click("#rollback-submit")
    expect(result).to_have_text("A reason is required to roll back a posted export.")
    assert rollbacks == []
    page.fill("#rollback-reason", "posted to the wrong period")
    page.click("#rollback-submit")
    expect(result).to_have_text("Export rolled back.")
    expect(page.locator("#outcome-heading")).to_have_text("Posted, then rolled back")
    expect(page.locator("#rollback-open")).to_be_hidden()
    row = approver.get(f"/v1/staging/exports/{export['id']}").json()
    assert row["status"] == "rolled_back" and row["posted_by"] == poster.sub, row
    assert row["rolled_back_by"] == approver.sub and row["rollback_reason"] == "posted to the wrong period", row
    assert [e["actor"] for e in audit(approver, export["id"], "post")] == [poster.sub]
    assert [e["actor"] for e in audit(approver, export["id"], "rollback")] == [approver.sub]
    assert len(rollbacks) == 1 and rollbacks[0].post_data_json == {"reason": "posted to the wrong period"}
    assert page.errors == []


def test_a_refused_delivery_is_said_in_words_and_post_again_resends_the_same_key(make_page, dual, origin):
    tenant = unique("fin")
    preparer = Client(dual, unique("prep"), tenant)
    approver = Client(dual, unique("appr"), tenant, ["approver"])
    export = stage(preparer)
    keyed(approver, "PUT", f"/v1/staging/exports/{export['id']}/approve", {})
    page = make_page(srv=dual)
    sign_in(page, approver)
    page.select_option("#status-filter", "approved")
    open_export(page, export["id"])
    posts = requests_to(page, export["id"], "post")
    result = page.locator("#action-result")
    origin.destination_status = 503
    try:
        page.click("#post-open")
        page.click("#post-submit")
        expect(result).to_contain_text("The accounting system did not take the file, so it was not posted.")
        expect(result).to_contain_text("The export is now failed")
        expect(result).to_contain_text("HTTP 502")
    finally:
        origin.destination_status = 200
    row = approver.get(f"/v1/staging/exports/{export['id']}").json()
    assert row["status"] == "failed" and row["retries"] == 1, row
    # The detail is read again: it says why and how many attempts, and the
    # form stays open for another.
    expect(page.locator("#post-open")).to_have_text("Post again…")
    shown = fields(page, "#detail-fields")
    assert shown["Status"] == "failed", shown
    assert shown["Last delivery error"] == "destination answered 503", shown
    assert shown["Delivery attempts"] == f"1 of {row['max_retries']}", shown
    expect(page.locator("#post-form")).to_be_visible()
    page.click("#post-submit")
    expect(result).to_have_text("Export posted.")
    assert len(posts) == 2, [r.post_data for r in posts]
    assert posts[0].headers["idempotency-key"] == posts[1].headers["idempotency-key"]
    row = approver.get(f"/v1/staging/exports/{export['id']}").json()
    assert row["status"] == "posted" and row["external_reference"].startswith("ACC-"), row
    assert [e["event"] for e in audit(approver, export["id"], "post_failed")] == ["post_failed"]
    assert page.errors == []


ACCESS_KEY = Key("RS256", "access-1")


@pytest.fixture(scope="module")
def behind_access():
    """A server set up as behind Cloudflare Access: the team's certs (a local
    JWKS), its issuer and audience, the tenant and roles passed through from
    the identity provider under `custom`."""
    jwks = Jwks([ACCESS_KEY])
    s = Server(AUTH_JWKS_URL=jwks.url, AUTH_JWT_ISSUER=TEAM, AUTH_JWT_AUDIENCE=AUD,
               AUTH_TENANT_CLAIM="/custom/tenant", AUTH_ROLES_CLAIM="/custom/roles").start()
    yield s
    s.cleanup()
    jwks.stop()


def access_token(sub, tenant, roles=()):
    now = int(time.time())
    return ACCESS_KEY.sign({"sub": sub, "email": f"{sub}@example.com", "iss": TEAM, "aud": [AUD], "iat": now,
                            "exp": now + 600, "custom": {"tenant": tenant, "roles": list(roles)}})


def test_behind_cloudflare_access_the_console_signs_in_with_no_token_to_paste(make_page, behind_access):
    srv, tenant = behind_access, unique("fin")
    prep, appr, clerk = unique("prep"), unique("appr"), unique("clerk")
    body = {"invoice_id": unique("inv"), "export_format": "csv", "destination_system": "netsuite",
            "export_data": invoice()}
    r = srv.request("POST", "/v1/staging/exports", body, {
        "content-type": "application/json", "idempotency-key": unique("stage"),
        "cf-access-jwt-assertion": access_token(prep, tenant)})
    assert r.status == 201, r
    export = r.json()

    # The edge adds Access's token to every request that reaches the Worker.
    page = make_page(srv=srv, extra_http_headers={"cf-access-jwt-assertion": access_token(appr, tenant, ["approver"])})
    sent = []
    page.on("request", lambda r: sent.append(r) if "/v1/" in r.url else None)
    page.goto("/console")
    whoami = page.locator("#whoami")
    expect(whoami).to_have_text(f"Signed in as {appr} through Cloudflare Access (tenant {tenant}) · roles: approver")
    expect(page.locator("#token-panel")).to_be_hidden()
    expect(page.locator("#sign-out")).to_be_visible()
    open_export(page, export["id"])
    expect(page.locator("#approve-open")).to_be_enabled()
    page.click("#approve-open")
    page.click("#approve-submit")
    expect(page.locator("#action-result")).to_have_text("Export approved.")
    row = srv.request("GET", f"/v1/staging/exports/{export['id']}", None,
                      {"cf-access-jwt-assertion": access_token(appr, tenant)}).json()
    assert row["status"] == "approved" and row["approved_by"] == appr, row
    # The page sent no token of its own: Access's header carried every request.
    assert sent and all(r.header_value("authorization") is None for r in sent), [r.url for r in sent]

    # Signing out ends the Access session (Access's logout on the application's host).
    page.route("**/cdn-cgi/access/logout", lambda route, _r: route.fulfill(status=200, body="Signed out of Access"))
    page.click("#sign-out")
    page.wait_for_url("**/cdn-cgi/access/logout")

    # A person without the approver role, through Access: the actions say why.
    page = make_page(srv=srv, extra_http_headers={"cf-access-jwt-assertion": access_token(clerk, tenant)})
    page.goto("/console")
    expect(page.locator("#whoami")).to_have_text(f"Signed in as {clerk} through Cloudflare Access (tenant {tenant}) · no role")
    page.select_option("#status-filter", "")
    open_export(page, export["id"])
    expect(page.locator("#post-open")).to_be_disabled()
    expect(page.locator("#actions-why")).to_have_text("Posting needs the approver or poster role, which you do not have.")


def test_a_pasted_token_shows_the_roles_the_server_reads_through_the_claim_pointers(make_page, behind_access):
    """The page asks the server who the token is (GET /v1/me): with claim
    pointers the roles are not where a token of the dev secret keeps them."""
    srv, tenant, appr = behind_access, unique("fin"), unique("appr")
    page = make_page(srv=srv)
    page.goto("/console")
    expect(page.locator("#token-panel")).to_be_visible()
    expect(page.locator("#main")).to_be_hidden()
    page.fill("#token-input", access_token(appr, tenant, ["approver"]))
    page.click("#token-save")
    expect(page.locator("#whoami")).to_have_text(f"Signed in as {appr} (tenant {tenant}) · roles: approver")
    expect(page.locator("#token-panel")).to_be_hidden()
    # A token the server refuses (another key): said, and the panel stays.
    sign_out(page)
    page.fill("#token-input", Key("RS256", "access-1").sign({"sub": appr, "iss": TEAM, "aud": [AUD],
                                                             "exp": int(time.time()) + 600}))
    page.click("#token-save")
    expect(page.locator("#message")).to_contain_text("Your token was not accepted")
    expect(page.locator("#main")).to_be_hidden()
    assert page.errors == []
