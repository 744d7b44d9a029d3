"""The demo catalogue shipped with the package: 81 catalogue photos and descriptions of the Grocery
Store Dataset (Klasson, Zhang, Kjellstrom, WACV 2019; MIT, see grocery/LICENSE). `clip-search demo`
indexes it, and packaging uses its photos and titles as the default accuracy-guard calibration set."""
from pathlib import Path

GROCERY = Path(__file__).resolve().parent / "grocery"
