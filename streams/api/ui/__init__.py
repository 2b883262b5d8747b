"""The Segment List Builder page: static HTML, CSS and JS modules served by the API itself.

The page holds no data: its scripts call the API's data routes with the bearer token the user
types once per browser tab. `page_routes` serves it open, with the API's description pages.
"""

from streams.api.ui.pages import page_routes

__all__ = ["page_routes"]
