"""Tokens signed with real RSA, P-256 and Ed25519 keys, verified against a JWKS
served from 127.0.0.1 (AUTH_JWKS_URL), with the settings of a Cloudflare Access
application (AUTH_JWT_ISSUER = the team's domain, AUTH_JWT_AUDIENCE = the AUD
tag) and Supabase-style claim pointers (AUTH_TENANT_CLAIM, AUTH_ROLES_CLAIM).

The server's isolate fetches the JWKS at most once per 30 s: the tests that need
a refetch (a rotated-in key, the JWKS down) wait for it, and run last."""

import json
import time

import pytest

from conftest import SECRET, Server, assert_problem, text_doc, unique
from jwks_server import AUD, REFETCH_INTERVAL, TEAM, Jwks, Key, b64url
from jwt import sign as sign_hs256

RSA = Key("RS256", "rsa-1")
EC = Key("ES256", "ec-1")
ED = Key("EdDSA", "ed-1")


@pytest.fixture(scope="module")
def jwks():
    j = Jwks([RSA, EC, ED])
    yield j
    j.stop()


@pytest.fixture(scope="module")
def srv(jwks):
    s = Server(AUTH_JWKS_URL=jwks.url, AUTH_JWT_ISSUER=TEAM, AUTH_JWT_AUDIENCE=AUD,
               AUTH_TENANT_CLAIM="/app_metadata/tenant_id", AUTH_ROLES_CLAIM="/app_metadata/roles").start()
    yield s
    s.cleanup()


def claims(sub=None, **extra):
    now = int(time.time())
    return {"sub": sub or unique("sub"), "iss": TEAM, "aud": [AUD], "iat": now, "exp": now + 600, **extra}


def upload(srv, token, key=None, access=None, doc=None):
    headers = {"content-type": "application/json", "idempotency-key": key or unique("k")}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    if access is not None:
        headers["cf-access-jwt-assertion"] = access
    return srv.request("POST", "/v1/documents", doc or text_doc(), headers)


def refused_then_runs(srv, bad, status=401, slug="unauthorized", access=None):
    """`bad` is refused with a problem and leaves its key unused: the same key
    with a good token then runs (201, not a replay)."""
    key = unique("k-refused")
    doc = text_doc()
    reply = upload(srv, bad, key, access=access, doc=doc)
    p = assert_problem(reply, status, slug)
    assert "idempotency_key" not in p, p
    ok = upload(srv, RSA.sign(claims()), key, doc=doc)
    assert ok.status == 201, ok
    assert ok.header("idempotent-replayed") is None, ok.headers
    return reply


def test_claim_pointers_or_a_jwks_url_that_do_not_parse_refuse_every_request_naming_them():
    s = Server(AUTH_TENANT_CLAIM="app_metadata.tenant_id", AUTH_ROLES_CLAIM="/roles/~2",
               AUTH_JWKS_URL="team.cloudflareaccess.com/cdn-cgi/access/certs").start(ready_status=500)
    try:
        for reply in (s.request("GET", "/healthz"), upload(s, RSA.sign(claims()))):
            p = assert_problem(reply, 500, "misconfigured")
            for var in ("AUTH_TENANT_CLAIM", "AUTH_ROLES_CLAIM", "AUTH_JWKS_URL"):
                assert var in p["detail"], p
    finally:
        s.cleanup()


def test_rs256_and_es256_tokens_are_accepted(srv, jwks):
    for key in (RSA, EC):
        token = key.sign(claims())
        r = upload(srv, token)
        assert r.status == 201, (key.alg, r)
        # A replay with the same token: answered from the verified-token memory.
        again = srv.request("GET", f"/v1/documents/{r.json()['id']}", None, {"authorization": f"Bearer {token}"})
        assert again.status == 200, again
    # One fetch served them all.
    assert len(jwks.fetches) == 1, jwks.fetches


def test_eddsa_tokens_are_accepted(srv):
    r = upload(srv, ED.sign(claims()))
    assert r.status == 201, r


def test_hs256_with_the_secret_still_works_beside_the_jwks(srv):
    r = upload(srv, sign_hs256(claims(), SECRET))
    assert r.status == 201, r


