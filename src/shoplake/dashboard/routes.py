"""The dashboard's page and its JSON API, mounted on the gateway app."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BeforeValidator

from shoplake.dashboard.data import DashboardData, Panel

_STATIC = resources.files("shoplake.dashboard") / "static"


def _iso_day(value: Any) -> Any:
    # pydantic would also read a number as a Unix time (?day=0 is 1970-01-01): a day is
    # YYYY-MM-DD, as documented, or a 422.
    if isinstance(value, str) and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError("a day is YYYY-MM-DD")
    return value


Day = Annotated[date | None, BeforeValidator(_iso_day)]


def _plotly_bundle() -> Path:
    """plotly.js as shipped in the plotly wheel: served locally, never from a CDN."""
    return Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))


def dashboard_router(
    data: DashboardData, runtime: Callable[[], dict[str, Any]] | None = None
) -> APIRouter:
    """``runtime``: the running pipeline's own figures (throughput, latency), if any."""
    router = APIRouter()

    def day_or_today(day: date | None) -> date:
        return day or data.today()

    async def answer(fn: Callable[..., Any], *args: Any) -> Any:
        return await run_in_threadpool(fn, *args)  # Delta and DuckDB reads block

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((_STATIC / "index.html").read_text())

    @router.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        if name == "plotly.min.js":
            return FileResponse(_plotly_bundle(), media_type="text/javascript")
        path = _STATIC / name
        if name not in ("app.js", "style.css") or not path.is_file():
            raise HTTPException(404)
        kind = "text/javascript" if name.endswith(".js") else "text/css"
        return FileResponse(str(path), media_type=kind)

    @router.get("/api/kpis", tags=["dashboard"])
    async def kpis(day: Day = None) -> Panel:
        """Revenue, paid orders, conversion, AOV and visitors of the day (default: today
        in the reporting time zone) and of the day before."""
        return await answer(data.kpis, day_or_today(day))  # type: ignore[no-any-return]

    @router.get("/api/gmv", tags=["dashboard"])
    async def gmv(minutes: int = Query(60, ge=1, le=24 * 60)) -> Panel:
        """GMV and paid orders per minute over the last ``minutes``."""
        return await answer(data.gmv_per_minute, minutes)  # type: ignore[no-any-return]

    @router.get("/api/funnel", tags=["dashboard"])
    async def funnel(day: Day = None) -> Panel:
        return await answer(data.funnel, day_or_today(day))  # type: ignore[no-any-return]

    @router.get("/api/products", tags=["dashboard"])
    async def products(day: Day = None, limit: int = Query(10, ge=1, le=100)) -> Panel:
        """Top products by recommendation score."""
        return await answer(data.top_products, day_or_today(day), limit)  # type: ignore[no-any-return]

    @router.get("/api/categories", tags=["dashboard"])
    async def categories(day: Day = None) -> Panel:
        return await answer(data.categories, day_or_today(day))  # type: ignore[no-any-return]

    @router.get("/api/segments", tags=["dashboard"])
    async def segments(day: Day = None) -> Panel:
        return await answer(data.segments, day_or_today(day))  # type: ignore[no-any-return]

    @router.get("/api/quality", tags=["dashboard"])
    async def quality(day: Day = None) -> Panel:
        """Quarantine by reason, duplicates and late events of the day."""
        return await answer(data.quality, day_or_today(day))  # type: ignore[no-any-return]

    @router.get("/api/health", tags=["dashboard"])
    async def health() -> dict[str, Any]:
        """Seconds since each layer's last commit, transport lag, and the running
        pipeline's throughput and end-to-end latency when it runs in this process."""
        freshness = await answer(data.freshness)
        lag = await answer(data.lag)
        return {"freshness_s": freshness, "lag": lag, "runtime": runtime() if runtime else None}

    return router
