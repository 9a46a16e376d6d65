"""The recordings: where files go, segments, retention, event clips and the event store."""
