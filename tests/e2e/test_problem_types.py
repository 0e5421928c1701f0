"""Problem types that lead somewhere: every problem's `type` is `/errors/<slug>`,
relative to the request's URL, and GETting it (no token) answers the type's page
with its title; `/errors` lists every type, and docs/errors.md is the same catalog."""

import html
import re
import time
from urllib.parse import urljoin, urlsplit

from conftest import ROOT, SECRET, assert_problem, text_doc
from jwt import sign
from test_contract import start_slow

SLUGS = re.findall(r"^## ([a-z0-9-]+)$", (ROOT / "docs/errors.md").read_text(), re.M)


def resolve(server, path, problem):
    """The problem's `type` resolved against the URL the request went to, fetched."""
    url = urljoin(f"http://127.0.0.1:{server.port}{path}", problem["type"])
    parts = urlsplit(url)
    assert (parts.hostname, parts.port) == ("127.0.0.1", server.port), url
    return server.request("GET", parts.path)


def page_title(reply):
    assert reply.status == 200, reply
    assert reply.header("content-type") == "text/html; charset=utf-8"
    m = re.search(r"<h1>(.*?)</h1>", reply.body.decode())
    assert m, reply.body[:300]
    return html.unescape(m.group(1))


def test_real_error_answers_name_a_type_whose_page_answers_with_their_title(server, alice):
    doc = text_doc()
    alice.post_document(doc, "pt-reused")
    slow_doc = text_doc()
    t, slow = start_slow(alice, slow_doc, "pt-inflight", 2500)
    in_flight = alice.post_document(slow_doc, "pt-inflight")
    t.join()
    now = int(time.time())
    expired = {"authorization": "Bearer " + sign({"sub": "u", "exp": now - 1}, SECRET),
               "content-type": "application/json", "idempotency-key": "k"}
    samples = [
        ("/v1/documents", alice.post_document("{not json", "pt-1"), 400, "invalid-json"),
        ("/v1/documents", alice.post_document({**doc, "extra": 1}, "pt-2"), 400, "unknown-field"),
        ("/v1/documents", server.request("POST", "/v1/documents", doc, expired), 401, "unauthorized"),
        ("/v1/nothing/here", alice.get("/v1/nothing/here"), 404, "not-found"),
        ("/healthz", server.request("POST", "/healthz", "{}", {}), 405, "method-not-allowed"),
        ("/v1/documents", in_flight, 409, "idempotency-key-in-flight"),
        ("/v1/documents", alice.post_document(text_doc("x" * (1_048_576 + 10)), "pt-3"), 413, "payload-too-large"),
        ("/v1/documents", alice.post_document({"filename": "a.pdf", "content_type": "application/pdf",
                                               "content": "x"}, "pt-4"), 415, "unsupported-media-type"),
        ("/v1/documents", alice.post_document(text_doc("other"), "pt-reused"), 422, "idempotency-key-reused"),
    ]
    assert slow["reply"].status == 201
    for path, reply, status, slug in samples:
        p = assert_problem(reply, status, slug)
        assert p["type"] == f"/errors/{slug}", p
        page = resolve(server, path, p)
        assert page_title(page) == p["title"], (slug, p["title"])
        assert f"HTTP {status}" in page.body.decode(), slug


def test_every_type_of_the_catalog_has_its_page_and_is_in_the_index(server):
    assert len(SLUGS) > 30
    index = server.request("GET", "/errors")
    page_title(index)
    for slug in SLUGS:
        assert f'href="/errors/{slug}"' in index.body.decode(), slug
        reply = server.request("GET", f"/errors/{slug}")
        page_title(reply)
        assert f"<code>/errors/{slug}</code>" in reply.body.decode()
        assert "What to do" in reply.body.decode()
    assert reply.header("content-security-policy").startswith("default-src 'none'")
    head = server.request("HEAD", f"/errors/{SLUGS[0]}")
    assert head.status == 200 and head.body == b""


def test_an_unknown_type_is_a_404_problem_whose_own_type_resolves(server):
    reply = server.request("GET", "/errors/no-such-type")
    p = assert_problem(reply, 404, "not-found")
    assert page_title(resolve(server, "/errors/no-such-type", p)) == p["title"] == "Not found"
    assert_problem(server.request("POST", "/errors/not-found", "{}", {}), 405, "method-not-allowed")
