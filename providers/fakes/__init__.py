"""Local fakes of the provider APIs, for tests and the demo.

Each fake (``MailchimpFake``, ``ActiveCampaignFake``, ``SendlaneFake``) is an ASGI
app serving the real API's endpoints, auth and error shapes under its
``api_prefix``, with in-memory ``state`` to seed and inspect, ``stats`` and
``calls`` to see what happened, and ``faults`` (``Faults``: ``rate_429``,
``rate_5xx``, ``latency``, ``latency_jitter``, ``drop_rate``, ``drop_after_apply``)
to make it misbehave. Provider-specific knobs are constructor arguments:
Mailchimp ``max_connections`` and ``throttle_style``; ActiveCampaign
``rate_limit``, ``bulk_rate_limit``, ``import_delay``, ``injected_retry_after``,
``fractional_retry_after``; Sendlane ``rate_limit``, ``write_delay``,
``list_name_key``, ``html_401``.

``fakes.server.serve_fake(app)`` runs one on a free loopback port in-process;
``python -m providers.fakes.server <provider>`` runs one standalone.
"""
