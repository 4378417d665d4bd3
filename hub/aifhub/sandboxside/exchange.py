"""nbgrader exchange classes that talk to the aifhub service over HTTP (used inside sandboxes).

Configured in every sandbox (see :mod:`.sandbox_config`)::

    c.ExchangeFactory.fetch_assignment = "aifhub.sandboxside.exchange.ExchangeFetchAssignment"
    c.ExchangeFactory.submit = "aifhub.sandboxside.exchange.ExchangeSubmit"
    ...

so that ``nbgrader fetch_assignment / submit / list / fetch_feedback`` and JupyterLab's
Assignments tab work unchanged. Each request carries the sandbox's ``JUPYTERHUB_API_TOKEN``;
the service takes the learner's name from the hub, so ``--student`` cannot hand in or fetch
as someone else (the service answers 403). Local files (the assignment folder and nbgrader's
submission cache) are handled as nbgrader's default exchange handles them.
"""

import glob
import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from urllib.parse import quote

from nbgrader.exchange.abc import ExchangeCollect as ABCExchangeCollect
from nbgrader.exchange.abc import ExchangeReleaseAssignment as ABCExchangeReleaseAssignment
from nbgrader.exchange.abc import ExchangeReleaseFeedback as ABCExchangeReleaseFeedback
from nbgrader.exchange.default import Exchange as DefaultExchange
from nbgrader.exchange.default import ExchangeFetchAssignment as DefaultFetchAssignment
from nbgrader.exchange.default import ExchangeFetchFeedback as DefaultFetchFeedback
from nbgrader.exchange.default import ExchangeList as DefaultList
from nbgrader.exchange.default import ExchangeSubmit as DefaultSubmit
from nbgrader.exchange.default.list import _checksum
from traitlets import Float, Unicode, default

ALL = "*"


