"""A baseline for idle connections: a plain `websockets` server that answers pings, nothing else.

    python -m bench.plain_websockets_server PORT

No Django, no authentication, no database: the floor a Python asyncio WebSocket server sets.
Protocol-level keepalive as websockets ships it (a ping every 20 s); no compression, as the
benchmark client offers none. Run by bench/realtime_memory.py.
"""

import asyncio
import sys

from websockets.asyncio.server import serve

PONG = '{"type":"pong"}'


async def answer_pings(ws) -> None:
    async for frame in ws:
        if "ping" in frame:
            await ws.send(PONG)


async def main(port: int) -> None:
    async with serve(answer_pings, "127.0.0.1", port, compression=None, max_queue=16):
        print("ready", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    from bench.realtime_common import raise_open_files_limit

    raise_open_files_limit()
    asyncio.run(main(int(sys.argv[1])))
