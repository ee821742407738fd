"""Load on leasegate issuers from simulated sidecars: each of SIDECARS tasks asks an issuer for a
lease (POST /v1/issuer/grant, a fresh user name and password), then releases it, in a loop for
SECONDS; the issuers are those of URLS, the sidecars spread over them. Prints leases per second
and the grant latency (p50, p99) of the successful grants, and how many calls failed.

  issuer_load.py URLS CA TOKEN_FILE SIDECARS SECONDS     (URLS: comma-separated https://host:port)
"""
import asyncio, json, secrets, ssl, string, sys, time
from urllib.parse import urlparse


async def call(url, ctx, token, path, body):
    u = urlparse(url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port, ssl=ctx, server_hostname=u.hostname)
    data = json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n")
    writer.write(head.encode() + data)
    await writer.drain()
    raw = await reader.read()
    writer.close()
    status = int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/") else 0
    return status


async def sidecar(i, urls, ctx, token, until, grants, failures):
    url = urls[i % len(urls)]
    alphabet = string.ascii_letters + string.digits
    while time.monotonic() < until:
        user = "lgb_sim_" + "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(12))
        password = "".join(secrets.choice(alphabet) for _ in range(32))
        started = time.monotonic()
        try:
            status = await call(url, ctx, token, "/v1/issuer/grant", {"role": "reader", "client": "bench", "user": user, "password": password})
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
            status = 0
        if status != 200:
            failures.append(status)
            await asyncio.sleep(0.05)
            continue
        grants.append(time.monotonic() - started)
        try:
            if await call(url, ctx, token, "/v1/issuer/release", {"user": user}) != 200:
                failures.append("release")
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
            failures.append("release")


async def main():
    urls, ca, token_file, n, seconds = sys.argv[1].split(","), sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
    token = open(token_file).read().strip()
    ctx = ssl.create_default_context(cafile=ca)
    grants, failures = [], []
    started = time.monotonic()
    until = started + seconds
    await asyncio.gather(*(sidecar(i, urls, ctx, token, until, grants, failures) for i in range(n)))
    took = time.monotonic() - started
    grants.sort()
    pick = lambda q: grants[min(len(grants) - 1, int(q * len(grants)))] * 1000 if grants else 0
    failed = [str(f) for f in failures]
    print(f"{len(urls)} issuer(s), {n} sidecars, {took:.1f} s: {len(grants) / took:.0f} leases/s, "
          f"grant p50 {pick(0.5):.1f} ms, p99 {pick(0.99):.1f} ms, {len(failures)} failed calls "
          f"({', '.join(f'{s}: {failed.count(s)}' for s in sorted(set(failed)))})")


asyncio.run(main())
