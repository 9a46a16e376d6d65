"""``preprocess.<i>``: letterboxes frames to the model's size, in a pool of workers."""
