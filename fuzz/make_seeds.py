#!/usr/bin/env python3
"""Writes the fuzz targets' seed inputs into seeds/<target>/: real-shaped packets, tokens,
certificates and configs. Run from fuzz/: python3 make_seeds.py"""
import base64, json, os, shutil, struct, subprocess, tempfile

def w(target, name, data):
    os.makedirs(f"seeds/{target}", exist_ok=True)
    with open(f"seeds/{target}/{name}", "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())

def startup(params, proto=196608):
    body = struct.pack(">I", proto) + b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params) + b"\0"
    return struct.pack(">I", len(body) + 4) + body

def msg(t, body):
    return t + struct.pack(">I", len(body) + 4) + body

def frame(seq, payload):
    return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload

def b64(d):
    return base64.urlsafe_b64encode(d).rstrip(b"=").decode()

# Postgres startup packets.
w("pg_startup", "startup", startup([("user", "ci/app"), ("database", "appdb"), ("application_name", "psql")]))
w("pg_startup", "ssl_then_startup", struct.pack(">II", 8, 80877103) + startup([("user", "ci")]))
w("pg_startup", "cancel", struct.pack(">IIII", 16, 80877102, 1234, 5678))
w("pg_startup", "gssenc", struct.pack(">II", 8, 80877104))
w("pg_startup", "protocol_3_2_with_options", startup([("user", "ci"), ("_pq_.x", "1")], 196610))

# Typed messages.
cf = b"n,,n=,r=rOprNGfwEbeRWgbNEkqO"
w("pg_messages", "sasl_initial", msg(b"p", b"SCRAM-SHA-256\0" + struct.pack(">i", len(cf)) + cf))
w("pg_messages", "password", msg(b"p", b"secret\0"))
w("pg_messages", "query_sync_terminate", msg(b"Q", b"SELECT 1\0") + msg(b"S", b"") + msg(b"X", b""))
w("pg_messages", "auth_sasl", msg(b"R", struct.pack(">I", 10) + b"SCRAM-SHA-256\0SCRAM-SHA-256-PLUS\0\0"))
w("pg_messages", "error", msg(b"E", b"SFATAL\0C28P01\0Mpassword authentication failed\0\0"))
w("pg_messages", "backend_key", msg(b"K", struct.pack(">II", 42, 99)))

