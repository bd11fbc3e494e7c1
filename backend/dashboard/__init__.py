"""The dashboard: the supervisor's screen, the fleet admin's desk, the auditor's view and the
officer's own page, served by the backend itself.

Each page is a static shell (``shell.html`` around ``pages/<page>.html``) with one small ES
module from ``static/``; no build step. Everything a page shows comes from /api/v1 with the
signed-in person's token, so the API's access table and the privacy policy stay the only
enforcement point: a page hides what a role may not do, and shows the backend's reason when
the backend refuses."""
from backend.dashboard.pages import PAGES, install

__all__ = ["PAGES", "install"]
