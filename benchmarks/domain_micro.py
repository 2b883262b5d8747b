"""Micro benchmark of the domain hot path: decode, apply, evaluate (µs per event).

    python benchmarks/domain_micro.py [--events 60000] [--customers 3000] [--segments 20 50]

A seeded, storefront-like stream (orders, profile updates, declines, refunds,
subscriptions; some duplicates, some out-of-order times) is encoded to JSON
first. Each phase is then timed over the whole stream with GC as in production:

- decode:   `decode_event(raw)`
- apply:    `apply_event(state, ev, now)` on fresh states
- evaluate: `SegmentIndex.evaluate` with the changed set apply returned
- schedule: `SegmentIndex.next_change` (the customer's next timer) after an event that changed a
  time-relevant field; the runtime computes it at most once per customer and commit group, so
  this is its upper bound
- codec:    `encode_state` + `decode_state` of the customer's final state, per event

Apply and evaluate run together, as in the processor, each call timed on its own
(timer overhead subtracted); every figure is the best of three runs, since the
machine may be shared. The reference line gives the speed of a plain Python loop
step, to compare machines.
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from collections.abc import Callable
from typing import Any

import msgspec

from segments.definitions import SegmentDefinition, parse_definition
from segments.evaluator import SegmentIndex
from segments.events import Event, decode_event
from segments.features import FeatureState, apply_event, decode_state, encode_state, new_state

DAY = 86_400_000
NOW = 1_795_867_200_000
PRODUCTS = [f"p-{i}" for i in range(40)]
CATEGORIES = ["shoes", "hats", "bags", "socks", "coats"]
COUNTRIES = ["US", "DE", "FR", "GB", "CA"]
DOMAINS = ["example.com", "mail.test", "shop.io"]


def iso(ms: int) -> str:
    seconds, millis = divmod(ms, 1000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{millis:03d}Z"


def make_stream(rng: random.Random, events: int, customers: int) -> list[bytes]:
    """JSON events over the 30 days before NOW in arrival order: mostly in time order,
    5% up to three days late, about 2% replays of an earlier event."""
    stream: list[bytes] = []
    for i in range(events):
        if stream and rng.random() < 0.02:
            stream.append(rng.choice(stream))
            continue
        customer = f"c-{rng.randrange(customers)}"
        at = NOW - 30 * DAY + 30 * DAY * i // events - rng.randrange(60_000)
        if rng.random() < 0.05:
            at -= rng.randrange(3 * DAY)
        kind, data = _body(rng, customer)
        stream.append(msgspec.json.encode({
            "event_id": f"evt-{i:09d}", "type": kind, "occurred_at": iso(at),
            "customer_id": customer, "data": data}))
    return stream


def _body(rng: random.Random, customer: str) -> tuple[str, dict[str, Any]]:
    roll = rng.random()
    if roll < 0.45:
        return "order.placed", _order(rng)
    if roll < 0.65:
        return rng.choice(["customer.created", "customer.updated", "prospect.created"]), {
            "email": f"{customer}@{rng.choice(DOMAINS)}", "first_name": "Ann",
            "billing": {"country": rng.choice(COUNTRIES), "city": "Springfield"},
            "tags": rng.sample(["vip", "newsletter", "beta", "wholesale"], 2),
            "properties": {"plan": rng.choice(["free", "pro", "gold"]),
                           "seats": rng.randrange(10)}}
    if roll < 0.75:
        return "order.declined", {"order_id": f"o-{rng.randrange(10**9)}", "total": "19.99"}
    if roll < 0.85:
        kind = rng.choice(["order.refunded", "order.chargeback"])
        return kind, {"order_id": f"o-{rng.randrange(10**9)}", "amount": "5.50"}
    kind = rng.choice(["subscription.started", "subscription.cancelled"])
    return kind, {"subscription_id": f"s-{rng.randrange(3)}", "product_id": rng.choice(PRODUCTS)}


def _order(rng: random.Random) -> dict[str, Any]:
    lines = [{"product_id": rng.choice(PRODUCTS), "category": rng.choice(CATEGORIES),
              "quantity": 1, "price": f"{rng.randrange(5, 300)}.{rng.randrange(100):02d}"}
             for _ in range(rng.randrange(1, 4))]
    return {"order_id": f"o-{rng.randrange(10**9)}", "total": f"{rng.randrange(5, 900)}.99",
            "currency": "USD", "products": lines,
            "billing": {"country": rng.choice(COUNTRIES), "state": "CA", "city": "LA",
                        "postal_code": "90001"}}


CONDITIONS: list[Callable[[random.Random], dict[str, Any]]] = [
    lambda r: {"field": "total_spent", "op": "gte", "value": r.choice([100, 500, 2000])},
    lambda r: {"field": "total_spent", "op": "gte", "value": 200, "within_days": 90},
    lambda r: {"field": "order_count", "op": "gte", "value": r.randrange(1, 6)},
    lambda r: {"field": "order_count", "op": "between", "value": [1, 3], "within_days": 30},
    lambda r: {"field": "last_order_at", "op": "not_within_last",
               "value": {"days": r.choice([30, 60, 90])}},
    lambda r: {"field": "last_order_at", "op": "within_last", "value": {"days": 14}},
    lambda r: {"field": "products_purchased", "op": "includes_any",
               "value": r.sample(PRODUCTS, 3)},
    lambda r: {"field": "categories_purchased", "op": "includes_none", "value": ["coats"]},
    lambda r: {"field": "average_order_value", "op": "gt", "value": "150.00"},
    lambda r: {"field": "email_domain", "op": "eq", "value": r.choice(DOMAINS)},
    lambda r: {"field": "billing_country", "op": "in", "value": r.sample(COUNTRIES, 2)},
    lambda r: {"field": "contact_type", "op": "eq", "value": "customer"},
    lambda r: {"field": "tags", "op": "includes_any", "value": ["vip"]},
    lambda r: {"field": "decline_count", "op": "gte", "value": 2},
    lambda r: {"field": "refunded_total", "op": "gt", "value": 0},
    lambda r: {"field": "active_subscriptions", "op": "includes_any",
               "value": r.sample(PRODUCTS, 2)},
    lambda r: {"field": "properties.plan", "op": "eq", "value": r.choice(["pro", "gold"])},
    lambda r: {"field": "email", "op": "ends_with", "value": ".io"},
]


def make_segments(rng: random.Random, count: int) -> list[SegmentDefinition]:
    """`count` definitions of 1-2 groups of 1-3 conditions; every 10th builds on another."""
    defs: list[SegmentDefinition] = []
    for i in range(count):
        groups = [{"conditions": [rng.choice(CONDITIONS)(rng) for _ in range(rng.randint(1, 3))]}
                  for _ in range(rng.randint(1, 2))]
        if defs and i % 10 == 9:
            groups[0]["conditions"].append({"field": "segments", "op": "includes_any",
                                            "value": [rng.choice(defs).id]})
        body = {"name": f"segment {i}", "groups": groups}
        defs.append(parse_definition(body, segment_id=f"s{i}", version=1, slot=i))
    return defs


def timed(run: Callable[[], None], repeat: int = 3) -> float:
    """Best wall time of `repeat` runs (the machine may be shared)."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def timer_overhead() -> float:
    clock = time.perf_counter
    start = clock()
    for _ in range(100_000):
        clock()
    return (clock() - start) / 100_000


