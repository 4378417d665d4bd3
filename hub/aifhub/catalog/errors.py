"""A problem found in a course file, said so that a person can fix it."""

from dataclasses import dataclass


@dataclass(frozen=True)
class CourseProblem:
    """One thing wrong with one course file.

    ``field`` is a dotted path into the file (``sandbox.gpu.count``), or ``""``
    when the problem is with the file as a whole (unreadable, not YAML).
    """

    file: str
    field: str
    reason: str

    def __str__(self):
        where = f"{self.file}: {self.field}" if self.field else self.file
        return f"{where}: {self.reason}"

    def to_dict(self):
        return {"file": self.file, "field": self.field, "reason": self.reason}
