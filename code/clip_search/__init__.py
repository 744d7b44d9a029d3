"""clip-search: encode product images and free text into one CLIP embedding space."""
from pathlib import Path

__version__ = (Path(__file__).parent / "VERSION").read_text().strip()