class Exchange(DefaultExchange):
    """The aifhub service as nbgrader's exchange."""

    service_url = Unicode(
        help="URL of the aifhub service's prefix (…/services/aifhub/). Default: $AIFHUB_EXCHANGE_URL.",
    ).tag(config=True)
    api_token = Unicode(help="JupyterHub token to present. Default: $JUPYTERHUB_API_TOKEN.").tag(config=True)
    request_timeout = Float(120.0, help="Seconds to wait for the aifhub service.").tag(config=True)

    @default("service_url")
    def _service_url_default(self):
        return os.environ.get("AIFHUB_EXCHANGE_URL", "")

    @default("api_token")
    def _api_token_default(self):
        return os.environ.get("JUPYTERHUB_API_TOKEN", "")

    @default("root")
    def _root_default(self):  # nothing lives there; kept for nbgrader code that prints it
        return self.service_url

    def ensure_root(self):
        if not self.service_url:
            self.fail("The aifhub exchange is not configured: AIFHUB_EXCHANGE_URL is not set in this sandbox.")

    @property
    def me(self):
        return os.environ.get("JUPYTERHUB_USER") or os.environ.get("USER", "")

    def requested_student(self):
        """The student id given on the command line, if any (the service checks it is the caller)."""
        sid = self.coursedir.student_id
        return "" if sid in ("", ALL) else sid

    def course_id(self):
        course = self.coursedir.course_id or os.environ.get("AIFHUB_COURSE", "")
        if not course:
            self.fail("No course id specified. Re-run with --course flag.")
        return course

    def api(self, method, path, *, params=None, data=None, ok=(200, 201, 202), stream=False):
        import requests

        self.ensure_root()
        url = self.service_url.rstrip("/") + "/api/v1/" + path
        try:
            resp = requests.request(
                method,
                url,
                params=params,
                data=data,
                timeout=self.request_timeout,
                headers={"Authorization": f"token {self.api_token}"},
            )
        except requests.RequestException as exc:
            self.fail(f"Cannot reach the aifhub exchange at {self.service_url}: {exc}")
        if resp.status_code not in ok:
            try:
                message = resp.json().get("message") or resp.text
            except ValueError:
                message = resp.text[:300]
            self.fail(f"The aifhub exchange refused ({resp.status_code}): {message}")
        return resp

    def assignment_path(self, course_id, assignment_id):
        if self.path_includes_course:
            return os.path.abspath(os.path.join(self.assignment_dir, course_id, assignment_id))
        return os.path.abspath(os.path.join(self.assignment_dir, assignment_id))

    @staticmethod
    def extract(data, dest):
        """Unpack a tar.gz from the service (plain files only) into ``dest``."""
        os.makedirs(dest, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for m in tar:
                if not m.isfile() or m.name.startswith("/") or ".." in Path(m.name).parts:
                    continue
                target = os.path.join(dest, m.name)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with open(target, "wb") as f:
                    shutil.copyfileobj(tar.extractfile(m), f)


class _TemporarySource:
    """A fetch unpacks what the service sent into a temporary folder (``_tmp``): removed when the fetch ends,
    whether it copied, failed or refused (nbgrader's ``init_dest`` refuses an assignment fetched already)."""

    _tmp = ""

    def start(self):
        try:
            return super().start()
        finally:
            if self._tmp:
                shutil.rmtree(self._tmp, ignore_errors=True)


class ExchangeFetchAssignment(_TemporarySource, Exchange, DefaultFetchAssignment):
    def init_src(self):
        course = self.course_id()
        aid = self.coursedir.assignment_id
        resp = self.api("GET", f"courses/{quote(course)}/assignments/{quote(aid)}/files")
        self._tmp = tempfile.mkdtemp(prefix="aifhub-fetch-")
        self.src_path = os.path.join(self._tmp, aid)
        self.extract(resp.content, self.src_path)


class ExchangeSubmit(Exchange, DefaultSubmit):
    def init_dest(self):
        course = self.course_id()
        self.coursedir.course_id = course
        self.cache_path = os.path.join(self.cache, course)
        self.student = self.requested_student() or self.me

    def init_release(self):
        """The released notebooks, to warn about missing or extra ones (as nbgrader does)."""
        aid = self.coursedir.assignment_id
        resp = self.api("GET", f"courses/{quote(self.coursedir.course_id)}/assignments")
        released = next((a for a in resp.json()["assignments"] if a["assignment_id"] == aid), None)
        if released is None:
            self.fail(f"Assignment not found: {aid} has not been released in {self.coursedir.course_id}.")
        self._release_tmp = tempfile.mkdtemp(prefix="aifhub-release-")
        for nb in released["notebooks"]:
            Path(self._release_tmp, nb + ".ipynb").write_text("{}")
        self.release_path = self._release_tmp

    def copy_files(self):
        self.init_release()
        staging = tempfile.mkdtemp(prefix="aifhub-submit-")
        try:
            self.check_filename_diff()
            dest = os.path.join(staging, "submission")
            self.do_copy(self.src_path, dest)  # honours CourseDirectory.ignore and the file size limits
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w:gz") as tar:
                for path in sorted(Path(dest).rglob("*")):
                    if path.is_file() and not path.is_symlink():
                        tar.add(path, arcname=path.relative_to(dest).as_posix(), recursive=False)
            params = {"student": self.student} if self.requested_student() else None
            resp = self.api(
                "POST",
                f"courses/{quote(self.coursedir.course_id)}/assignments/"
                f"{quote(self.coursedir.assignment_id)}/submissions",
                params=params,
                data=buf.getvalue(),
            )
            self.timestamp = resp.json()["timestamp"]
            # the local cache, as nbgrader's default exchange keeps it (the Assignments tab lists it)
            cache_path = os.path.join(
                self.cache_path, f"{self.student}+{self.coursedir.assignment_id}+{self.timestamp}"
            )
            os.makedirs(self.cache_path, exist_ok=True)
            shutil.copytree(dest, cache_path)
            with open(os.path.join(cache_path, "timestamp.txt"), "w") as fh:
                fh.write(self.timestamp)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(getattr(self, "_release_tmp", ""), ignore_errors=True)
        self.log.info(
            "Submitted as: {} {} {}".format(self.coursedir.course_id, self.coursedir.assignment_id, self.timestamp)
        )


class ExchangeFetchFeedback(_TemporarySource, Exchange, DefaultFetchFeedback):
    def init_src(self):
        course = self.course_id()
        self.coursedir.course_id = course
        aid = self.coursedir.assignment_id
        if not aid or aid == ALL:
            self.fail("Name the assignment to fetch feedback for.")
        student = self.requested_student()
        resp = self.api(
            "GET",
            f"courses/{quote(course)}/assignments/{quote(aid)}/feedback",
            params={"student": student} if student else None,
            ok=(200, 404),
        )
        self.feedback_files = []
        # what nbgrader logs as the feedback's Source: the service's URL that answered (with the sandbox's token)
        self.src_path = resp.url
        if resp.status_code == 404:
            self.log.warning("No feedback available for %s/%s yet.", course, aid)
            return
        timestamp = resp.headers.get("X-Aifhub-Timestamp", "")
        self._tmp = tempfile.mkdtemp(prefix="aifhub-feedback-")
        self.extract(resp.content, self._tmp)
        for html in sorted(glob.glob(os.path.join(self._tmp, "*.html"))):
            notebook_id = os.path.splitext(os.path.basename(html))[0]
            self.feedback_files.append((notebook_id, timestamp, html))
            self.log.info("Found feedback for '%s/%s/%s' submitted at %s", course, aid, notebook_id, timestamp)


class ExchangeList(Exchange, DefaultList):
    """Released assignments (fetched or not), and submissions with their feedback, as nbgrader lists them.

    The course is the one given (``--course``, or the sandbox's ``AIFHUB_COURSE``); with none, every
    course the caller is a member of."""

    def init_dest(self):
        pass

    def courses(self):
        """``[(course id, given)]``: the course given, else the caller's courses."""
        course = self.coursedir.course_id or os.environ.get("AIFHUB_COURSE", "")
        if course:
            return [(course, True)]
        return [(c["id"], False) for c in sorted(self.api("GET", "me").json()["courses"], key=lambda c: c["id"])]

    def listing(self, course, given):
        """The course's released assignments with the caller's (or ``--student``'s) submissions and feedback;
        None for a course of the caller's list they are not a member of (open to enrol, not enrolled)."""
        student = self.requested_student()
        resp = self.api(
            "GET",
            f"courses/{quote(course)}/assignments",
            params={"student": student} if student else None,
            ok=(200,) if given else (200, 403),
        )
        if resp.status_code != 200:
            return None
        data = resp.json()
        wanted = self.coursedir.assignment_id if self.coursedir.assignment_id not in ("", ALL) else None
        data["assignments"] = sorted(
            (a for a in data["assignments"] if wanted in (None, a["assignment_id"])), key=lambda a: a["assignment_id"]
        )
        return data

    def parse_assignments(self):
        out = []
        for course, given in self.courses():
            data = self.listing(course, given)
            if data is None:
                continue
            if self.inbound:
                out += self._inbound(course, data)
            elif self.cached:
                out += self._cached(course, data["student_id"], data["assignments"])
            else:
                out += self._released(course, data["assignments"])
        return out

    def _released(self, course, remote):
        out = []
        for a in remote:
            aid = a["assignment_id"]
            local = self.assignment_path(course, aid)
            info = {"course_id": course, "assignment_id": aid}
            if os.path.isdir(local):
                info.update(
                    status="fetched",
                    path=local,
                    notebooks=[
                        {"notebook_id": Path(p).stem, "path": p}
                        for p in sorted(glob.glob(os.path.join(local, "*.ipynb")))
                    ],
                )
            else:
                info.update(
                    status="released",
                    path=f"{self.service_url}{course}/{aid}",
                    notebooks=[{"notebook_id": nb, "path": f"{aid}/{nb}.ipynb"} for nb in a["notebooks"]],
                )
            if self.remove:
                info["status"] = "removed"
            out.append(info)
        return out

    def _submission(self, course, student, aid, timestamp, path, notebooks, feedback):
        """nbgrader's record of one submission: ``notebooks`` ``[(notebook id, path)]``; ``feedback`` the
        service's index of the learner's released feedback (its timestamp and each notebook's checksum)."""
        local_dir = os.path.join(self.assignment_path(course, aid), "feedback", timestamp)
        info = {
            "course_id": course,
            "student_id": student,
            "assignment_id": aid,
            "timestamp": timestamp,
            "status": "submitted",
            "path": path,
            "notebooks": [],
        }
        released = feedback.get("notebooks", {}) if feedback and feedback["timestamp"] == timestamp else {}
        for nid, nb_path in notebooks:
            local = os.path.join(local_dir, f"{nid}.html")
            has_local = os.path.isfile(local)
            remote_sum = released.get(nid)
            info["notebooks"].append(
                {
                    "notebook_id": nid,
                    "path": nb_path,
                    "has_local_feedback": has_local,
                    "has_exchange_feedback": remote_sum is not None,
                    "local_feedback_path": local if has_local else None,
                    "feedback_updated": bool(has_local and remote_sum and _checksum(local) != remote_sum),
                }
            )
        nbs = info["notebooks"]
        info["has_local_feedback"] = bool(nbs) and all(n["has_local_feedback"] for n in nbs)
        info["has_exchange_feedback"] = bool(nbs) and all(n["has_exchange_feedback"] for n in nbs)
        info["feedback_updated"] = any(n["feedback_updated"] for n in nbs)
        info["local_feedback_path"] = local_dir if info["has_local_feedback"] else None
        if self.remove:
            info["status"] = "removed"
        return info

    @staticmethod
    def _grouped(infos):
        grouped = {}
        for info in infos:
            grouped.setdefault((info["course_id"], info["student_id"], info["assignment_id"]), []).append(info)
        return [
            {
                "course_id": c,
                "student_id": s,
                "assignment_id": a,
                "status": subs[0]["status"],
                "submissions": sorted(subs, key=lambda x: x["timestamp"]),
            }
            for (c, s, a), subs in sorted(grouped.items())
        ]

    def _cached(self, course, student, remote):
        """The local copies nbgrader's submit keeps, of the assignments still released."""
        feedback = {a["assignment_id"]: a.get("feedback") for a in remote}
        infos = []
        for path in sorted(glob.glob(os.path.join(self.cache, course, f"{student}+*+*"))):
            _sid, aid, timestamp = os.path.basename(path).split("+", 2)
            if aid not in feedback:
                continue
            notebooks = [
                (Path(nb).stem, os.path.abspath(nb)) for nb in sorted(glob.glob(os.path.join(path, "*.ipynb")))
            ]
            infos.append(self._submission(course, student, aid, timestamp, path, notebooks, feedback[aid]))
        return self._grouped(infos)

    def _inbound(self, course, data):
        """Submissions as the service received them: a learner's own (or, for instructors, everyone's), with
        the feedback released for the caller's (or ``--student``'s)."""
        params = {"student": self.requested_student()} if self.requested_student() else None
        infos = []
        for a in data["assignments"]:
            aid = a["assignment_id"]
            subs = self.api(
                "GET", f"courses/{quote(course)}/assignments/{quote(aid)}/submissions", params=params
            ).json()
            notebooks = [(nb, f"{aid}/{nb}.ipynb") for nb in a["notebooks"]]
            for s in subs["submissions"]:
                feedback = a.get("feedback") if s["student_id"] == data["student_id"] else None
                infos.append(self._submission(course, s["student_id"], aid, s["timestamp"], "", notebooks, feedback))
        return self._grouped(infos)

    def remove_files(self):
        if not self.cached:
            self.fail("Released assignments and submissions are removed by instructors through aifhub.")
        assignments = self.parse_assignments()
        for a in assignments:
            for s in a["submissions"]:
                shutil.rmtree(s["path"], ignore_errors=True)
        return assignments


class _InstructorAction(Exchange):
    action = ""

    def init_src(self):
        pass

    def init_dest(self):
        pass

    def copy_files(self):
        course = self.course_id()
        aid = self.coursedir.assignment_id
        path = f"courses/{quote(course)}/assignments/{quote(aid)}/{self.action}"
        result = self.api("POST", path).json()
        self.log.info("aifhub: %s %s/%s: %s", self.action, course, aid, result)


class ExchangeReleaseAssignment(_InstructorAction, ABCExchangeReleaseAssignment):
    """``nbgrader release_assignment`` from an instructor's sandbox: the service generates and releases."""

    action = "release"


class ExchangeCollect(_InstructorAction, ABCExchangeCollect):
    """``nbgrader collect`` from an instructor's sandbox: the service collects into its course directory."""

    action = "collect"


class ExchangeReleaseFeedback(_InstructorAction, ABCExchangeReleaseFeedback):
    """``nbgrader release_feedback``: the service generates and releases feedback."""

    action = "feedback"
