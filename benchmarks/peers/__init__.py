"""`make bench-peers`: foldserve's `serve http` against other model servers (KServe, MLServer, LitServe,
Ray Serve) serving the same model.onnx, one at a time on 127.0.0.1, driven by wrk. See runner.py."""
