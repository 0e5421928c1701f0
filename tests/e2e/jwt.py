"""HS256 JWTs for tests and for `./x token` (stdlib only)."""

import base64
import hashlib
import hmac
import json
import sys
import time


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(claims: dict, secret: str, header: dict | None = None) -> str:
    header = header or {"alg": "HS256", "typ": "JWT"}
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(sig)


def token(secret: str, sub: str, tenant: str | None = None, roles=(), ttl: int = 3600) -> str:
    claims = {"sub": sub, "roles": list(roles), "exp": int(time.time()) + ttl}
    if tenant:
        claims["tenant"] = tenant
    return sign(claims, secret)


if __name__ == "__main__":
    secret, sub, tenant, roles = sys.argv[1:5]
    print(token(secret, sub, tenant or None, [r for r in roles.split(",") if r], ttl=86400))
