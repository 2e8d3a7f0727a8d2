"""How a model's network runs: compiled torch, ONNX Runtime, TensorRT or OpenCV DNN (a runner per exportable part)
beside eager torch, and the ONNX exports they run."""
