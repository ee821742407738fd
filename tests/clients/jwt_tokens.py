"""Keys, a JWKS and tokens for the workload-identity tests (PyJWT + cryptography).

  jwt_tokens.py keys DIR KID...         RSA keys for each KID (kept if present); DIR/jwks.json
                                        then holds exactly those public keys
  jwt_tokens.py sign DIR KID CLAIMS     an RS256 token signed by KID; in CLAIMS (JSON) the keys
                                        exp_in, nbf_in, iat_in are seconds from now
  jwt_tokens.py hs256 DIR KID CLAIMS    HS256 with KID's public key PEM as the HMAC secret
                                        (the algorithm-confusion attack)
  jwt_tokens.py none CLAIMS             alg "none", no signature
"""
import base64, hashlib, hmac, json, os, sys, time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def key_path(d, kid):
    return os.path.join(d, f"{kid}.pem")


def private_key(d, kid):
    path = key_path(d, kid)
    if not os.path.exists(path):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        with open(path, "wb") as f:
            f.write(pem)
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def claims(text):
    c = json.loads(text)
    now = int(time.time())
    for rel, name in (("exp_in", "exp"), ("nbf_in", "nbf"), ("iat_in", "iat")):
        if rel in c:
            c[name] = now + c.pop(rel)
    return c


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main():
    cmd = sys.argv[1]
    if cmd == "keys":
        d, kids = sys.argv[2], sys.argv[3:]
        keys = []
        for kid in kids:
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private_key(d, kid).public_key()))
            jwk.update({"kid": kid, "use": "sig", "alg": "RS256"})
            keys.append(jwk)
        tmp = os.path.join(d, "jwks.json.tmp")
        with open(tmp, "w") as f:
            json.dump({"keys": keys}, f)
        os.replace(tmp, os.path.join(d, "jwks.json"))
    elif cmd == "sign":
        d, kid, c = sys.argv[2], sys.argv[3], claims(sys.argv[4])
        print(jwt.encode(c, private_key(d, kid), algorithm="RS256", headers={"kid": kid}))
    elif cmd == "hs256":
        d, kid, c = sys.argv[2], sys.argv[3], claims(sys.argv[4])
        secret = private_key(d, kid).public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
        body = b64(json.dumps(c).encode())
        sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
        print(f"{head}.{body}.{b64(sig)}")
    elif cmd == "none":
        c = claims(sys.argv[2])
        print(f"{b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{b64(json.dumps(c).encode())}.")
    else:
        sys.exit(f"unknown command {cmd}")


main()
