"""The bare-websockets baseline of W1 (bench/realtime_throughput.py): the ceiling for Python.

    python -m bench.realtime_websockets_baseline PORT REDIS_URL CHANNEL

A plain `websockets` server, no framework: every connection joins one set; each frame a
publisher PUBLISHes on CHANNEL (already serialised) goes to all of them with
`websockets.broadcast()`. Clients' `{"type": "ping"}` gets `{"type":"pong"}`, as Clarion answers.
"""

import asyncio
import sys

import redis.asyncio as aioredis
import websockets
from websockets.asyncio.server import serve

CONNECTIONS: set = set()


async def handler(ws) -> None:
    CONNECTIONS.add(ws)
    try:
        async for _frame in ws:
            await ws.send('{"type":"pong"}')
    except websockets.ConnectionClosed:
        pass
    finally:
        CONNECTIONS.discard(ws)


async def relay(redis_url: str, channel: str, ready: asyncio.Event) -> None:
    client = aioredis.Redis.from_url(redis_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel)
    ready.set()
    async for message in pubsub.listen():
        if message["type"] == "message":
            websockets.broadcast(CONNECTIONS, message["data"].decode())


async def main(port: int, redis_url: str, channel: str) -> None:
    ready = asyncio.Event()
    relaying = asyncio.create_task(relay(redis_url, channel, ready))
    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=None, ping_interval=None):
        await asyncio.wait_for(ready.wait(), 30)
        print("listening", flush=True)
        await relaying


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
