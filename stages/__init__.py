"""The work: capture, preprocess, inference (the detector), render, record."""
