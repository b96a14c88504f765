"""Caffe → ONNX conversion of the reference colorization net (Zhang et al., ECCV 2016).

``convert`` builds the pipeline's ONNX model; ``reference`` is an independent NumPy forward pass used
as ground truth in tests; ``synthetic`` writes random well-behaved weights for a prototxt.
"""
from models.caffe.proto import CaffeConversionError

__all__ = ["CaffeConversionError"]
