"""Evaluating models the way the node runs them (sr_engine): the held-out split and its
report, metrics, baselines, and the unseen benchmark on pydicom's real files."""
