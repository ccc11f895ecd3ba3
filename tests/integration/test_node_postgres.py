"""`srnode serve` and a `srnode worker` on one PostgreSQL database (a throwaway database per
run): every job is claimed by exactly one of them and every derived instance arrives."""

from __future__ import annotations

import shutil

import pytest

from tests.node_helpers import (
    STORESCP,
    STORESCU,
    dest_config,
    free_port,
    pg_database,
    received,
    start_node,
    start_storescp,
    storescu,
    wait_for,
    write_config,
    write_series,
)
from tests.onnx_models import write_test_model

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not all(shutil.which(p) for p in (STORESCU, STORESCP)), reason="dcmtk missing"
    ),
]


@pytest.fixture
def pg_url():
    url, drop = pg_database()
    if url is None:
        pytest.skip(drop)
    yield url
    drop()


def test_serve_and_worker_share_a_postgresql_queue(tmp_path, pg_url):
    card = write_test_model(tmp_path / "models")
    port, dport = free_port(), free_port()
    dest = dest_config(dport)
    cfg = write_config(
        tmp_path / "srnode.toml",
        data_dir=tmp_path / "data",
        port=port,
        model_card=card,
        destinations=[dest],
        stable_age=1.0,
        database_url=pg_url,
    )
    scp = start_storescp(tmp_path / "out", dport, tmp_path / "storescp.log")
    node = start_node(tmp_path / "node.log", "--config", str(cfg))
    worker = start_node(tmp_path / "worker.log", "--config", str(cfg), command="worker")
    try:
        studies = []
        files = []
        for i in range(6):
            study, _, f = write_series(tmp_path / f"s{i}", "CT_small.dcm", 2)
            studies.append(study)
            files += f
        assert storescu(port, files).returncode == 0
        got = wait_for(
            lambda: (
                (
                    g := [
                        d
                        for d in received(tmp_path / "out").values()
                        if str(d.StudyInstanceUID) in studies
                    ]
                )
                and len(g) >= 12
                and g
            ),
            120,
            what="12 derived instances",
        )
        assert len(got) == 12
        from dicom_node.store.database import Database
        from dicom_node.store.schema import Export, Job

        d = Database(pg_url)
        try:
            wait_for(lambda: d.queue_counts()["done"] == 6, 30, what="6 jobs done")
            with d.session() as s:
                jobs = s.query(Job).all()
                assert len(jobs) == 6
                assert all(j.attempts == 1 for j in jobs)  # each processed exactly once
                exports = s.query(Export).all()
                assert sorted(e.job_id for e in exports) == sorted(j.id for j in jobs)
                assert all(e.sent_count == 2 and e.attempts == 1 for e in exports)
        finally:
            d.close()
        assert worker.alive(), worker.text()[-2000:]
    finally:
        worker.close()
        node.close()
        scp.close()
