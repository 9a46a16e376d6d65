"""``inference``: batches frames across streams on the one device that runs the model."""