def test_algorithm_confusion_is_refused(srv):
    # HS256 "signed" with the public key, as PEM and as the JWK's JSON: never
    # verified with a JWKS key, and not the secret.
    for secret in (RSA.pem(), json.dumps(RSA.jwk), json.dumps(EC.jwk), EC.pem()):
        header = {"alg": "HS256", "kid": RSA.kid, "typ": "JWT"}
        p = refused_then_runs(srv, sign_hs256(claims(), secret, header)).json()
        assert "signature" in p["detail"], p
    # A key used for another algorithm than its own.
    refused_then_runs(srv, RSA.sign(claims(), header={"alg": "ES256", "kid": RSA.kid}))
    refused_then_runs(srv, EC.sign(claims(), header={"alg": "RS256", "kid": EC.kid}))
    refused_then_runs(srv, ED.sign(claims(), header={"alg": "ES256", "kid": ED.kid}))


def test_alg_none_and_crit_are_refused(srv):
    body = b64url(json.dumps(claims()).encode())
    for alg in ("none", "None", "NONE"):
        head = b64url(json.dumps({"alg": alg, "kid": RSA.kid}).encode())
        refused_then_runs(srv, f"{head}.{body}.")
    refused_then_runs(srv, RSA.sign(claims(), header={"alg": "RS256", "kid": RSA.kid, "crit": ["exp"], "exp": 1}))


def test_a_tampered_payload_is_refused(srv):
    for key in (RSA, EC, ED):
        head, _, sig = key.sign(claims(sub="user")).split(".")
        forged = b64url(json.dumps(claims(sub="admin")).encode())
        refused_then_runs(srv, f"{head}.{forged}.{sig}")


def test_wrong_issuer_audience_expired_and_future_tokens_are_refused(srv):
    now = int(time.time())
    for bad, word in (
        (claims(iss="https://other-team.cloudflareaccess.com"), "iss"),
        (claims(aud=["another-application-tag"]), "aud"),
        ({k: v for k, v in claims().items() if k != "aud"}, "aud"),
        (claims(exp=now - 5), "expired"),
        (claims(nbf=now + 600), "nbf"),
        ({k: v for k, v in claims().items() if k != "exp"}, "exp"),
    ):
        p = refused_then_runs(srv, EC.sign(bad)).json()
        assert word in p["detail"], (bad, p)


def test_tenant_and_roles_come_from_the_claim_pointers_and_the_tenant_falls_back_to_sub(srv):
    tenant = unique("acme")
    alice = claims(app_metadata={"tenant_id": tenant, "roles": ["admin"]})
    r = upload(srv, RSA.sign(alice))
    assert r.status == 201, r
    doc = f"/v1/documents/{r.json()['id']}"
    # Another user of the same tenant reads it; a user whose tenant falls back to
    # its sub (no app_metadata, or a top-level `tenant`, which is not where the
    # pointer looks) does not.
    colleague = claims(app_metadata={"tenant_id": tenant})
    assert srv.request("GET", doc, None, {"authorization": f"Bearer {EC.sign(colleague)}"}).status == 200
    for outsider in (claims(), claims(tenant=tenant), claims(app_metadata={"tenant_id": ""})):
        reply = srv.request("GET", doc, None, {"authorization": f"Bearer {EC.sign(outsider)}"})
        assert reply.status == 404, reply
    # The tenant is the sub: the caller owns what it writes under its own sub.
    solo = claims()
    r = upload(srv, RSA.sign(solo))
    own = srv.request("GET", f"/v1/documents/{r.json()['id']}", None,
                      {"authorization": f"Bearer {EC.sign(claims(app_metadata={'tenant_id': solo['sub']}))}"})
    assert own.status == 200, own
    # Roles: admin from app_metadata.roles (a string or an array); a top-level
    # `roles` is not read.
    for roles, status in ((["admin"], 200), ("admin", 200), (["viewer"], 403), (None, 403)):
        meta = {"tenant_id": tenant} if roles is None else {"tenant_id": tenant, "roles": roles}
        c = claims(app_metadata=meta, roles=["admin"])
        reply = srv.request("GET", "/v1/idempotency/stats", None, {"authorization": f"Bearer {RSA.sign(c)}"})
        assert reply.status == status, (roles, reply)
    # A roles claim that is not strings is refused, not guessed.
    refused_then_runs(srv, RSA.sign(claims(app_metadata={"roles": [1, 2]})))


def test_the_access_header_alone_is_accepted(srv):
    r = upload(srv, None, access=RSA.sign(claims()))
    assert r.status == 201, r
    r = upload(srv, None, access=EC.sign(claims()))
    assert r.status == 201, r


