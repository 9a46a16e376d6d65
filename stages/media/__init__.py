"""Video reading and writing, and drawing on frames: shared by the daemon and ``vestwatch detect``."""
