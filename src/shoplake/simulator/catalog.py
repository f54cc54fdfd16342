"""The simulated shop: products, markets and their currencies."""

from __future__ import annotations

import random
from dataclasses import dataclass

CATEGORIES: dict[str, tuple[str, ...]] = {
    "electronics": ("Headphones", "Smartwatch", "USB-C Hub", "Keyboard", "Webcam", "Speaker"),
    "books": ("Cookbook", "Novel", "Atlas", "Biography", "Poetry", "Comic"),
    "clothing": ("T-Shirt", "Jeans", "Jacket", "Sneakers", "Scarf", "Hoodie"),
    "home": ("Lamp", "Mug Set", "Blanket", "Plant Pot", "Frying Pan", "Towels"),
    "sports": ("Yoga Mat", "Dumbbells", "Water Bottle", "Running Belt", "Tennis Balls"),
    "beauty": ("Face Cream", "Shampoo", "Perfume", "Lip Balm", "Sunscreen"),
    "toys": ("Puzzle", "Building Blocks", "Board Game", "Plush Bear", "Kite"),
}

# (country, currency, UTC offset in the timestamps its clients send, weight)
MARKETS: tuple[tuple[str, str, str, int], ...] = (
    ("US", "USD", "-05:00", 40),
    ("CA", "CAD", "-05:00", 8),
    ("GB", "GBP", "+00:00", 14),
    ("DE", "EUR", "+01:00", 14),
    ("FR", "EUR", "+01:00", 10),
    ("NL", "EUR", "+01:00", 5),
    ("JP", "JPY", "+09:00", 9),
)

# USD per unit — only to price the catalog in each market; gold uses the settings' rates.
USD_PER_UNIT = {"USD": 1.0, "EUR": 1.08, "GBP": 1.27, "CAD": 0.73, "JPY": 0.0067}
MINOR_UNITS = {"JPY": 0}

DEVICES = (("desktop", 45), ("mobile", 45), ("tablet", 10))
TRAFFIC_SOURCES = (("direct", 30), ("organic", 30), ("paid", 20), ("email", 10), ("social", 10))
REFERRERS = {
    "direct": None,
    "organic": "https://search.example/",
    "paid": "https://ads.example/click",
    "email": "https://mail.example/newsletter",
    "social": "https://social.example/post",
}
PAYMENT_METHODS = (("card", 60), ("paypal", 20), ("apple_pay", 10), ("bank_transfer", 10))


@dataclass
class Product:
    product_id: str
    name: str
    category: str
    price_usd_cents: int
    inventory: int

    def price_cents(self, currency: str) -> int:
        """Price in the currency's minor units (JPY has none), rounded as a shop would."""
        amount = self.price_usd_cents / 100 / USD_PER_UNIT[currency]
        if MINOR_UNITS.get(currency) == 0:
            return round(amount) * 100
        return round(amount * 100)


def build_catalog(rng: random.Random, size: int = 120) -> list[Product]:
    products = []
    categories = sorted(CATEGORIES)
    for i in range(size):
        category = categories[i % len(categories)]
        base = rng.choice(CATEGORIES[category])
        products.append(
            Product(
                product_id=f"P{i + 1:05d}",
                name=f"{base} {rng.choice(('Classic', 'Pro', 'Lite', 'Max', 'Mini', 'Eco'))}",
                category=category,
                price_usd_cents=rng.choice((499, 999, 1499, 1999, 2999, 4999, 7999, 12999, 24999)),
                inventory=rng.randint(20, 500),
            )
        )
    return products


def weighted(rng: random.Random, options: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([o for o, _ in options], weights=[w for _, w in options])[0]
