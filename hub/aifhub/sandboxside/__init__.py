"""What runs in learners' and instructors' sandboxes: nbgrader's exchange classes, which speak HTTP to the
aifhub service (:mod:`.exchange`), and the nbgrader configuration that selects them (:mod:`.nbgrader_config`,
written by the spawner and baked into the sandbox images). Nothing here runs in the service."""
