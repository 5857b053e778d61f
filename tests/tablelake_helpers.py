"""Configs for table-lake tests: a fresh warehouse prefix and namespace per test on the session's servers."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from costline.config import LakeConfig


def table_lake_config(objstore: Any, tmp_path: Path, catalog_uri: str | None = None) -> LakeConfig:
    ns = f"t{uuid.uuid4().hex[:10]}"
    return LakeConfig(
        path=tmp_path / "lake", mode="table",
        catalog_uri=catalog_uri or f"sqlite:///{tmp_path / 'catalog.db'}",
        namespace=ns, warehouse=f"s3://costline-lake/{ns}",
        s3_endpoint=objstore.endpoint, s3_access_key_id=objstore.access_key,
        s3_secret_access_key=objstore.secret_key, objstore_dir=tmp_path / "objstore",
    )
