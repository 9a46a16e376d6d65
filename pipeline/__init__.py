"""The runtime: stage base, supervisor, transport, frame rings, queues, wire messages, HTTP, CLI shell;
nothing of vests or models."""
