"""A small CNN for scikit-learn's 8x8 handwritten digits, trained in NumPy and quantized to int8.

``digits_int8.onnx`` beside this file is the committed QDQ model; ``python -m examples.digits.train``
regenerates it deterministically. :func:`load_test_set` gives the 360 held-out images the demo
classifies.
"""

from pathlib import Path

from .data import load_test_set, load_train_set, N_TEST

#: The committed quantized model (int8 activations and weights, QDQ format).
MODEL_PATH = Path(__file__).resolve().parent / "digits_int8.onnx"

__all__ = ["MODEL_PATH", "N_TEST", "load_test_set", "load_train_set"]
