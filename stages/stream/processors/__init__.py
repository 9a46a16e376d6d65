"""What runs on each inferred frame before the sinks: one module per processor, on ``base.Processor``."""
