"""The course catalog: course files, their schema, and loading them with clear errors."""

from .errors import CourseProblem
from .images import SandboxImage, load_images
from .loader import Catalog, load_catalog, load_course
from .model import Course

__all__ = [
    "Catalog",
    "Course",
    "CourseProblem",
    "SandboxImage",
    "load_catalog",
    "load_course",
    "load_images",
]
