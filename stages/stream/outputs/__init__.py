"""Where an analysed frame and its events go: one module per sink, all on ``base.Sink``."""
