"""Training and evaluation of the detector: ``vestwatch train`` and ``vestwatch val``."""
