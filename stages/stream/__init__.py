"""The stage that owns one stream after inference: processors, then det/event, then sinks."""
