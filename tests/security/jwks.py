"""A test identity provider: an EC key pair, its JWKS file, and tokens signed with it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

ISSUER = "https://idp.example.test/"
AUDIENCE = "syncbus-admin"


class TestIdp:
    """Signs tokens with ``kid``; ``jwks_file`` is what syncbus is given."""

    __test__ = False

    def __init__(self, folder: Path, kid: str = "idp-1") -> None:
        self.kid = kid
        self.key = ec.generate_private_key(ec.SECP256R1())
        public = json.loads(ECAlgorithm.to_jwk(self.key.public_key()))
        public.update(kid=kid, use="sig", alg="ES256")
        self.jwks_file = folder / "jwks.json"
        self.jwks_file.write_text(json.dumps({"keys": [public]}), encoding="utf-8")

    def env(self) -> dict[str, str]:
        return {"SYNCBUS_JWT_ISSUER": ISSUER, "SYNCBUS_JWT_AUDIENCE": AUDIENCE, "SYNCBUS_JWT_JWKS": str(self.jwks_file)}

    def token(self, sub: str = "carol", scope: str = "dlq:read", *, expires_in: float = 300, **claims: Any) -> str:
        now = int(time.time())
        body: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "scope": scope, "iat": now,
                                "exp": now + int(expires_in)}
        body.update(claims)
        return jwt.encode({k: v for k, v in body.items() if v is not None}, self.key, algorithm="ES256",
                          headers={"kid": self.kid})
