"""Serving: multi-model-server (via AWS's sagemaker-inference toolkit) running our handler service.

mms.py builds the MMS configuration and command; server.py runs it natively (`clip-search serve`,
tests, the demo); container_entry.py is what `serve` runs inside the SageMaker container.
"""
