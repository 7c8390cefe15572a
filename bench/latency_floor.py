"""The start-latency floor of this machine: the smallest durable LISTEN/NOTIFY queue.

What any PostgreSQL queue with a separate worker process pays between "enqueue" and "start",
with nothing of jobrunner: the producer inserts a row and notifies in one autocommit
statement (one durable commit), a consumer process woken by the NOTIFY takes the row with
``UPDATE ... FOR UPDATE SKIP LOCKED ... RETURNING`` (a second durable commit) and stamps the
time. The ``latency`` workload of ``bench/run.py`` runs it on the same database with the same
pacing, so its figures are a ratio within one run.

    python bench/latency_floor.py DSN N          # producer: prints {"samples": [...]}
    python bench/latency_floor.py DSN N consume  # the consumer (started by the producer)
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import psycopg

TABLE = "latency_floor_queue"
CHANNEL = "latency_floor"


async def consume(dsn: str, n: int) -> None:
    async with (
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as listen,
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as claim,
    ):
        await listen.execute(f"LISTEN {CHANNEL}")
        print("ready", flush=True)
        lags: list[float] = []
        async for _ in listen.notifies():
            while True:
                cur = await claim.execute(
                    f"UPDATE {TABLE} SET state = 1, token = token + 1 WHERE id = ("
                    f" SELECT id FROM {TABLE} WHERE state = 0 ORDER BY id LIMIT 1"
                    "  FOR UPDATE SKIP LOCKED) RETURNING t"
                )
                row = await cur.fetchone()
                if row is None:
                    break
                lags.append(time.monotonic() - row[0])
            if len(lags) >= n:
                print(json.dumps(lags), flush=True)
                # Leaving the notifies() generator would wait for the next notification.
                os._exit(0)


async def produce(dsn: str, n: int, warm: int = 5) -> list[float]:
    """Run the consumer and ``warm + n`` paced jobs (one every 20 ms); the ``n`` lags after
    the warm-up, in seconds."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        await conn.execute(
            f"CREATE TABLE {TABLE} (id bigserial PRIMARY KEY, state int NOT NULL DEFAULT 0,"
            " token bigint NOT NULL DEFAULT 0, t float8 NOT NULL, data jsonb)"
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, dsn, str(warm + n), "consume", stdout=asyncio.subprocess.PIPE
        )
        assert proc.stdout is not None
        try:
            if (await proc.stdout.readline()).strip() != b"ready":
                raise RuntimeError("the latency-floor consumer did not start")
            await asyncio.sleep(1.0)  # idle and listening, as the worker in the workload
            t_next = time.monotonic()
            for i in range(warm + n):
                t_next += 0.020
                await conn.execute(
                    f"WITH j AS (INSERT INTO {TABLE} (t, data) VALUES (%s, %s)) "
                    "SELECT pg_notify(%s, '')",
                    (time.monotonic(), json.dumps({"i": i}), CHANNEL),
                )
                await asyncio.sleep(max(0.0, t_next - time.monotonic()))
            async with asyncio.timeout(60):
                lags: list[float] = json.loads(await proc.stdout.readline())
                await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await conn.execute(f"DROP TABLE {TABLE}")
    return lags[warm:]


def main() -> None:
    dsn, n = sys.argv[1], int(sys.argv[2])
    if sys.argv[3:] == ["consume"]:
        asyncio.run(consume(dsn, n))
    else:
        print(json.dumps({"samples": asyncio.run(produce(dsn, n))}))


if __name__ == "__main__":
    main()
