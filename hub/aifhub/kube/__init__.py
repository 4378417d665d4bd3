"""The Kubernetes objects aifhub makes, in one place for the spawner, the grading queue and ``aifhub k8s
render`` alike: sandbox pod settings (:mod:`.podspec`), grading Jobs (:mod:`.grading_job`), the manifests
beside the z2jh chart (:mod:`.manifests`), and the small async client that runs grading Jobs
(:mod:`.client`)."""
