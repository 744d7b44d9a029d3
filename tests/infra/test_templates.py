"""The CloudFormation templates under infra/: cfn-lint reports nothing, checkov's CloudFormation
checks pass, and every check a template skips says why.

checkov pins boto3 to an exact old release, so it cannot share the project's environment: it runs
from its own virtualenv (infra/requirements-checkov.txt; CHECKOV names its binary, default
/tmp/checkovenv/bin/checkov, see docs/deploy.md).
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

INFRA = Path(__file__).resolve().parents[2] / "infra"
TEMPLATES = sorted(INFRA.glob("*.yaml"))


class _CfnLoader(yaml.SafeLoader):
    """Reads the short forms (!Ref, !Sub, ...) as plain values: enough to look at Metadata."""


_CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: (
    loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else
    loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode) else loader.construct_mapping(node)))


def load_template(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=_CfnLoader)


def checkov_binary() -> str:
    binary = os.environ.get("CHECKOV") or ("/tmp/checkovenv/bin/checkov" if Path("/tmp/checkovenv/bin/checkov").exists()
                                           else shutil.which("checkov"))
    if not binary:
        pytest.fail("checkov not found: python3 -m venv /tmp/checkovenv && "
                    "/tmp/checkovenv/bin/pip install -r infra/requirements-checkov.txt (or set CHECKOV)")
    return binary


def test_there_are_templates():
    assert [p.name for p in TEMPLATES] == ["clip-search.yaml"]


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_cfn_lint_reports_nothing(template):
    result = subprocess.run([str(Path(sys.executable).with_name("cfn-lint")), "--format", "parseable", str(template)],
                            capture_output=True, text=True)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_checkov_passes_every_template():
    result = subprocess.run([checkov_binary(), "--framework", "cloudformation", "--directory", str(INFRA),
                             "--output", "json", "--skip-download", "--quiet", "--compact"],
                            capture_output=True, text=True, env={**os.environ, "BC_SKIP_MAPPING": "TRUE"})
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [(c["check_id"], c["resource"], c["file_path"]) for r in reports for c in r["results"]["failed_checks"]]
    assert failed == [] and result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    passed = sum(r["summary"]["passed"] for r in reports)
    assert passed >= 50  # the checks ran over the resources (a parse failure passes nothing)


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_every_skipped_check_says_why(template):
    skips = []
    for name, resource in load_template(template)["Resources"].items():
        for skip in ((resource.get("Metadata") or {}).get("checkov") or {}).get("skip", []):
            skips.append((name, skip["id"], (skip.get("comment") or "").strip()))
    assert skips, "no skips found: the Metadata layout changed"
    assert [(name, check) for name, check, comment in skips if len(comment) < 30] == []
