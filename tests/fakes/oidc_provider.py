"""A small, real OpenID Connect provider on 127.0.0.1, so the sign-in flow is tested over HTTP
end to end without the internet: discovery, /authorize, /token and /jwks, in a thread like
flowpilot/echo_server.py.

The test decides who "signs in" at /authorize (`next_identity`) and can make the provider
misbehave: refuse (`deny`), issue ID tokens for another audience, with a bad signature, already
expired or with another nonce, and rotate its signing key."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from flowpilot.local_http import LocalHTTPServer


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pkce_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        url = urlsplit(self.path)
        provider = self.server.owner
        provider.requests.append(url.path)
        if url.path == "/.well-known/openid-configuration":
            self._json(200, provider.discovery_document())
        elif url.path == "/jwks":
            self._json(200, provider.jwks())
        elif url.path == "/authorize":
            status, answer = provider.authorize(dict(parse_qsl(url.query)))
            if status == 302:
                self.send_response(302)
                self.send_header("Location", answer)
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self._json(status, answer)
        else:
            self._json(404, {"error": "not_found"})

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        provider = self.server.owner
        provider.requests.append(url.path)
        length = int(self.headers.get("Content-Length") or 0)
        form = dict(parse_qsl(self.rfile.read(length).decode()))
        if url.path == "/token":
            self._json(*provider.token(form, self.headers.get("Authorization", "")))
        else:
            self._json(404, {"error": "not_found"})

    def _json(self, status: int, body: Any) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format, *args):  # quiet
        return


class FakeOidcProvider(LocalHTTPServer):
    handler = _Handler

    def __init__(
        self,
        *,
        client_id: str = "flowpilot",
        client_secret: str = "s3cret+/=",
        redirect_uris: tuple[str, ...] = (),
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uris = set(redirect_uris)
        # Who signs in at the next /authorize.
        self.next_identity: dict[str, Any] = {
            "sub": "ada-1",
            "email": "ada@example.test",
            "email_verified": True,
            "name": "Ada Lovelace",
        }
        # Misbehaviour switches.
        self.deny = False  # /authorize answers error=access_denied
        self.audience: str | None = None  # the ID token's aud (None: the client id)
        self.nonce: str | None = None  # the ID token's nonce (None: the one asked for)
        self.expired = False  # the ID token expired ten minutes ago
        self.bad_signature = False  # signed by a key that is not published, under its kid
        self.auth_methods = ["client_secret_basic", "client_secret_post"]
        # What happened, for assertions.
        self.requests: list[str] = []  # paths, in order
        self.client_auth: list[str] = []  # "basic" or "post", per token request
        self.issued_tokens: list[str] = []  # access, refresh and ID tokens handed out

        self._codes: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._key = _new_key()
        self.kid = secrets.token_hex(8)
        super().__init__(host, port)

    def rotate_key(self) -> str:
        """A new signing key under a new kid; the old one is no longer published."""
        self._key, self.kid = _new_key(), secrets.token_hex(8)
        return self.kid

    # -- endpoints --------------------------------------------------------------------------

    def discovery_document(self) -> dict[str, Any]:
        return {
            "issuer": self.url,
            "authorization_endpoint": f"{self.url}/authorize",
            "token_endpoint": f"{self.url}/token",
            "jwks_uri": f"{self.url}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": self.auth_methods,
        }

    def jwks(self) -> dict[str, Any]:
        jwk = RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        return {"keys": [{**jwk, "kid": self.kid, "alg": "RS256", "use": "sig"}]}

    def authorize(self, query: dict[str, str]) -> tuple[int, Any]:
        """(302, Location) back to the client, or (400, error) when the client or its
        redirect_uri is not the registered one (never redirect to an unknown place)."""
        if query.get("client_id") != self.client_id:
            return 400, {"error": "invalid_client"}
        redirect_uri = query.get("redirect_uri", "")
        if redirect_uri not in self.redirect_uris:
            return 400, {"error": "invalid_request", "error_description": "unknown redirect_uri"}

        def back(**params: str) -> tuple[int, str]:
            return 302, f"{redirect_uri}?{urlencode({**params, 'state': query.get('state', '')})}"

        if query.get("response_type") != "code":
            return back(error="unsupported_response_type")
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            return back(error="invalid_request", error_description="PKCE S256 is required")
        if "openid" not in query.get("scope", "").split():
            return back(error="invalid_scope")
        if self.deny:
            return back(error="access_denied", error_description="The user said no")
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._codes[code] = {
                "redirect_uri": redirect_uri,
                "challenge": query["code_challenge"],
                "nonce": query.get("nonce", ""),
                "scope": query["scope"],
                "identity": dict(self.next_identity),
            }
        return back(code=code)

    def token(self, form: dict[str, str], authorization: str) -> tuple[int, dict[str, Any]]:
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        method = "post"
        if authorization.startswith("Basic "):
            decoded = base64.b64decode(authorization[6:]).decode()
            client_id, _, client_secret = (unquote_plus(p) for p in decoded.partition(":"))
            method = "basic"
        self.client_auth.append(method)
        if method not in {m.removeprefix("client_secret_") for m in self.auth_methods}:
            return 401, {"error": "invalid_client", "error_description": "auth method"}
        if (client_id, client_secret) != (self.client_id, self.client_secret):
            return 401, {"error": "invalid_client"}
        if form.get("grant_type") != "authorization_code":
            return 400, {"error": "unsupported_grant_type"}
        with self._lock:
            grant = self._codes.pop(form.get("code", ""), None)
        if grant is None:
            return 400, {"error": "invalid_grant", "error_description": "unknown or used code"}
        if form.get("redirect_uri") != grant["redirect_uri"]:
            return 400, {"error": "invalid_grant", "error_description": "redirect_uri mismatch"}
        if pkce_challenge(form.get("code_verifier", "")) != grant["challenge"]:
            return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
        access, refresh = f"at-{secrets.token_urlsafe(24)}", f"rt-{secrets.token_urlsafe(24)}"
        id_token = self._id_token(grant)
        self.issued_tokens += [access, refresh, id_token]
        return 200, {
            "access_token": access,
            "token_type": "Bearer",
            "refresh_token": refresh,
            "expires_in": 3600,
            "scope": grant["scope"],
            "id_token": id_token,
        }

    def _id_token(self, grant: dict[str, Any]) -> str:
        now = int(time.time())
        claims = {
            "iss": self.url,
            "aud": self.audience or self.client_id,
            "iat": now,
            "exp": now + 300,
            "nonce": grant["nonce"] if self.nonce is None else self.nonce,
            **grant["identity"],
        }
        if self.expired:
            claims["iat"], claims["exp"] = now - 1200, now - 600
        key = _new_key() if self.bad_signature else self._key
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": self.kid})
