"""Bearer tokens against a real wrangler dev: one spelling per token, a
size bound, and AUTH_JWT_ISSUER / AUTH_JWT_AUDIENCE when set."""

import time

import pytest

from conftest import SECRET, Server, assert_problem, text_doc, unique
from jwt import sign
from jwt import token as make_token

ISSUER = "https://issuer.example"
AUDIENCE = "idemgate-e2e"


def claims(**extra):
    return {"sub": unique("auth"), "exp": int(time.time()) + 3600, **extra}


def upload(server, token, key=None):
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json",
               "idempotency-key": key or unique("k")}
    return server.request("POST", "/v1/documents", text_doc(), headers)


@pytest.fixture(scope="module")
def checked():
    """A server that checks the issuer and the audience."""
    s = Server(AUTH_JWT_ISSUER=ISSUER, AUTH_JWT_AUDIENCE=AUDIENCE).start()
    yield s
    s.cleanup()


def test_padded_signature_is_rejected_and_stores_nothing(server):
    token = sign(claims(), SECRET)
    key = unique("k-pad")
    for forged in (token + "=", token + "==", token.replace(".", "=.", 1)):
        assert_problem(upload(server, forged, key), 401, "unauthorized")
    # Nothing was stored under the key: the canonical token's first use runs.
    r = upload(server, token, key)
    assert r.status == 201, r
    assert r.header("idempotent-replayed") is None


def test_oversized_token_is_401(server):
    token = sign(claims(pad="x" * 6500), SECRET)  # ~8.8 KB: over 8 KiB, under header limits
    assert_problem(upload(server, token), 401, "unauthorized")


def test_issuer_and_audience_are_not_checked_when_unset(server):
    r = upload(server, sign(claims(iss="https://anyone.example", aud="someone-else"), SECRET))
    assert r.status == 201, r


def test_issuer_and_audience_are_enforced_when_set(checked):
    ok = upload(checked, sign(claims(iss=ISSUER, aud=AUDIENCE), SECRET))
    assert ok.status == 201, ok
    listed = upload(checked, sign(claims(iss=ISSUER, aud=["other", AUDIENCE]), SECRET))
    assert listed.status == 201, listed
    for bad in (
        claims(aud=AUDIENCE),                           # no iss
        claims(iss="https://evil.example", aud=AUDIENCE),
        claims(iss=ISSUER),                             # no aud
        claims(iss=ISSUER, aud="other"),
        claims(iss=ISSUER, aud=["other"]),
    ):
        p = assert_problem(upload(checked, sign(bad, SECRET)), 401, "unauthorized")
        assert "iss" in p["detail"] or "aud" in p["detail"], p


def test_padded_signature_is_rejected_with_claim_checks_too(checked):
    token = sign(claims(iss=ISSUER, aud=AUDIENCE), SECRET)
    assert_problem(upload(checked, token + "="), 401, "unauthorized")


def test_a_token_used_again_and_again_is_still_refused_once_it_expires_or_before_nbf(server):
    """The Worker remembers tokens it has verified (auth::VerifiedTokens): a
    remembered token must still expire on time, and one not valid yet must not
    pass on its second use either."""
    soon = int(time.time()) + 3
    token = sign(claims(exp=soon), SECRET)
    for _ in range(3):
        r = upload(server, token)
        assert r.status == 201, r
    time.sleep(max(0.0, soon - time.time()) + 1.2)
    for _ in range(2):
        assert_problem(upload(server, token), 401, "unauthorized")
    later = sign(claims(nbf=int(time.time()) + 600), SECRET)
    for _ in range(2):
        assert_problem(upload(server, later), 401, "unauthorized")


def test_a_token_signed_with_another_secret_is_refused_after_a_valid_one_of_the_same_caller(server):
    good = claims()
    assert upload(server, sign(good, SECRET)).status == 201
    assert_problem(upload(server, sign(good, "not-the-secret")), 401, "unauthorized")


def test_v1_me_answers_the_callers_sub_tenant_and_roles_and_writes_nothing(server):
    sub, tenant = unique("me"), unique("tenant")
    r = server.request("GET", "/v1/me", None, {"authorization": f"Bearer {make_token(SECRET, sub, tenant, ['admin', 'approver'])}"})
    assert r.status == 200, r
    assert r.header("content-type").startswith("application/json")
    assert r.json() == {"sub": sub, "tenant": tenant, "roles": ["admin", "approver"], "via": "authorization"}
    r = server.request("GET", "/v1/me", None, {"authorization": f"Bearer {make_token(SECRET, sub)}"})
    assert r.json() == {"sub": sub, "tenant": sub, "roles": [], "via": "authorization"}
    assert_problem(server.request("GET", "/v1/me", None, {}), 401, "unauthorized")
    assert_problem(server.request("GET", "/v1/me", None, {"authorization": "Bearer not.a.token"}), 401, "unauthorized")
    r = server.request("POST", "/v1/me", {}, {"authorization": f"Bearer {make_token(SECRET, sub)}"})
    assert r.status == 405 and r.header("allow") == "GET, HEAD, OPTIONS", r
