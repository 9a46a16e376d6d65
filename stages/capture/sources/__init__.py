"""Frame sources for the capture stage, one module per kind: ``kinds`` says which kind a URL is
(light: the config and the supervisor read it), ``feeds.open_feed`` opens it.

Every feed yields ``FeedFrame`` (BGR image, source pts in seconds) and raises
``FeedError`` when the source is lost, which the capture stage answers by
reconnecting with backoff.
"""