def pipeline(events: list[Event], index: SegmentIndex) -> tuple[float, float, float]:
    """(apply, evaluate, schedule) seconds over fresh states, each call timed on its own."""
    clock, overhead = time.perf_counter, timer_overhead()
    states: dict[str, FeatureState] = {}
    applying = evaluating = scheduling = 0.0
    time_fields, horizon = index.time_fields, index.horizon_ms
    for ev in events:
        state = states.get(ev.customer_id)
        if state is None:
            state = states[ev.customer_id] = new_state()
        t0 = clock()
        changed = apply_event(state, ev, NOW, horizon)
        t1 = clock()
        if changed is not None:
            state.segments_mask = index.evaluate(state, NOW, changed)
        t2 = clock()
        applying += t1 - t0 - overhead
        evaluating += t2 - t1 - overhead
        if changed is not None and not changed.isdisjoint(time_fields):
            t3 = clock()
            index.next_change(state, NOW)
            scheduling += clock() - t3 - overhead
    return applying, evaluating, scheduling


def best_pipeline(events: list[Event], index: SegmentIndex) -> tuple[float, float, float]:
    pipeline(events, index)  # warm-up: compiles the function of each changed set
    runs = [pipeline(events, index) for _ in range(3)]
    return min(r[0] for r in runs), min(r[1] for r in runs), min(r[2] for r in runs)


def codec(events: list[Event]) -> float:
    states: dict[str, FeatureState] = {}
    for ev in events:
        apply_event(states.setdefault(ev.customer_id, new_state()), ev, NOW)
    blobs = [states[ev.customer_id] for ev in events]

    def run() -> None:
        for state in blobs:
            decode_state(encode_state(state))

    return timed(run, 1)


def _loop_ns() -> float:
    start = time.perf_counter()
    total = 0
    for i in range(1_000_000):
        total += i
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--customers", type=int, default=3_000)
    parser.add_argument("--segments", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    raw = make_stream(rng, args.events, args.customers)
    per_event = 1e6 / len(raw)

    def decode_all() -> None:
        decoded = [decode_event(r) for r in raw]
        del decoded

    decode = timed(decode_all)
    events = [decode_event(r) for r in raw]
    print(f"{len(raw)} events, {args.customers} customers; "
          f"reference: {_loop_ns():.0f} ns per pure-Python loop step (machine speed)")
    print(f"  decode                   {decode * per_event:6.2f} µs/event")
    print(f"  state encode+decode      {codec(events) * per_event:6.2f} µs/event (the runtime "
          "encodes once per dirty customer per batch, decodes on cache misses)")
    for count in args.segments:
        index = SegmentIndex(make_segments(random.Random(args.seed + count), count))
        apply, evaluate, schedule = best_pipeline(events, index)
        total = decode + apply + evaluate
        print(f"  {count:>4} segments: apply {apply * per_event:5.2f}  evaluate "
              f"{evaluate * per_event:5.2f}  decode+apply+evaluate {total * per_event:5.2f} "
              f"µs/event ({len(raw) / total:,.0f} events/s); schedule "
              f"{schedule * per_event:5.2f} µs/event at most")


if __name__ == "__main__":
    main()
