"""The ``srnode`` command: the root app (main), one module per command group (service,
batch, admin, pull, storage; the run behind ``srnode enhance`` is in enhance_run);
``srnode train`` is registered only when it runs."""

from dicom_node.cli.main import _register_all, app, main

__all__ = ["_register_all", "app", "main"]
