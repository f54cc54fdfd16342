"""Seeded, deterministic shopper sessions (``shoplake generate``)."""

from shoplake.simulator.shop import ShopSimulator

__all__ = ["ShopSimulator"]
