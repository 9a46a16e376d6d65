"""``vestwatch bench``: how many cameras this machine holds (see ``bench.py``)."""
