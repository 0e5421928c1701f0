"""Key admin (state, release), stats, and text extraction seen through the API."""

import time

from conftest import Client, assert_problem, text_doc, unique


def test_key_state_shows_completed_with_expiry_for_its_tenant_only(alice, bob):
    alice.post_document(text_doc(), "k-state")
    r = alice.get("/v1/idempotency/keys/k-state?route=/v1/documents")
    assert r.status == 200, r
    s = r.json()
    assert s["state"] == "completed" and s["response_status"] == 201
    assert s["expires_at"] > time.time() * 1000 + 86_000_000
    assert_problem(bob.get("/v1/idempotency/keys/k-state?route=/v1/documents"), 404)


def test_key_state_during_processing(alice):
    import threading
    doc = text_doc()
    t = threading.Thread(target=lambda: alice.post_document(doc, "k-proc", {"x-idemgate-test-delay-ms": "2500"}))
    t.start()
    time.sleep(0.8)
    s = alice.get("/v1/idempotency/keys/k-proc?route=POST%20/v1/documents").json()
    t.join()
    assert s["state"] == "processing"
    assert s["lease_expires_at"] > time.time() * 1000


def test_key_state_needs_a_known_route_and_a_valid_key(alice):
    assert_problem(alice.get("/v1/idempotency/keys/k?route=/v1/unknown"), 400, "invalid-route")
    assert_problem(alice.get("/v1/idempotency/keys/k"), 400, "invalid-route")
    assert_problem(alice.get("/v1/idempotency/keys/bad%20key?route=/v1/documents"), 400, "invalid-idempotency-key")
    assert_problem(alice.get("/v1/idempotency/keys/never-used?route=/v1/documents"), 404)


def test_deleting_a_key_releases_it_for_a_new_run(server, alice):
    doc = text_doc()
    first = alice.post_document(doc, "k-release").json()
    r = alice.delete("/v1/idempotency/keys/k-release?route=/v1/documents")
    assert r.status == 204, r
    assert_problem(alice.get("/v1/idempotency/keys/k-release?route=/v1/documents"), 404)
    again = alice.post_document(doc, "k-release")
    assert again.status == 201 and again.header("idempotent-replayed") is None
    assert again.json()["id"] != first["id"]
    assert_problem(alice.delete("/v1/idempotency/keys/never-used?route=/v1/documents"), 404)


def test_another_tenant_cannot_release_a_key(alice, bob):
    alice.post_document(text_doc(), "k-owned")
    assert_problem(bob.delete("/v1/idempotency/keys/k-owned?route=/v1/documents"), 404)
    assert alice.get("/v1/idempotency/keys/k-owned?route=/v1/documents").json()["state"] == "completed"


def test_stats_need_admin_and_count_replays_conflicts_mismatches(server):
    tenant = unique("stats")
    admin = Client(server, unique("admin"), tenant, ["admin"])
    user = Client(server, unique("user"), tenant)
    assert_problem(user.get("/v1/idempotency/stats"), 403)
    doc = text_doc()
    assert user.post_document(doc, "s1").status == 201
    assert user.post_document(doc, "s1").status == 201  # replay
    assert user.post_document(doc, "s1").status == 201  # replay
    assert user.post_document(text_doc("other"), "s1").status == 422
    import threading
    t = threading.Thread(target=lambda: user.post_document(doc, "s2", {"x-idemgate-test-delay-ms": "2000"}))
    t.start()
    time.sleep(0.8)
    assert user.post_document(doc, "s2").status == 409
    t.join()
    want = {"completed": 2, "replayed": 2, "mismatch": 1, "conflict": 1}
    deadline = time.time() + 10
    while True:
        s = admin.get("/v1/idempotency/stats").json()
        route = s["routes"].get("POST /v1/documents", {})
        got = {k: route.get(k) for k in want}
        if got == want or time.time() > deadline:
            break
        time.sleep(0.3)
    assert got == want, s
    assert route["by_response_status"] == {"201": 2}
    assert s["tenant"] == tenant


def test_html_is_extracted_without_markup_scripts_or_styles(alice):
    html = ("<html><head><style>p{color:red}</style><script>alert('x')</script></head>"
            "<body><h1>Title &amp; more</h1><p>First&nbsp;para &lt;b&gt;</p><p>Second</p></body></html>")
    r = alice.post_document({"filename": "a.html", "content_type": "text/html", "content": html}, "k-html")
    assert r.status == 201
    text = alice.get(f"/v1/documents/{r.json()['id']}").json()["text"]
    assert "alert" not in text and "color" not in text and "<" not in text.replace("<b>", "")
    assert "Title & more" in text and "First para <b>" in text and "Second" in text


def test_json_and_csv_and_base64_documents(alice):
    import base64
    j = alice.post_document({"filename": "d.json", "content_type": "application/json",
                             "content": '{"title": "Hello", "items": ["alpha", "beta"], "n": 3}'}, "k-json")
    assert j.status == 201
    text = alice.get(f"/v1/documents/{j.json()['id']}").json()["text"]
    assert text.split("\n") == ["Hello", "alpha", "beta"]
    c = alice.post_document({"filename": "d.csv", "content_type": "text/csv",
                             "content_base64": base64.b64encode(b'name,city\n"Smith, J",Paris\n').decode()}, "k-csv")
    assert c.status == 201, c
    text = alice.get(f"/v1/documents/{c.json()['id']}").json()["text"]
    assert "Smith, J" in text and "Paris" in text
    bad = alice.post_document({"filename": "d.json", "content_type": "application/json", "content": "{oops"}, "k-badjson")
    assert_problem(bad, 400)
    # A 4xx answer from the function is stored and replayed like any other.
    again = alice.post_document({"filename": "d.json", "content_type": "application/json", "content": "{oops"}, "k-badjson")
    assert again.status == 400 and again.header("idempotent-replayed") == "true"


def test_chunks_overlap_and_are_paged(alice):
    paragraphs = "\n\n".join(f"Paragraph {i}. " + "Sentence about things. " * 12 for i in range(20))
    r = alice.post_document({"filename": "long.md", "content_type": "text/markdown", "content": paragraphs,
                             "chunk_size": 500, "chunk_overlap": 50}, "k-chunks")
    assert r.status == 201
    doc = r.json()
    n = doc["stats"]["chunks"]
    assert n > 5
    page1 = alice.get(f"/v1/documents/{doc['id']}/chunks?limit=3").json()
    assert len(page1["chunks"]) == 3 and page1["total"] == n and page1["next_offset"] == 3
    everything = alice.get(f"/v1/documents/{doc['id']}/chunks?limit=1000").json()["chunks"]
    assert [c["index"] for c in everything] == list(range(n))
    assert all(len(c["text"]) <= 500 for c in everything)
    assert all(b["start"] < a["end"] for a, b in zip(everything, everything[1:])), "consecutive chunks overlap"
