"""The life of a job on top of :mod:`dicom_node.store`: series stability and routing, the
scheduler tick, what an export attempt makes of its row, and the worker that claims, enhances
and hands over to export."""
