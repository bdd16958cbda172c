"""scikit-learn's 8x8 digits as NCHW float32 images in [0, 1], split into training and test sets.

The data ships inside scikit-learn (1797 images of 8x8 pixels with values 0..16); nothing is
downloaded. The last :data:`N_TEST` images are held out for testing, the rest train the network.
"""

import numpy as np

#: Number of held-out test images (the last ones of the data set).
N_TEST = 360

#: Largest pixel value in the data set; pixels are divided by it to lie in [0, 1].
PIXEL_MAX = 16.0


def _load_all() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / PIXEL_MAX).astype(np.float32)[:, np.newaxis, :, :]
    return images, digits.target.astype(np.int64)


def load_train_set() -> tuple[np.ndarray, np.ndarray]:
    """Training images, float32 of shape [1437, 1, 8, 8] in [0, 1], and their int64 labels."""
    images, labels = _load_all()
    return images[:-N_TEST], labels[:-N_TEST]


def load_test_set() -> tuple[np.ndarray, np.ndarray]:
    """The held-out images, float32 of shape [360, 1, 8, 8] in [0, 1], and their int64 labels."""
    images, labels = _load_all()
    return images[-N_TEST:], labels[-N_TEST:]