def test_v1_me_says_who_the_caller_is_as_the_pointers_read_the_token_and_which_header_carried_it(srv):
    tenant = unique("acme")
    token = RSA.sign(claims(sub="alice-me", app_metadata={"tenant_id": tenant, "roles": ["approver", "poster"]}))
    me = {"sub": "alice-me", "tenant": tenant, "roles": ["approver", "poster"]}
    r = srv.request("GET", "/v1/me", None, {"cf-access-jwt-assertion": token})
    assert r.status == 200, r
    assert r.json() == {**me, "via": "access"}
    r = srv.request("GET", "/v1/me", None, {"authorization": f"Bearer {token}"})
    assert r.status == 200, r
    assert r.json() == {**me, "via": "authorization"}
    # No pointer value: the tenant is sub, no role (a top-level `roles` is not where the pointer looks).
    r = srv.request("GET", "/v1/me", None, {"cf-access-jwt-assertion": EC.sign(claims(sub="bob-me", roles=["admin"]))})
    assert r.json() == {"sub": "bob-me", "tenant": "bob-me", "roles": [], "via": "access"}
    # Authorization decides: a bad one beside a good Access token is refused.
    r = srv.request("GET", "/v1/me", None, {"authorization": "Bearer x.y.z", "cf-access-jwt-assertion": token})
    assert_problem(r, 401, "unauthorized")
    assert_problem(srv.request("GET", "/v1/me", None, {}), 401, "unauthorized")


def test_authorization_decides_when_both_headers_are_sent(srv):
    good = EC.sign(claims())
    tampered = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    for bad in (tampered, sign_hs256(claims(), "not-the-secret")):
        refused_then_runs(srv, bad, access=good)
    # A malformed Authorization beside a good Access token: refused too.
    key = unique("k-basic")
    reply = srv.request("POST", "/v1/documents", text_doc(), {
        "content-type": "application/json", "idempotency-key": key,
        "authorization": "Basic dXNlcjpwYXNz", "cf-access-jwt-assertion": good})
    assert_problem(reply, 401, "unauthorized")


def test_a_key_rotated_into_the_jwks_is_accepted_after_a_refetch(srv, jwks):
    new = Key("RS256", "rsa-2")
    jwks.keys.append(new)
    jwks.wait_for_refetch()
    before = len(jwks.fetches)
    r = upload(srv, new.sign(claims()))
    assert r.status == 201, r
    assert len(jwks.fetches) == before + 1
    # A kid no key has: 401 (the JWKS was just fetched: not again so soon).
    p = assert_problem(upload(srv, Key("RS256", "rsa-nowhere").sign(claims())), 401, "unauthorized")
    assert "kid" in p["detail"], p
    assert len(jwks.fetches) == before + 1


def test_with_the_jwks_down_held_keys_still_work_and_an_unknown_key_is_503(srv, jwks):
    jwks.down = "drop"
    later = Key("ES256", "ec-2")
    jwks.keys.append(later)
    jwks.wait_for_refetch()
    before = len(jwks.fetches)
    key = unique("k-down")
    doc = text_doc()
    reply = upload(srv, later.sign(claims()), key, doc=doc)
    p = assert_problem(reply, 503, "auth-keys-unavailable")
    assert "idempotency_key" not in p
    assert 1 <= int(reply.header("retry-after")) <= REFETCH_INTERVAL, reply.headers
    assert len(jwks.fetches) == before + 1
    # Asked again at once: no new fetch, the same answer.
    again = upload(srv, later.sign(claims()), key, doc=doc)
    assert_problem(again, 503, "auth-keys-unavailable")
    assert again.header("retry-after") is not None
    assert len(jwks.fetches) == before + 1
    # Keys already held keep working (new tokens, not remembered ones).
    for held in (RSA, EC):
        r = upload(srv, held.sign(claims()))
        assert r.status == 201, r
    # The key was never used: with a good token it runs.
    ok = upload(srv, RSA.sign(claims()), key, doc=doc)
    assert ok.status == 201 and ok.header("idempotent-replayed") is None, ok
    # Answering 503 is down too.
    jwks.down = "503"
    jwks.wait_for_refetch()
    reply = upload(srv, later.sign(claims()))
    assert_problem(reply, 503, "auth-keys-unavailable")
    assert reply.header("retry-after") is not None
    assert len(jwks.fetches) == before + 2
    assert upload(srv, EC.sign(claims())).status == 201
    # Back up: the next allowed fetch finds the new key.
    jwks.down = None
    jwks.wait_for_refetch()
    r = upload(srv, later.sign(claims()))
    assert r.status == 201, r
