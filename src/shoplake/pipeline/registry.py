"""The model registry: one declaration per table derived from silver.

A declaration says what the table is (its spec: key and partitions), which SQL model
computes it, which tables' consumed positions bound it, how a step writes it, on which
lane of a continuous run it steps and whether ``run --date`` rebuilds its days. The
model class it names plans the keys new input touches (minutes, days, customers,
products) and computes them; the runner, ``rebuild_days`` and the refresher read the
declarations instead of listing classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from enum import Enum
from typing import Generic, TypeVar

import pyarrow as pa

from shoplake.contract.tables import (
    CART_EVENTS,
    CATEGORY_PERFORMANCE,
    DAILY_CUSTOMER_ANALYTICS,
    DAILY_SALES_SUMMARY,
    DAILY_TRAFFIC_SOURCES,
    DATA_QUALITY_REPORT,
    DIM_CUSTOMERS,
    DIM_PRODUCTS,
    FCT_SALES_MINUTE,
    FUNNEL_DAILY,
    ORDER_ITEMS,
    ORDER_PAYMENTS,
    ORDERS,
    PAGE_VIEWS,
    PRODUCT_ANALYTICS,
    PRODUCT_UPDATES,
    USER_SESSIONS,
    TableSpec,
)
from shoplake.engines.base import Engine
from shoplake.pipeline.digests import Digest
from shoplake.pipeline.dims import DimCustomersModel, DimProductsModel, ensure_dim_date
from shoplake.pipeline.gold import (
    CustomerAnalyticsModel,
    DailyModel,
    DerivedModel,
    OrderPaymentsModel,
    ProductModel,
    SalesMinuteModel,
)
from shoplake.pipeline.positions import (
    Ranges,
    RecentCommits,
    SharedReads,
    range_ends,
    range_starts,
    to_app_ids,
)
from shoplake.pipeline.quality import DataQualityModel
from shoplake.pipeline.silver import ORDER_TABLES, SILVER_TABLES
from shoplake.settings import ReportingSettings
from shoplake.tables.base import Compare, Located, Predicate, TableStore


class Write(Enum):
    """How a step writes the rows it recomputed."""

    MERGE = "merge"  # on the table's key
    REPLACE_PARTITIONS = "replace partitions"  # every row of the touched partitions
    APPEND = "append"


class Lane(Enum):
    """When a continuous run steps a model."""

    FAST = "fast"  # every round: what gold.fct_sales_minute needs
    REFRESH = "refresh"  # in the refresh lane (pipeline/refresher.py), every ``gold_refresh_s``


M = TypeVar("M", bound=DerivedModel, covariant=True)
Columns = tuple[str, ...]


@dataclass(frozen=True)
class ModelDecl(Generic[M]):
    """One derived table: what computes it, from what, and how it is written."""

    spec: TableSpec
    sql: str  # models/<sql>.sql
    inputs: tuple[TableSpec, ...]  # their consumed positions bound this table's
    write: Write
    model: type[M]  # plans the touched keys and computes their rows
    lane: Lane = Lane.REFRESH
    rebuilds_days: bool = False
    # Input tables the model reads by day (or customer), with the columns the SQL uses.
    reads: tuple[tuple[TableSpec, Columns], ...] = ()
    delete_when: Predicate | None = None  # MERGE: source rows that delete their key instead
    # Reads the SQL computes the same rows from when compacted (see pipeline/digests.py).
    digests: tuple[tuple[TableSpec, Digest], ...] = ()

    def __post_init__(self) -> None:
        if self.rebuilds_days and self.model.rebuild is DerivedModel.rebuild:
            raise TypeError(f"{self.spec.qualified}: rebuilds days but its model cannot")
        read = dict(self.reads)
        for spec, digest in self.digests:
            if set(digest.columns) != set(read.get(spec, ())):
                raise TypeError(
                    f"{self.spec.qualified}: a digest of {spec.qualified} must hold the "
                    "columns the model reads of it"
                )

    @property
    def keys(self) -> Columns:
        """What a merge matches on: the table's key."""
        return self.spec.key

    @property
    def partition(self) -> str:
        """The column whose values REPLACE_PARTITIONS replaces."""
        (column,) = self.spec.partition_by
        return column

    def build(
        self,
        store: TableStore,
        reporting: ReportingSettings,
        *,
        engine: Engine,
        recent: RecentCommits | None = None,
        shared: SharedReads | None = None,
    ) -> M:
        return self.model(self, store, reporting, engine=engine, recent=recent, shared=shared)

    def commit(
        self,
        store: TableStore,
        rows: pa.Table,
        ranges: Ranges | None,
        partitions: Sequence[date] = (),
        located: Located | None = None,
    ) -> None:
        """Write ``rows`` the declared way, with the ends of ``ranges`` as the positions
        consumed in the same commit (None: a rebuild, which consumes nothing); ``located``:
        where merged rows lie (see TableStore.upsert)."""
        positions = expected = None
        if ranges is not None:  # fenced: another worker may have consumed them meanwhile
            positions = to_app_ids(range_ends(ranges))
            expected = to_app_ids(range_starts(ranges))
        if self.write is Write.MERGE:
            store.upsert(
                self.spec,
                rows,
                positions,
                delete_when=self.delete_when,
                located=located,
                expected=expected,
            )
        elif self.write is Write.REPLACE_PARTITIONS:
            store.replace(self.spec, rows, self.partition, partitions, positions, expected=expected)
        else:
            store.append(self.spec, rows, positions, expected=expected)


