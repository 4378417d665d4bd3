"""The service's records: sandbox sessions, GPU claims, learner uids and enrolments."""
