"""Make ``import botpress_qna`` (and the core's ``botpress_py``) work when pytest runs from anywhere."""

from __future__ import annotations

import sys
from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = MODULE_DIR.parents[1]

for folder in (MODULE_DIR, REPO_ROOT):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
