"""The HTTP API of contract section 6: segments, fields, customers, event ingestion and
auto-responder profiles.

`create_app(deps)` builds the FastAPI app; `streams.app` serves it beside the processor.
"""

from streams.api.app import create_app
from streams.api.deps import ApiDeps

__all__ = ["ApiDeps", "create_app"]
