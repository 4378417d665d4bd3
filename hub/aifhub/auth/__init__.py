"""Real logins: OIDC (MyAccessID, any OpenID Connect provider) and LTI 1.3 launches from an LMS.

The hub side (authenticators, claim mapping, user names) lives here; what the service keeps
(instructor grants, LTI links, grade passback) lives in :mod:`aifhub.lti` and :mod:`.grants`.
"""
