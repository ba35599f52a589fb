"""Exported models at work: ``predict`` and the Python API (:mod:`.predict`), ONNX Runtime scoring (:mod:`.onnx`)."""
