"""Limits that the CLI shows in --help and the image code enforces (no heavy imports here)."""

# Declared pixels; larger images are refused before any pixel is decoded (`--max-pixels` raises it).
# 64 Mi pixels admits every phone camera up to 64 MP: 48 MP (8000x6000, iPhone 8064x6048 = 48.8 MP),
# 50 MP (8160x6144 = 50.1 MP) and 64 MP (9248x6936 = 64.1 MP) photos, and panoramas up to that size.
# It is also the largest round limit at which the worst case stays inside the 400 MB budget of a whole
# `serve predict` process: a format that cannot be decoded at reduced scale (PNG, TIFF, WebP) is held at
# full size, at most 4 bytes a pixel, so 4 x 67.1 M = 268 MB plus the ~100 MB of the process itself.
# JPEGs cost far less (decoded at 1/4 or 1/8 scale). 108 and 200 MP modes need --max-pixels.
DEFAULT_MAX_PIXELS = 64 * 1024 * 1024

# Seconds a server's requests in flight get to finish once it is told to stop (HTTP and gRPC alike).
SHUTDOWN_GRACE_S = 30
