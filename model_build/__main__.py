"""`python -m model_build STEP`: the same commands as `clip-search publish STEP`."""
from model_build.cli import publish

if __name__ == "__main__":
    publish(prog_name="python -m model_build")
