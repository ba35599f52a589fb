"""The commands' stages: ``run`` (:mod:`.run`, with :mod:`.gates`, :mod:`.outputs`, :mod:`.results`),
the label check (:mod:`.label_check`), ``retrain``, ``resort``, ``compare``, ``export`` and ``init``."""
