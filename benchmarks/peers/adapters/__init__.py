"""What each peer server needs to serve model.onnx: one module per peer, run with that peer's own virtual
environment's Python (``python -m benchmarks.peers.adapters.<peer> --model M --port P``). They import only
the peer, numpy and onnxruntime: never foldserve, which is not installed there."""
