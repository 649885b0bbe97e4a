"""Lightning module, callbacks, the run record and the train entry point.

Import from the modules (``dropout_lab.training.fit.train``, ``dropout_lab.training.run_record.RunRecord``):
this package re-exports nothing, so that reading run records (``study status``) never imports Lightning.
"""
