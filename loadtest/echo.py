"""The bare HTTP floor: the worker's server stack (aiohttp on uvloop) doing no work.

``python -m loadtest.echo --port 8080`` answers ``POST /v1/decisions`` with the request
body and ``GET /healthz`` with ``{"status":"ok"}``.
"""

from __future__ import annotations

import argparse
import asyncio

import uvloop
from aiohttp import web


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.Response(body=body, content_type="application/json")


async def health(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/v1/decisions", echo)
    app.router.add_get("/healthz", health)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(make_app(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
