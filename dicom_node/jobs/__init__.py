"""The life of a job on top of :mod:`dicom_node.store`: series stability and routing, the
scheduler tick, the worker's claim loop and its two steps (process, export), and retention,
the one place that deletes received and derived files."""
