#!/usr/bin/env python3
"""TCP proxy 127.0.0.1:15433 -> 127.0.0.1:5432 for one node: kill it to cut that node from PostgreSQL (connections
reset, new ones refused) without touching the shared server."""
import asyncio
async def pipe(r, w):
    try:
        while (d := await r.read(65536)): w.write(d); await w.drain()
    except Exception: pass
    finally: w.close()
async def handle(cr, cw):
    try: sr, sw = await asyncio.open_connection("127.0.0.1", 5432)
    except Exception: cw.close(); return
    await asyncio.gather(pipe(cr, sw), pipe(sr, cw))
async def main():
    s = await asyncio.start_server(handle, "127.0.0.1", 15433)
    async with s: await s.serve_forever()
asyncio.run(main())
