"""Cancel latency: from the CancelRequest leaving the client to the cancelled statement's error
arriving, p50/p99, for each HOST:PORT given (run by bench/pg.sh while pgbench loads leasegate,
so a cancel that queued behind other work on leasegate's event loop would show here).

Usage: cancel.py ROUNDS NAME=DSN [NAME=DSN ...]; rounds alternate between the targets.
"""
import asyncio, socket, struct, sys, time
import asyncpg


async def one(conn, host, port):
    task = asyncio.ensure_future(conn.fetchval("SELECT pg_sleep(10)"))
    # Running for a while first: this measures delivery, not the race with a statement's start.
    await asyncio.sleep(0.05)
    pid, secret = conn._protocol.backend_pid, conn._protocol.backend_secret
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(struct.pack("!iiii", 16, 80877102, pid, secret))
    await writer.drain()
    try:
        await task
        took = None  # ran its 10 s: the cancel was lost
    except asyncpg.QueryCanceledError:
        took = (time.perf_counter() - start) * 1000
    await reader.read()  # the cancel connection closes once the server took it
    writer.close()
    return took


async def main(rounds, targets):
    conns = {}
    for name, dsn in targets:
        host_port = dsn.split("@", 1)[1].split("/", 1)[0]
        host, port = host_port.rsplit(":", 1)
        conns[name] = (await asyncpg.connect(dsn), host, int(port))
    samples = {name: [] for name, _ in targets}
    for _ in range(rounds):
        for name, (conn, host, port) in conns.items():
            samples[name].append(await one(conn, host, port))
    lost = 0
    for name, taken in samples.items():
        ms = sorted(t for t in taken if t is not None)
        lost += len(taken) - len(ms)
        pick = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))] if ms else float("nan")
        print(f"cancel latency {name}: p50 {pick(0.5):.2f} ms, p99 {pick(0.99):.2f} ms over {len(ms)} cancels, {len(taken) - len(ms)} lost")
    sys.exit(1 if lost else 0)


asyncio.run(main(int(sys.argv[1]), [a.split("=", 1) for a in sys.argv[2:]]))
