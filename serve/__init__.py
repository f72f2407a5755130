"""Torch-free serving of the exported digit model: onnxruntime, numpy, Pillow and click only."""
