"""A user's own module for the tests: a noise technique and a network chosen by ``_target_``."""
