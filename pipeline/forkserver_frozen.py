"""Imported last by the fork server, after the stages' modules: every object there so far is
moved out of the garbage collector's reach, so that no collection in a forked stage writes to
(and so unshares) the pages they live on."""

import gc

gc.collect()
gc.freeze()
