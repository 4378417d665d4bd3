# nbgrader inside an aifhub sandbox: the course comes from the sandbox's environment
# (AIFHUB_COURSE), the exchange from the volume aifhub mounts at /srv/nbgrader/exchange.
import os

c = get_config()  # noqa: F821
c.CourseDirectory.course_id = os.environ.get("AIFHUB_COURSE", "")
c.Exchange.root = os.environ.get("AIFHUB_EXCHANGE", "/srv/nbgrader/exchange")
c.Exchange.path_includes_course = True
