"""Models that travel: the model zip (export/install), TorchScript/ONNX export with parity checks.

Above inference in the layers: it loads networks through inference and writes files through formats.
"""
