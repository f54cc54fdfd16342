"""The ceiling bench_gateway.py compares shoplake's gateway with: a trivial endpoint that
answers 202 without reading the body, on the same server stack (FastAPI on uvicorn, with
shoplake's server settings). Run: python bench/gateway_ceiling.py PORT"""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI, Response

from shoplake.gateway.app import server_config

app = FastAPI()


@app.post("/v1/events")
async def accept() -> Response:
    return Response(status_code=202)


if __name__ == "__main__":
    uvicorn.Server(server_config(app, "127.0.0.1", int(sys.argv[1]))).run()
