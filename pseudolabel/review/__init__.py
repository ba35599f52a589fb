"""Reviewing ``unclear/``: the state and its actions (:mod:`.state`), the journal (:mod:`.journal`) and the
loopback-only web page (:mod:`.server`)."""
