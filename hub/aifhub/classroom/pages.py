"""What the course page shows of the live workshop: the course's announcements, and attendance for instructors."""

from ..errors import Refusal


async def on_course_page(room, course, user, instructor):
    """``{announcements, attendance}`` for the course page (attendance only for instructors and admins)."""
    shown = (await room.announcements_for([course.id])).get(course.id, [])
    attendance = []
    if instructor and course.sessions:
        try:
            attendance = (await room.attendance(course.id, user, True))[1]
        except Refusal:
            attendance = []
    return {"announcements": shown, "attendance": attendance}
