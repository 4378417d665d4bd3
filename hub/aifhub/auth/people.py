"""Who is who: the names and e-mail addresses logins give opaque user names.

Identity providers name people by stable ids (``sub``), which make user names such as
``cghhzgetmdawmrifbg9j-rkertnmgoceg``. Each login also tells the service the person's ``name`` and
``email`` claims (:func:`profile_of`); the service keeps the latest (:func:`remember`) and shows them
beside the id wherever instructors and admins read user names: rosters, grades and usage
(:func:`names_of`). A claim is text from the provider: it is cut to a length, stripped of control
characters, and only ever shown escaped.
"""

import unicodedata

from sqlalchemy import select

from .models import Person

MAX = 200


def clean(value):
    """A claim as text to show: a string, no control characters, at most MAX characters ('' otherwise)."""
    if not isinstance(value, str):
        return ""
    text = "".join(" " if unicodedata.category(c).startswith("C") else c for c in value)
    return " ".join(text.split())[:MAX]


def profile_of(claims, name_claim="name", email_claim="email"):
    """``{"name", "email"}`` from a login's claims (empty strings for what is not there)."""
    claims = claims if isinstance(claims, dict) else {}
    name = clean(claims.get(name_claim))
    if not name:  # some providers give the parts only
        name = clean(" ".join(clean(claims.get(k)) for k in ("given_name", "family_name")).strip())
    return {"name": name, "email": clean(claims.get(email_claim))}


def remember(s, user, source, profile):
    """Keep ``user``'s name and e-mail as their latest login (``source``) gave them (a unit of work)."""
    name, email = clean((profile or {}).get("name")), clean((profile or {}).get("email"))
    if not (name or email):
        return
    row = s.get(Person, user)
    if row is None:
        s.add(Person(user=user, name=name, email=email, source=source))
    elif (row.name, row.email, row.source) != (name, email, source):
        row.name, row.email, row.source = name, email, source


def names_of(s, users=None):
    """``{user: {"name", "email"}}`` of ``users`` (all known when None) (a unit of work)."""
    q = select(Person.user, Person.name, Person.email)
    if users is not None:
        users = list(users)
        if not users:
            return {}
        q = q.where(Person.user.in_(users))
    return {user: {"name": name, "email": email} for user, name, email in s.execute(q)}


def label(user, people):
    """``"Ana Novak <ana@uni.example> (ana-k3x7q2mfa9zt)"``: a user name with who it is, when known."""
    person = people.get(user) or {}
    who = " ".join(p for p in (person.get("name", ""), f"<{person['email']}>" if person.get("email") else "") if p)
    return f"{who} ({user})" if who else user


def with_names(s, rows, key="user"):
    """``rows`` (dicts naming a user in ``key``) with each person's ``name`` and ``email`` added (a unit of work)."""
    people = names_of(s, {row[key] for row in rows})
    for row in rows:
        person = people.get(row[key]) or {}
        row["name"], row["email"] = person.get("name", ""), person.get("email", "")
    return rows
