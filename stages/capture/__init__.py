"""``capture.<stream>``: reads one source, writes its frames into the stream's ring, sends references on."""
