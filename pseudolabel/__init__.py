"""pseudolabel: a few labels plus a folder of images in, a labeled data set and a classifier out."""

__version__ = "0.1.0"
__all__ = ["Classifier", "EyeStateClassifier"]


def __getattr__(name: str):
    if name in __all__:  # lazy: `import pseudolabel` stays light
        from pseudolabel.serve import predict

        return getattr(predict, name)
    raise AttributeError(f"module 'pseudolabel' has no attribute {name!r}")
