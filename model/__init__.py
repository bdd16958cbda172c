"""The NumPy golden model: bit-exact with the hardware, importable without any simulator."""

from .conv import conv2d, conv_output_size, conv_params
from .dense import dense, relu
from .pool import maxpool2d
from .quant import dequantize, quantize, quantize_multiplier, requantize

__all__ = [
    "conv2d", "conv_output_size", "conv_params", "dense", "dequantize", "maxpool2d", "quantize",
    "quantize_multiplier", "relu", "requantize",
]
