"""The HTTP pages: health, metrics, live frames, the review page and its events API."""
