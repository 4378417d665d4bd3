"""The service's access log: what a person at the terminal needs to see of its requests.

Tornado logs every request at info level and every 4xx at warning. The hub asks the service for quota notices
every few seconds and for offers on every spawn page; a refused admission is already said, once, in the hub's
log. Those go to debug and info; the rest is logged as tornado does.
"""

import logging

access = logging.getLogger("tornado.access")
ROUTINE = ("/api/v1/internal/notices", "/api/v1/internal/offers")
REFUSABLE = "/api/v1/internal/admit"


def log_request(handler):
    status = handler.get_status()
    path = handler.request.path
    if status < 400:
        level = logging.DEBUG if path.endswith(ROUTINE) else logging.INFO
    elif status < 500:
        level = logging.INFO if path.endswith(REFUSABLE) else logging.WARNING
    else:
        level = logging.ERROR
    access.log(level, "%d %s %.2fms", status, handler._request_summary(), 1000.0 * handler.request.request_time())
