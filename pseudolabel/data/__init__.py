"""Reading the user's data: images and their decoding (:mod:`.images`, :mod:`.fastdecode`), the pool and
its cache (:mod:`.pool`, :mod:`.cache`, :mod:`.memmap`), seed labels and annotation tools' exports
(:mod:`.labels`, :mod:`.annotations`), batches for the device and augmentations (:mod:`.stream`,
:mod:`.augment`). Nothing here writes outside the pool cache."""
from pseudolabel.data.images import (
                                     IMAGE_EXTS,
                                     MAX_PIXELS,
                                     Problems,
                                     TooLarge,
                                     list_images,
                                     load_image,
                                     one_line,
                                     shown,
                                     writable_name,
)
from pseudolabel.data.labels import clean_seed_labels, read_seed_labels, split_seeds
from pseudolabel.data.pool import Pool, load_pool

__all__ = ["IMAGE_EXTS", "MAX_PIXELS", "Pool", "Problems", "TooLarge", "clean_seed_labels", "list_images", "load_image",
           "load_pool", "one_line", "read_seed_labels", "shown", "split_seeds", "writable_name"]