# SCRAM: client-first, 0xff, client-final.
w("scram", "plain", b"n,,n=,r=rOprNGfwEbeRWgbNEkqO\xffc=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
w("scram", "plus", b"p=tls-server-end-point,,n=,r=abc\xffc=cD10bHMtc2VydmVyLWVuZC1wb2ludCwsBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=,r=abcdef,p=AAAA")
w("scram", "extensions", b"y,a=ci,n=ci,r=nonce,ext=1\xffc=eSws,r=nonce,x=1,p=")

# MySQL HandshakeResponse41 payloads (and the small packets parsed beside them).
LONG_PASSWORD, CONNECT_WITH_DB, PROTOCOL_41, SSL, SECURE = 0x1, 0x8, 0x200, 0x800, 0x8000
PLUGIN_AUTH, ATTRS, LENENC, DEPRECATE_EOF = 0x80000, 0x100000, 0x200000, 0x1000000

def resp(caps, user=b"ci/app", auth=b"\x11" * 20, db=b"appdb", plugin=b"mysql_native_password"):
    p = struct.pack("<IIB", caps, 16 * 1024 * 1024, 45) + b"\0" * 23 + user + b"\0" + bytes([len(auth)]) + auth
    if caps & CONNECT_WITH_DB:
        p += db + b"\0"
    if caps & PLUGIN_AUTH:
        p += plugin + b"\0"
    if caps & ATTRS:
        kv = b"".join(bytes([len(k)]) + k + bytes([len(v)]) + v for k, v in [(b"_client_name", b"libmariadb"), (b"program_name", b"mariadb")])
        p += bytes([len(kv)]) + kv
    return p

base = PROTOCOL_41 | SECURE | PLUGIN_AUTH | LONG_PASSWORD
w("mysql_handshake_response", "native_with_db_attrs", resp(base | CONNECT_WITH_DB | ATTRS | LENENC | DEPRECATE_EOF))
w("mysql_handshake_response", "caching_sha2", resp(base | LENENC, plugin=b"caching_sha2_password", auth=b"\x22" * 32))
w("mysql_handshake_response", "ssl_request", struct.pack("<IIB", base | SSL, 16 * 1024 * 1024, 45) + b"\0" * 23)
w("mysql_handshake_response", "no_plugin", resp(PROTOCOL_41 | SECURE))
w("mysql_handshake_response", "err_packet", b"\xff\x15\x04#28000Access denied")
w("mysql_handshake_response", "ok_packet", b"\x00\x00\x00\x02\x00\x00\x00")
w("mysql_handshake_response", "kill", b"KILL QUERY 42")

# Client command packets through the gate (first byte: chunk size).
w("mysql_gate", "query_kill_quit", b"\x07" + frame(0, b"\x03SELECT 1") + frame(0, b"\x03KILL QUERY 7") + frame(0, b"\x01"))
w("mysql_gate", "change_user", b"\x02" + frame(0, b"\x11ci\0\x14" + b"\x01" * 20 + b"appdb\0"))
w("mysql_gate", "com_multi", b"\x04" + frame(0, b"\xfe" + frame(0, b"\x11x\0")))
w("mysql_gate", "query_attributes", b"\x09" + frame(0, b"\x03\x00\x01KILL CONNECTION 3"))
w("mysql_gate", "split_large", b"\x3f" + frame(0, b"\x03SELECT '" + b"a" * 200 + b"'"))

# Idle trackers: alternating client and server chunks (first byte: chunk size).
row_desc = msg(b"T", struct.pack(">H", 1) + b"?column?\0" + struct.pack(">IHIhih", 0, 0, 23, 4, -1, 0))
answer = row_desc + msg(b"D", struct.pack(">HI", 1, 1) + b"1") + msg(b"C", b"SELECT 1\0") + msg(b"Z", b"I")
w("idle_trackers", "pg_query", b"\x05" + msg(b"Q", b"SELECT 1\0") + answer)
ext = msg(b"P", b"\0SELECT $1\0\0\0") + msg(b"B", b"\0\0\0\0\0\0\0\0") + msg(b"E", b"\0\0\0\0\0") + msg(b"S", b"")
w("idle_trackers", "pg_extended_in_transaction", b"\x0b" + ext + msg(b"1", b"") + msg(b"2", b"") + msg(b"C", b"BEGIN\0") + msg(b"Z", b"T"))
col = b"\x03def\0\0\0\x011\0\x0c\x3f\0\x01\0\0\0\x08\x81\0\0\0\0"
w("idle_trackers", "mysql_result_set", b"\x04" + frame(0, b"\x03SELECT 1") + frame(1, b"\x01") + frame(2, col) + frame(3, b"\x011") + frame(4, b"\xfe\0\0\x02\0\0\0"))

# Tokens and key sets.
claims = b64(json.dumps({"iss": "https://issuer.example", "sub": "system:serviceaccount:billing:api", "aud": ["leasegate"], "exp": 2000000000, "iat": 1700000000}).encode())
w("jwt", "rs256_token", b64(json.dumps({"alg": "RS256", "kid": "k1", "typ": "JWT"}).encode()) + "." + claims + "." + b64(b"sig" * 40))
w("jwt", "es256_token", b64(json.dumps({"alg": "ES256", "kid": "e"}).encode()) + "." + claims + "." + b64(b"s" * 64))
w("jwt", "none_alg", b64(b'{"alg":"none"}') + "." + claims + ".")
w("jwt", "jwks", json.dumps({"keys": [
    {"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig", "n": b64(b"\xc3" * 256), "e": "AQAB"},
    {"kty": "EC", "crv": "P-256", "kid": "e", "x": b64(b"\x01" * 32), "y": b64(b"\x02" * 32)},
    {"kty": "OKP", "crv": "Ed25519", "x": b64(b"\x03" * 32)}]}))

# Certificates: a v3 CA and the X.509 v1 leaf `openssl x509 -req` signs with it.
d = tempfile.mkdtemp()
try:
    for step in ["openssl genrsa -out ca.key 2048", "openssl req -new -x509 -days 3650 -key ca.key -out ca.pem -subj /CN=seed-ca",
                 "openssl req -newkey rsa:2048 -nodes -keyout leaf.key -out leaf.csr -subj /CN=localhost",
                 "openssl x509 -req -in leaf.csr -days 3650 -CA ca.pem -CAkey ca.key -set_serial 1 -out leaf.pem"]:
        subprocess.run(step.split(), cwd=d, check=True, capture_output=True)
    for name, pem in [("x509_v1_rsa", "leaf.pem"), ("x509_v3_ca", "ca.pem")]:
        w("certificate_der", name, subprocess.run(["openssl", "x509", "-in", pem, "-outform", "DER"], cwd=d, check=True, capture_output=True).stdout)
finally:
    shutil.rmtree(d)

# Configs: the shipped example.
with open("../config/leasegate.example.toml") as f:
    w("config", "example", f.read())
w("config", "minimal", '[[database]]\nname = "main"\nkind = "postgres"\nlisten = "127.0.0.1:6432"\nupstream = "127.0.0.1:5432"\nadmin_user = "a"\nadmin_password_env = "PW"\nname_prefix = "lg_"\n')
