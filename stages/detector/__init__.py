"""The YOLOv7-family detector: models, weight loaders, backends, pre/post-processing."""
