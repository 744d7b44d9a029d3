"""SageMaker Pipelines in the layout of the SageMaker Projects model-build repository: each module
has `get_pipeline(...)`, which builds the pipeline (`catalogue`: the catalogue refresh, encoding only
what changed; `model`: package, evaluate, gate on recall@10, register). `jobs` is the code their
processing steps run inside our image (`python -m model_build.pipelines.jobs STEP ...`);
`cli` is `clip-search publish pipeline NAME upsert|start|describe`."""
