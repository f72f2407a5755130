"""From image bytes to model fields, torch-free: decode → ink → segment → normalize.

- ``decode``: limits checked before decoding, decoded at the scale needed (JPEG draft mode);
- ``ink``: white-on-black ink map from a photo, scan or canvas (local background, colour contrast,
  paper lines);
- ``segment``: the digits in the ink map (components, parts of one digit joined, touching digits split);
- ``normalize``: one digit → the MNIST-form field the model reads.
"""