# reads: only the columns the SQL uses (a day of page views is most of what a step reads)
_SOLD = ("quantity", "line_amount", "currency", "event_ts")  # of an order item
_EVENT_TS = ("event_ts",)
_FUNNEL_PAGES = (("page_type", ("product", "checkout")),)
_ADDED = (("event_type", ("add_to_cart",)),)

ORDER_PAYMENTS_MODEL = ModelDecl(
    ORDER_PAYMENTS,
    "order_payments",
    ORDER_TABLES,
    Write.MERGE,
    OrderPaymentsModel,
    lane=Lane.FAST,
)
DIM_PRODUCTS_MODEL = ModelDecl(
    DIM_PRODUCTS, "dim_products", (PRODUCT_UPDATES,), Write.MERGE, DimProductsModel
)
DIM_CUSTOMERS_MODEL = ModelDecl(
    DIM_CUSTOMERS,
    "dim_customers",
    (PAGE_VIEWS, CART_EVENTS, ORDERS, USER_SESSIONS),
    Write.MERGE,
    DimCustomersModel,
)
SALES_MINUTE_MODEL = ModelDecl(
    FCT_SALES_MINUTE,
    "fct_sales_minute",
    (ORDER_PAYMENTS,),
    Write.MERGE,
    SalesMinuteModel,
    lane=Lane.FAST,
    rebuilds_days=True,
    delete_when=Compare("paid_orders", "=", 0),  # a minute left with no paid order
)


def _daily(
    spec: TableSpec,
    sql: str,
    reads: tuple[tuple[TableSpec, Columns], ...],
    *,
    uses_orders: bool = True,
    extra: tuple[TableSpec, ...] = (),
    model: type[DailyModel] = DailyModel,
    digests: tuple[tuple[TableSpec, Digest], ...] = (),
) -> ModelDecl[DailyModel]:
    """A table of rows per day, its touched days replaced; ``uses_orders``: it reads
    silver.order_payments too."""
    inputs = (*(s for s, _ in reads), *((ORDER_PAYMENTS,) if uses_orders else ()), *extra)
    return ModelDecl(
        spec,
        sql,
        inputs,
        Write.REPLACE_PARTITIONS,
        model,
        rebuilds_days=True,
        reads=reads,
        digests=digests,
    )


