"""What learners get of a course folder: its materials, not its instructors' files.

The local spawner copies them into a learner's work folder; Kubernetes pods fetch them from the
service (:mod:`aifhub.kube.materials`). Both use this one rule.
"""

# Course files a learner never gets: instructors' sources (with solutions) and the course file.
PRIVATE_COURSE_ENTRIES = {"source", "course.yaml", "release", "submitted", "autograded", "feedback", "gradebook.db"}


def is_private(rel, st=None):
    """Course entries a learner never gets: instructors' files, and hidden ones (``rel``: a path in the course)."""
    parts = rel.split("/")
    return parts[0] in PRIVATE_COURSE_ENTRIES or any(p.startswith(".") for p in parts)
