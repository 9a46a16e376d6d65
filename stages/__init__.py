"""The work, a folder per stage kind (capture, preprocess, inference, stream) and what they share:
the detector, recording, media, web, config, the commands and training."""