# Digests: these models read page views (most of a day's rows) only through COUNT DISTINCT,
# a session's first view or the kinds of its events, or count them (product_analytics),
# so each holds them compacted to that grain.
DAILY_SALES_MODEL = _daily(
    DAILY_SALES_SUMMARY,
    "daily_sales_summary",
    ((PAGE_VIEWS, ("user_id", "event_ts")),),
    digests=((PAGE_VIEWS, Digest(("user_id",), ("event_ts",))),),  # visitors
)
TRAFFIC_SOURCES_MODEL = _daily(
    DAILY_TRAFFIC_SOURCES,
    "daily_traffic_sources",
    ((PAGE_VIEWS, ("user_id", "session_id", "traffic_source", "event_ts", "event_id")),),
    digests=(  # sessions and visitors per source; a session's first view
        (PAGE_VIEWS, Digest(("user_id", "session_id", "traffic_source"), ("event_ts", "event_id"))),
    ),
)
FUNNEL_MODEL = _daily(
    FUNNEL_DAILY,
    "funnel_daily",
    (
        (PAGE_VIEWS, ("session_id", "page_type", "event_ts")),
        (CART_EVENTS, ("session_id", "event_type", "event_ts")),
        (ORDERS, ("session_id", "event_ts")),
    ),
    uses_orders=False,
    digests=(  # the steps a session reached: its rows of each kind the SQL tells apart
        (PAGE_VIEWS, Digest(("session_id", "page_type"), _EVENT_TS, only=_FUNNEL_PAGES)),
        (CART_EVENTS, Digest(("session_id", "event_type"), _EVENT_TS, only=_ADDED)),
        (ORDERS, Digest(("session_id",), _EVENT_TS)),
    ),
)
CATEGORY_MODEL = _daily(
    CATEGORY_PERFORMANCE,
    "category_performance",
    ((ORDER_ITEMS, ("event_id", "category", *_SOLD)),),
)
PRODUCT_MODEL = _daily(
    PRODUCT_ANALYTICS,
    "product_analytics",
    (
        (PAGE_VIEWS, ("product_id", "category", "event_ts")),
        (CART_EVENTS, ("product_id", "category", "event_type", "event_ts")),
        (ORDER_ITEMS, ("event_id", "product_id", "category", *_SOLD)),
    ),
    extra=(PRODUCT_UPDATES,),  # a product update touches the days from its own on
    model=ProductModel,
    digests=(  # counted: views and cart events per product, category (and kind) and day
        (PAGE_VIEWS, Digest(("product_id", "category"), _EVENT_TS, counted=True)),
        (CART_EVENTS, Digest(("product_id", "category", "event_type"), _EVENT_TS, counted=True)),
    ),
)
DAILY_MODELS: tuple[ModelDecl[DailyModel], ...] = (
    DAILY_SALES_MODEL,
    TRAFFIC_SOURCES_MODEL,
    FUNNEL_MODEL,
    CATEGORY_MODEL,
    PRODUCT_MODEL,
)
CUSTOMER_ANALYTICS_MODEL = ModelDecl(
    DAILY_CUSTOMER_ANALYTICS,
    "daily_customer_analytics",
    (PAGE_VIEWS, CART_EVENTS, ORDERS, ORDER_PAYMENTS),
    Write.MERGE,  # the touched customers' days; a rebuild replaces whole days
    CustomerAnalyticsModel,
    rebuilds_days=True,
    reads=(  # activity: the days a customer was seen on
        (PAGE_VIEWS, ("user_id", "session_id", "event_ts")),
        (CART_EVENTS, ("user_id", "session_id", "event_type", "event_ts")),
        (ORDERS, ("user_id", "session_id", "event_ts")),
    ),
    digests=(  # counted: a customer's sessions a day, with their page views and cart adds
        (PAGE_VIEWS, Digest(("user_id", "session_id"), _EVENT_TS, counted=True)),
        (
            CART_EVENTS,
            Digest(("user_id", "session_id", "event_type"), _EVENT_TS, counted=True, only=_ADDED),
        ),
        (ORDERS, Digest(("user_id", "session_id"), _EVENT_TS)),
    ),
)
DATA_QUALITY_MODEL = ModelDecl(
    DATA_QUALITY_REPORT,
    "data_quality_report",
    SILVER_TABLES,
    Write.REPLACE_PARTITIONS,
    DataQualityModel,
    rebuilds_days=True,
)

# Every derived table, in dependency order: order_payments feeds the gold models that
# read it. A refresh pass steps them in this order, so the silver dimensions, which no
# model reads, come last: gold does not wait on them (docs/benchmarks.md, fourteenth
# session).
MODELS: tuple[ModelDecl[DerivedModel], ...] = (
    ORDER_PAYMENTS_MODEL,
    SALES_MINUTE_MODEL,
    *DAILY_MODELS,
    CUSTOMER_ANALYTICS_MODEL,
    DATA_QUALITY_MODEL,
    DIM_PRODUCTS_MODEL,
    DIM_CUSTOMERS_MODEL,
)


def build_models(
    store: TableStore,
    reporting: ReportingSettings,
    engine: Engine,
    recent: RecentCommits | None = None,
    lanes: tuple[Lane, ...] = tuple(Lane),
    shared: SharedReads | None = None,
) -> list[DerivedModel]:
    """The runnable model of every declared table on ``lanes``, in MODELS' order.
    ``recent``: the commits of the stages before, as the FAST lane takes them from
    memory; ``shared``: the reads the models of a pass share (see ``step_models``)."""
    ensure_dim_date(store)  # the calendar the models join: fixed, not a model
    return [
        d.build(store, reporting, engine=engine, recent=recent, shared=shared)
        for d in MODELS
        if d.lane in lanes
    ]
