"""Realistic storefront traffic: prospects, customers, orders, refunds, declines, subscriptions.

Used by `segstream up --demo`, the benchmarks and the tests. Deterministic for a given seed, so a
benchmark's two contenders see the same stream.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

COUNTRIES = ("US", "US", "US", "CA", "GB", "DE", "AU", "FR")
STATES = {"US": ("CA", "NY", "TX", "WA", "FL"), "CA": ("ON", "BC", "QC"), "AU": ("NSW", "VIC")}
FIRST = (
    "Ada", "Grace", "Linus", "Ken", "Barbara", "Alan", "Edsger", "Margaret", "Donald", "Niklaus",
)
LAST = ("Lovelace", "Hopper", "Torvalds", "Thompson", "Liskov", "Turing", "Dijkstra", "Hamilton")
CATALOG = (
    ("p-espresso", "coffee", "14.50"), ("p-filter", "coffee", "12.00"),
    ("p-grinder", "equipment", "89.00"), ("p-kettle", "equipment", "59.90"),
    ("p-gold", "subscription", "120.00"), ("p-mug", "merch", "9.99"),
    ("p-beans-1kg", "coffee", "39.00"), ("p-scale", "equipment", "45.00"),
)
CAMPAIGNS = ("cmp-black-friday", "cmp-newsletter", "cmp-search", None)


@dataclass
class Person:
    customer_id: str
    country: str
    orders: list[tuple[str, str]] = field(default_factory=list)


class Storefront:
    """Generates one storefront's event stream: each call to `events` continues it."""

    def __init__(self, seed: int = 7, customers: int = 1000, start: datetime | None = None) -> None:
        self.rng = random.Random(seed)
        self.customer_pool = customers
        self.now = start or datetime.now(UTC)
        self.people: list[Person] = []
        self.sequence = 0

    def events(
        self, count: int, step: timedelta = timedelta(seconds=1)
    ) -> Iterator[dict[str, Any]]:
        for _ in range(count):
            self.now += step
            yield self._next()

    def _next(self) -> dict[str, Any]:
        roll = self.rng.random()
        if len(self.people) < self.customer_pool and (not self.people or roll < 0.15):
            return self._new_person()
        person = self.rng.choice(self.people)
        if roll < 0.72:
            return self._order(person)
        if roll < 0.80 and person.orders:
            return self._refund(person)
        if roll < 0.86:
            return self._decline(person)
        if roll < 0.90:
            return self._subscription(person)
        return self._update(person)

    def _envelope(self, kind: str, customer_id: str, data: dict[str, Any]) -> dict[str, Any]:
        self.sequence += 1
        return {
            "event_id": f"ev-{self.sequence:09d}", "type": kind,
            "occurred_at": self.now.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "customer_id": customer_id, "data": data,
        }

    def _address(self, country: str) -> dict[str, str]:
        city = self.rng.choice(("Springfield", "Riverton", "Lakeside"))
        address = {"country": country, "city": city}
        if country in STATES:
            address["state"] = self.rng.choice(STATES[country])
        return address

    def _new_person(self) -> dict[str, Any]:
        number = len(self.people) + 1
        person = Person(f"c-{number:06d}", self.rng.choice(COUNTRIES))
        self.people.append(person)
        first, last = self.rng.choice(FIRST), self.rng.choice(LAST)
        data = {
            "email": f"{first.lower()}.{last.lower()}.{number}@example.com",
            "first_name": first, "last_name": last,
            "billing": self._address(person.country), "campaign_id": self.rng.choice(CAMPAIGNS),
            "tags": self.rng.sample(("newsletter", "wholesale", "vip", "coffee-club"), k=1),
            "properties": {"signup_source": self.rng.choice(("web", "pos", "popup"))},
        }
        kind = "prospect.created" if self.rng.random() < 0.6 else "customer.created"
        return self._envelope(kind, person.customer_id, data)

    def _order(self, person: Person) -> dict[str, Any]:
        lines = self.rng.sample(CATALOG, k=self.rng.randint(1, 3))
        quantities = [self.rng.randint(1, 2) for _ in lines]
        products = [
            {"product_id": p, "category": c, "quantity": q, "price": price}
            for (p, c, price), q in zip(lines, quantities, strict=True)
        ]
        total = sum(float(price) * q for (_, _, price), q in zip(lines, quantities, strict=True))
        order_id = f"o-{self.sequence + 1:09d}"
        person.orders.append((order_id, f"{total:.2f}"))
        data = {
            "order_id": order_id, "total": f"{total:.2f}", "currency": "USD",
            "products": products, "billing": self._address(person.country),
            "campaign_id": self.rng.choice(CAMPAIGNS),
        }
        return self._envelope("order.placed", person.customer_id, data)

    def _refund(self, person: Person) -> dict[str, Any]:
        order_id, total = self.rng.choice(person.orders)
        kind = "order.refunded" if self.rng.random() < 0.85 else "order.chargeback"
        amount = f"{float(total) * self.rng.choice((0.25, 0.5, 1.0)):.2f}"
        return self._envelope(kind, person.customer_id, {"order_id": order_id, "amount": amount})

    def _decline(self, person: Person) -> dict[str, Any]:
        data = {"order_id": f"o-d{self.sequence + 1:09d}", "total": "49.00",
                "reason": self.rng.choice(("insufficient_funds", "expired_card"))}
        return self._envelope("order.declined", person.customer_id, data)

    def _subscription(self, person: Person) -> dict[str, Any]:
        kind = "subscription.started" if self.rng.random() < 0.7 else "subscription.cancelled"
        data = {"subscription_id": f"s-{person.customer_id}", "product_id": "p-gold"}
        return self._envelope(kind, person.customer_id, data)

    def _update(self, person: Person) -> dict[str, Any]:
        data = {"tags": self.rng.sample(("newsletter", "wholesale", "vip", "coffee-club"), k=2)}
        return self._envelope("customer.updated", person.customer_id, data)


DEMO_SEGMENTS: list[dict[str, Any]] = [
    {"id": "demo-vip-us", "name": "US customers who spent over $300", "groups": [{"conditions": [
        {"field": "billing_country", "op": "eq", "value": "US"},
        {"field": "total_spent", "op": "gt", "value": 300}]}]},
    {"id": "demo-coffee-or-gold", "name": "Bought espresso or the gold subscription", "groups": [
        {"conditions": [{"field": "products_purchased", "op": "includes_any",
                         "value": ["p-espresso"]}]},
        {"conditions": [{"field": "active_subscriptions", "op": "includes_any",
                         "value": ["p-gold"]}]}]},
    {"id": "demo-prospects", "name": "Prospects who have not ordered yet", "groups": [
        {"conditions": [{"field": "contact_type", "op": "eq", "value": "prospect"}]}]},
    {"id": "demo-refunders", "name": "Customers with a refund or chargeback", "groups": [
        {"conditions": [{"field": "refund_count", "op": "gte", "value": 1}]},
        {"conditions": [{"field": "chargeback_count", "op": "gte", "value": 1}]}]},
]
