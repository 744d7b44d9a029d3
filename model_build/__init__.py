"""Publishing clip-search to SageMaker: artifact to S3, image to ECR, model package in the registry,
serverless endpoint, Batch Transform. Each step is a library function and a `publish` subcommand
(`clip-search publish STEP` or `python -m model_build STEP`); all are idempotent and print what
they created. Configuration: flags > environment variables > one config file (see config.py)."""
