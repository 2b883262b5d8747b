"""segstream's pure domain: events, customer features, segment definitions, evaluation.

No I/O and no clocks: the runtime (`streams/`) passes bytes in and `now_ms` (epoch
milliseconds) along. Modules, in the order data flows through them:

- `events`      msgspec Structs for the input events; `decode_event` -> `InvalidEvent(code)`
- `money`       exact integer money (1/10000 units)
- `features`    `FeatureState`, `apply_event`, the msgpack codec, `feature_view`
  (built on `state`, `reducers` and `timeline`)
- `catalog`     the condition catalog: fields, types, operators (`FIELD_CATALOG`)
- `definitions` `parse_definition`, `check_graph` (built on `values`)
- `evaluator`   `SegmentIndex` (built on `compiler`), `recompute`
- `errors`      `InvalidEvent`, `DefinitionError`

Semantics decided here (the contract leaves them open):

- Profile events merge: an absent key keeps the old value, `null` clears it.
  `tags` is replaced as a whole; `properties` is merge-patched (`null` removes a
  property, `properties: null` removes all). Addresses merge per part.
- billing_*/shipping_* come from the profile when it has an address; otherwise
  from the latest order (by occurred_at) that carried one.
- campaign_id/affiliate_id: profiles and orders both set them; the event with
  the latest occurred_at wins (it does not matter which topic arrives first).
- created_at: the earliest prospect/customer created event, else the earliest event.
- A repeated order_id is ignored entirely; declined orders are counted per event.
  Refund amounts are not capped by the order total; total_spent can go negative.
- Subscriptions: each subscription's latest event (by occurred_at) decides
  whether its product is in active_subscriptions or cancelled_subscriptions.
- `within_days` windows count events with occurred_at >= now - N days (boundary
  included, future times included); refunds count at their own time.
- Missing values: a condition on a missing value is false except `not_exists`,
  `neq`, `not_in` and `includes_none`; an empty set counts as missing.
- `before` is strict, `after` is inclusive (they partition time); a date alone
  means midnight UTC. `between` is inclusive at both ends.
- Text fields (emails, names, places) compare casefolded; ids, tags, product and
  category ids and custom properties compare exactly.
- average_order_value is rounded half-to-even to 1/10000.
- A customer's first applied event reports every field as changed (`EVERY_FIELD`).
"""
