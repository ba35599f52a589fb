"""The bottom layer: the run folder's state and files (run.json, predictions.csv, scores, the lock,
placing and moving entries), the pure vote and its metrics, class names as folder names, the device and
progress bars. Imports nothing else of the package."""
