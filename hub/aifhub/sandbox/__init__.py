"""Where the spawners lived before aifhub 0.3 (removed in 0.4.0) (``aifhub.sandbox.local``, ``aifhub.sandbox.kube``): they are in
:mod:`aifhub.hubside` now. Kept so that a ``spawner_class`` given by its dotted path still loads; the short
names ``aifhub-local`` and ``aifhub-kube`` are the ones to use. Importing either module warns
(``DeprecationWarning``); they are removed in aifhub 0.4.0 (:data:`aifhub.compat.SHIMS_REMOVED_IN`)."""
