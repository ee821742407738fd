"""Cancels that race the end of their statement, with asyncpg (tests/cancel.rs runs this).

asyncpg cancels asynchronously: when a command times out it sends a CancelRequest on a new
connection and runs the next command as soon as that request is written, without waiting
for the server to act on it. Through a proxy the extra hop lets the signal land after the
cancelled statement ended, on the next one. Each round here makes that race likely: the
statement ends about when its cancel goes out, and the next statement follows at once.

Usage: cancel_race.py DSN ROUNDS. Prints one JSON line of counts; exits 1 on a wrong outcome.
"""
import asyncio, json, random, sys, time
import asyncpg


async def race(conn, rounds):
    counts = {"rounds": rounds, "timed_out": 0, "finished": 0, "next_cancelled": 0, "copy_next_cancelled": 0}
    for i in range(rounds):
        sleep = random.uniform(0.0, 0.02)
        try:
            await asyncio.wait_for(conn.fetchval(f"SELECT pg_sleep({sleep:.4f})"), random.uniform(0.0, 0.02))
            counts["finished"] += 1
        except asyncio.TimeoutError:
            counts["timed_out"] += 1
        except asyncpg.QueryCanceledError:
            counts["timed_out"] += 1
        try:
            await conn.fetchval("SELECT pg_sleep(0.005)")
        except asyncpg.QueryCanceledError:
            counts["next_cancelled"] += 1
        if i % 4 == 0:
            # A COPY whose record generator raises: asyncpg cancels the COPY, then goes on.
            async def records():
                for n in range(random.randint(0, 50)):
                    yield (n,)
                raise RuntimeError("generator failed")
            try:
                await conn.copy_records_to_table("cancel_target", records=records())
            except (RuntimeError, asyncpg.QueryCanceledError):
                pass
            try:
                await conn.fetchval("SELECT pg_sleep(0.005)")
            except asyncpg.QueryCanceledError:
                counts["copy_next_cancelled"] += 1
    return counts


async def still_running_is_always_cancelled(conn, n):
    """A statement still running when its cancel arrives always ends with it."""
    slowest = 0.0
    for _ in range(n):
        start = time.monotonic()
        try:
            await asyncio.wait_for(conn.fetchval("SELECT pg_sleep(20)"), 0.05)
        except asyncio.TimeoutError:
            pass
        # asyncpg waits for the cancelled statement's end before this one runs.
        assert await conn.fetchval("SELECT 1") == 1
        slowest = max(slowest, time.monotonic() - start)
    return slowest


async def main(dsn, rounds):
    conn = await asyncpg.connect(dsn)
    await conn.execute("CREATE TEMP TABLE cancel_target(n int)")
    counts = await race(conn, rounds)
    counts["slowest_cancel_s"] = round(await still_running_is_always_cancelled(conn, 10), 3)
    await conn.close()
    print(json.dumps(counts))
    ok = counts["next_cancelled"] == 0 and counts["copy_next_cancelled"] == 0 and counts["slowest_cancel_s"] < 5
    sys.exit(0 if ok else 1)


asyncio.run(main(sys.argv[1], int(sys.argv[2])))
