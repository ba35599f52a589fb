"""pseudolabel: a few labels plus a folder of images in, a labeled data set and a classifier out."""

__version__ = "0.1.0"
__all__ = ["EyeStateClassifier"]


def __getattr__(name: str):
    if name == "EyeStateClassifier":  # lazy: `import pseudolabel` stays light
        from .predict import EyeStateClassifier

        return EyeStateClassifier
    raise AttributeError(f"module 'pseudolabel' has no attribute {name!r}")
