"""The CloudFormation templates, installed as the package data of `model_build.infra` so that
`clip-search publish stack` finds them in any install, not only in a source checkout."""
