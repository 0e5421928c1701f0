"""A JWKS server on 127.0.0.1 with real RSA, P-256 and Ed25519 keys, as
Cloudflare Access serves its team's certs, and tokens signed with those keys
(tests/e2e/test_jwks.py, and the console behind Access in test_console.py)."""

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

TEAM = "https://idemgate-e2e.cloudflareaccess.com"
AUD = "4714c1358e65fe4b408ad6d432a5f878f08194bdb4752441fd56faefa9b2b6f2"
REFETCH_INTERVAL = 30


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def uint(n: int, size: int | None = None) -> bytes:
    return n.to_bytes(size or (n.bit_length() + 7) // 8, "big")


class Key:
    """A private key, its public JWK and the JWS algorithm it signs."""

    def __init__(self, kind, kid):
        self.kid = kid
        if kind == "RS256":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pub = self.private.public_key().public_numbers()
            self.jwk = {"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                        "n": b64url(uint(pub.n)), "e": b64url(uint(pub.e))}
        elif kind == "ES256":
            self.private = ec.generate_private_key(ec.SECP256R1())
            pub = self.private.public_key().public_numbers()
            self.jwk = {"kty": "EC", "kid": kid, "crv": "P-256", "use": "sig", "alg": "ES256",
                        "x": b64url(uint(pub.x, 32)), "y": b64url(uint(pub.y, 32))}
        else:
            self.private = ed25519.Ed25519PrivateKey.generate()
            raw = self.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            self.jwk = {"kty": "OKP", "kid": kid, "crv": "Ed25519", "use": "sig", "x": b64url(raw)}
        self.alg = kind

    def pem(self) -> str:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def signature(self, data: bytes) -> bytes:
        if self.alg == "RS256":
            return self.private.sign(data, padding.PKCS1v15(), hashes.SHA256())
        if self.alg == "ES256":
            r, s = decode_dss_signature(self.private.sign(data, ec.ECDSA(hashes.SHA256())))
            return uint(r, 32) + uint(s, 32)
        return self.private.sign(data)

    def sign(self, claims, header=None, alg=None):
        header = header or {"alg": alg or self.alg, "kid": self.kid, "typ": "JWT"}
        signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
        return signing_input + "." + b64url(self.signature(signing_input.encode()))


class Jwks:
    """A JWKS at http://127.0.0.1:<port>/cdn-cgi/access/certs, as Cloudflare Access
    serves its team's certs: the keys listed (changeable), a Cache-Control, a
    switch to be down (`"drop"`: close the connection unanswered; `"503"`: answer
    503), and the times it was asked."""

    def __init__(self, keys):
        self.keys = list(keys)
        self.down = None
        self.fetches = []
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                jwks.fetches.append(time.time())
                if jwks.down == "drop":
                    # Unreachable: the connection closes with no answer.
                    self.close_connection = True
                    return
                if jwks.down or self.path != "/cdn-cgi/access/certs":
                    self.send_response(503 if jwks.down else 404)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                body = json.dumps({"keys": [k.jwk for k in jwks.keys]}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("cache-control", "public, max-age=3600")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/cdn-cgi/access/certs"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait_for_refetch(self):
        """Sleeps until the Worker may fetch again (its last fetch + the interval)."""
        time.sleep(max(0.0, self.fetches[-1] + REFETCH_INTERVAL + 1.5 - time.time()))

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
