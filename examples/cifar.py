"""The CS231n lecture's ConvNetJS CIFAR-10 network with random weights, quantized to int8.

ConvNetJS's CIFAR-10 demo, layer by layer (input 32x32x3, pixels scaled to [-0.5, 0.5])::

    conv1 16 filters 5x5 pad 2, ReLU, maxpool 2x2 stride 2   -> [N, 16, 16, 16]
    conv2 20 filters 5x5 pad 2, ReLU, maxpool 2x2 stride 2   -> [N, 20, 8, 8]
    conv3 20 filters 5x5 pad 2, ReLU, maxpool 2x2 stride 2   -> [N, 20, 4, 4]
    flatten, fc 320 -> 10                                    -> scores [N, 10]

The weights are random (He-normal, seeded) and calibration uses random images from the same
distribution as :func:`random_images`, so the network is meaningless as a classifier but exercises
every layer type at the lecture's sizes. Models are written under ``build/examples/`` and never
committed; the same seed always gives the same file.
"""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .quantize import INPUT_NAME, quantize_qdq

IMAGE_SIZE = 32
IMAGE_CHANNELS = 3
#: Output channels of the three conv layers.
CONV_CHANNELS = (16, 20, 20)
KERNEL = 5
PAD = 2
POOL = 2
N_CLASSES = 10
FC_INPUTS = CONV_CHANNELS[-1] * (IMAGE_SIZE // POOL ** len(CONV_CHANNELS)) ** 2
#: ConvNetJS feeds pixel / 255 - 0.5, so inputs lie in this range.
PIXEL_RANGE = (-0.5, 0.5)
#: Standard deviation of the random biases.
BIAS_STD = 0.1
CALIBRATION_IMAGES = 64
CALIBRATION_BATCH = 16
ONNX_OPSET = 13


def random_images(n: int, seed: int = 0) -> np.ndarray:
    """``n`` random float32 images [n, 3, 32, 32], uniform over :data:`PIXEL_RANGE`."""
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    rng = np.random.default_rng(seed)
    low, high = PIXEL_RANGE
    return rng.uniform(low, high, (n, IMAGE_CHANNELS, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)


def float_cifar_net(seed: int = 0) -> onnx.ModelProto:
    """The float network with seeded He-normal weights and small random biases."""
    rng = np.random.default_rng(seed)
    initializers, nodes = [], []

    def param(name, value):
        initializers.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    x, in_channels = INPUT_NAME, IMAGE_CHANNELS
    for i, out_channels in enumerate(CONV_CHANNELS, start=1):
        fan_in = in_channels * KERNEL * KERNEL
        w = param(f"conv{i}.w", rng.standard_normal((out_channels, in_channels, KERNEL, KERNEL))
                  * np.sqrt(2.0 / fan_in))
        b = param(f"conv{i}.b", rng.standard_normal(out_channels) * BIAS_STD)
        nodes += [
            helper.make_node("Conv", [x, w, b], [f"conv{i}"], f"conv{i}",
                             kernel_shape=[KERNEL, KERNEL], pads=[PAD] * 4, strides=[1, 1]),
            helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"], f"relu{i}"),
            helper.make_node("MaxPool", [f"relu{i}"], [f"pool{i}"], f"pool{i}",
                             kernel_shape=[POOL, POOL], strides=[POOL, POOL]),
        ]
        x, in_channels = f"pool{i}", out_channels
    w = param("fc.w", rng.standard_normal((N_CLASSES, FC_INPUTS)) * np.sqrt(1.0 / FC_INPUTS))
    b = param("fc.b", rng.standard_normal(N_CLASSES) * BIAS_STD)
    nodes += [helper.make_node("Flatten", [x], ["flatten"], "flatten", axis=1),
              helper.make_node("Gemm", ["flatten", w, b], ["scores"], "fc", transB=1)]
    graph = helper.make_graph(
        nodes, "convnetjs_cifar10",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT,
                                       ["N", IMAGE_CHANNELS, IMAGE_SIZE, IMAGE_SIZE])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", N_CLASSES])],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              producer_name="convcore examples.cifar")
    onnx.checker.check_model(model, full_check=True)
    return model


def build_cifar_net(seed: int, path: Path | str) -> Path:
    """Write the int8 QDQ network for ``seed`` to ``path`` and return the path.

    Calibration uses :data:`CALIBRATION_IMAGES` images of ``random_images(..., seed=seed + 1)``.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
    calibration = random_images(CALIBRATION_IMAGES, seed=seed + 1)
    return quantize_qdq(float_cifar_net(seed), Path(path),
                        [calibration[i:i + CALIBRATION_BATCH]
                         for i in range(0, CALIBRATION_IMAGES, CALIBRATION_BATCH)])


if __name__ == "__main__":
    import sys

    print(build_cifar_net(0, sys.argv[1] if len(sys.argv) > 1 else "cifar_int8_seed0.onnx"))
