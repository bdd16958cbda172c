"""Static int8 quantization of the example networks with onnxruntime, and running them there.

Both example networks go through :func:`quantize_qdq`, so they share one recipe: QDQ format, int8
activations (asymmetric, MinMax calibration) and int8 per-output-channel symmetric weights, int32
biases. onnxruntime then folds each ReLU into the QuantizeLinear after its Conv (the zero point
of a ReLU output is -128, so saturation already clips at zero) and wraps MaxPool and Flatten in
QuantizeLinear/DequantizeLinear pairs that reuse the scale of their input.
"""

import logging
import os
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx

#: Name of the graph input of every example network.
INPUT_NAME = "input"


@contextmanager
def _quiet_preprocessing_advice():
    """onnxruntime logs advice to run its pre-processing (shape inference and graph optimization)
    first; the example graphs are already minimal and that step would add vendor opset imports."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_qdq(float_model: onnx.ModelProto, out_path: Path,
                 calibration_batches: Iterable[np.ndarray]) -> Path:
    """Quantize ``float_model`` to an int8 QDQ model at ``out_path``, calibrating on the float32
    NCHW batches given. The file is written atomically (safe with parallel test workers)."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration_batches)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: np.asarray(batch, dtype=np.float32)}

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    try:
        with _quiet_preprocessing_advice():
            quantize_static(float_model, tmp_path, Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QInt8,
                            weight_type=QuantType.QInt8)
        os.replace(tmp_path, out_path)
    finally:
        tmp_path.unlink(missing_ok=True)
    return out_path


def onnxruntime_scores(model, images: np.ndarray) -> np.ndarray:
    """Outputs of an ONNX model (path or ModelProto) on onnxruntime's CPU provider, one thread,
    with int8 kernels that are exact on every CPU (:func:`model.oracle.onnxruntime_session`)."""
    from model.oracle import onnxruntime_session

    session = onnxruntime_session(model, threads=1)
    return session.run(None, {INPUT_NAME: np.asarray(images, dtype=np.float32)})[0]
