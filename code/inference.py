"""SageMaker script-mode entry point (SAGEMAKER_PROGRAM=inference.py).

A stock SageMaker PyTorch image imports this module from the artifact's code/ directory and calls
these four functions; our own container calls the same functions through its handler service.
"""
from clip_search.serving.handler import input_fn, model_fn, output_fn, predict_fn

__all__ = ["model_fn", "input_fn", "predict_fn", "output_fn"]
