"""pseudolabel: a few labels plus a folder of images in, a labeled data set and a classifier out."""

__version__ = "0.1.0"
