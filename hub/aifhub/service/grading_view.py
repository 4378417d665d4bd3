"""What the pages show of grading: assignment status for learners, queue progress and grades for instructors.

Read from the grading manager's records (jobs, submissions, released feedback); the nbgrader
steps themselves run in the grading manager.
"""

import asyncio

from . import charts

ACTIVE = ("queued", "running")


def latest_results(jobs):
    """``{(assignment, student): job}`` of the newest finished job of each submission."""
    out = {}
    for job in jobs:
        if job["state"] in ("done", "failed"):
            out[(job["assignment_id"], job["student_id"])] = job
    return out


async def learner_assignments(grading, course, user):
    """Per released assignment: submissions, whether feedback is out, and the score once it is."""
    results = latest_results(await grading.jobs(course.id))
    rows = []
    for entry in await grading.listing(course.id, user):
        a = entry["assignment_id"]
        job = results.get((a, user))
        feedback = entry["feedback"]
        rows.append(
            {
                "assignment": a,
                "submitted": len(entry["submissions"]),
                "last_submitted": entry["submissions"][-1]["timestamp"] if entry["submissions"] else None,
                "feedback": sorted(feedback["notebooks"]) if feedback else [],
                "score": job["score"] if feedback and job and job["state"] == "done" else None,
                "max_score": job["max_score"] if feedback and job else None,
            }
        )
    return rows


async def instructor_grading(grading, course):
    jobs = await grading.jobs(course.id)
    released = {e["assignment_id"] for e in await asyncio.to_thread(grading.released, course.id)}
    submissions = await grading.submissions(course.id)
    per_assignment = []
    for a in course.assignments:
        mine = [j for j in jobs if j["assignment_id"] == a]
        counts = {state: sum(j["state"] == state for j in mine) for state in ("queued", "running", "done", "failed")}
        per_assignment.append(
            {
                "assignment": a,
                "released": a in released,
                "submissions": sum(1 for x in submissions if x["assignment_id"] == a),
                "jobs": counts,
                "total_jobs": len(mine),
            }
        )
    results = [j for j in latest_results(jobs).values() if j["state"] == "done" and j["max_score"]]
    bins = [0] * 10
    for j in results:
        bins[min(int(10 * j["score"] / j["max_score"]), 9)] += 1
    chart = charts.bars(
        [(f"{10 * i}-{10 * i + 9 if i < 9 else 100}%", n) for i, n in enumerate(bins)],
        f"Grade distribution in {course.title} ({charts.amount(len(results), 'graded submissions')})",
        element_id="grade-distribution",
        unit="submissions",
    )
    return {
        "assignments": per_assignment,
        "recent_jobs": list(reversed(jobs[-30:])),
        "grading_active": any(j["state"] in ACTIVE for j in jobs),
        "grade_chart": chart,
    }
