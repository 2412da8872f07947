"""Keys and tokens for tests/tests/jwt.rs, made with PyJWT and cryptography: an
implementation independent of weft's verifier, so a signing and a verifying bug cannot
cancel out.

Usage: mint.py DIR ISSUER AUDIENCE

Writes DIR/jwks.json (the RSA key rsa-1 and the EC P-256 key ec-1, public parts) and
DIR/inline.json (ec-1 alone, for an inline `jwks`), and prints one JSON object of named
tokens on stdout.
"""
import json
import sys
import time

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm


def public_jwk(key, algorithm, kid, alg):
    jwk = json.loads(algorithm.to_jwk(key.public_key()))
    jwk.update({"kid": kid, "alg": alg, "use": "sig"})
    return jwk


def main():
    out_dir, issuer, audience = sys.argv[1], sys.argv[2], sys.argv[3]
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    # Never published: its signatures must not verify, whatever kid they claim.
    rogue = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    rsa_jwk = public_jwk(rsa_key, RSAAlgorithm, "rsa-1", "RS256")
    ec_jwk = public_jwk(ec_key, ECAlgorithm, "ec-1", "ES256")
    with open(f"{out_dir}/jwks.json", "w") as f:
        json.dump({"keys": [rsa_jwk, ec_jwk]}, f)
    with open(f"{out_dir}/inline.json", "w") as f:
        json.dump({"keys": [ec_jwk]}, f)

    now = int(time.time())

    def claims(**extra):
        base = {"iss": issuer, "sub": "alice", "aud": audience, "iat": now, "exp": now + 3600}
        base.update(extra)
        return base

    def rs256(payload, key=rsa_key, kid="rsa-1"):
        return jwt.encode(payload, key, algorithm="RS256", headers={"kid": kid})

    def es256(payload):
        return jwt.encode(payload, ec_key, algorithm="ES256", headers={"kid": "ec-1"})

    tokens = {
        "valid": rs256(claims()),
        "valid_es256": es256(claims(sub="bob")),
        "beta": rs256(claims(sub="carol", group="beta")),
        "expired": rs256(claims(iat=now - 7200, exp=now - 3600)),
        "wrong_issuer": rs256(claims(iss="https://stranger.lab.example")),
        "wrong_audience": rs256(claims(aud="somebody-else")),
        "bad_signature": rs256(claims(), key=rogue),
        "unfetchable": rs256(claims(iss="https://gone.lab.example")),
    }
    json.dump(tokens, sys.stdout)


if __name__ == "__main__":
    main()
