"""The HTTP service over a real socket: the same results as the library, 4xx with one line on bad input."""

from __future__ import annotations

import httpx
import pytest

from indexer.build import build_index
from indexer.corpus import Corpora, ListSource, read_corpus
from indexer.search import Searcher
from indexer.service import create_app

from .helpers import run_concurrently, serving


@pytest.fixture
def server(sqlite_catalog, minilm, beir_small):
    docs = list(read_corpus(beir_small))[:25]
    build_index(sqlite_catalog, "web", minilm, ListSource(docs), progress=False)
    # as `embedkd serve` does: concurrent requests share query encodings
    searcher = Searcher(sqlite_catalog, lambda _s: minilm, query_batch=16)
    with serving(create_app(searcher)) as url:
        yield url, searcher, docs


def test_concurrent_requests_get_their_own_results(server, minilm):
    """Eight clients at once: each gets what the library gives for its query alone, though they share encodings."""
    base, searcher, docs = server
    queries = [d.content for d in docs[:8]]
    want = [[h.id for h in searcher.search("web", [q], k=3)[0]] for q in queries]

    def client(q: str) -> list[str]:
        r = httpx.post(f"{base}/search", json={"index": "web", "query": q, "k": 3}, timeout=60)
        return [h["id"] for h in r.json()["results"]]

    got = run_concurrently(client, queries)
    assert got == want and [g[0] for g in got] == [d.id for d in docs[:8]]
    assert sum(searcher.encoder(minilm.record.source).batch_sizes) == 2 * len(queries)  # every query went through the batcher


def test_http_endpoints(server):
    base, searcher, docs = server
    with httpx.Client(base_url=base, timeout=30) as c:
        assert c.get("/health").json() == {"status": "ok", "indexes": 1}
        (row,) = c.get("/indexes").json()["indexes"]
        assert row["name"] == "web" and row["count"] == 25 and row["dimension"] == 384
        assert (row["shards"], row["deleted_listed"], row["compaction_need"], row["compacting"]) == (1, 0, None, None)
        r = c.post("/search", json={"index": "web", "query": docs[4].content, "k": 5})
        assert r.status_code == 200
        got = r.json()["results"]
        want = [h.as_dict() for h in searcher.search("web", [docs[4].content], k=5)[0]]
        assert [g["id"] for g in got] == [w["id"] for w in want] and got[0]["id"] == docs[4].id
        assert abs(got[0]["score"] - want[0]["score"]) < 1e-5
        assert c.get("/search", params={"index": "web", "q": docs[4].content, "k": 2}).json()["results"][0]["id"] == docs[4].id
        item = c.get(f"/items/{docs[4].id}", params={"index": "web"}).json()
        assert item["id"] == docs[4].id and item["info"]["title"]
        assert "/search" in c.get("/openapi.json").json()["paths"]
        (job,) = c.get("/jobs", params={"index": "web"}).json()["jobs"]
        assert (job["kind"], job["state"], job["progress"], job["stored_bytes"]) == ("build", "done", 25, 0)
        bad = c.get("/jobs", params={"state": "lost"})
        assert bad.status_code == 400 and "not one of" in bad.json()["detail"]



def test_metrics_count_requests_by_route_and_show_what_is_held(server):
    base, searcher, docs = server
    with httpx.Client(base_url=base, timeout=30) as c:
        for _ in range(3):
            assert c.post("/search", json={"index": "web", "query": "statins", "k": 2}).status_code == 200
        assert c.get("/items/nope", params={"index": "web"}).status_code == 404
        assert c.get("/items/x1", params={"index": "web"}).status_code == 404
        assert c.get("/no/such/route").status_code == 404
        c.post("/search", json={"index": "web", "query": "statins", "k": 2, "where": {"title": {"not_in": ["x"]}}})
        text = c.get("/metrics").text
    counts = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert counts['embedkd_http_requests_total{method="POST",route="/search",status="200"}'] == 4
    assert counts['embedkd_http_requests_total{method="GET",route="/items/{item_id}",status="404"}'] == 2  # one series
    assert counts['embedkd_http_requests_total{method="GET",route="unmatched",status="404"}'] == 1
    assert counts['embedkd_http_request_seconds_count{method="POST",route="/search"}'] == 4
    assert counts['embedkd_index_generation{index="web"}'] == 1 and counts['embedkd_index_vectors{index="web"}'] == 25
    assert counts['embedkd_index_shards{index="web"}'] == 1 and counts['embedkd_index_deleted_listed{index="web"}'] == 0
    assert counts["embedkd_filter_fields"] == 1 and counts["embedkd_filter_field_bytes"] > 25 * 8
    assert counts['embedkd_jobs{state="done"}'] == 1 and counts['embedkd_jobs{state="failed"}'] == 0
    assert counts['embedkd_filter_field_reads_total{kind="whole"}'] == 1


@pytest.mark.parametrize(
    "body,status,needle",
    [
        ({"index": "web", "query": "", "k": 3}, 400, "empty"),
        ({"index": "web", "query": "x", "k": 0}, 400, "positive"),
        ({"index": "web", "query": "x", "k": 10**6}, 400, "too large"),
        ({"index": "nope", "query": "x", "k": 3}, 404, "no index named"),
        ({"index": "web", "query": "x", "k": 3, "query_model": "/no/such/model"}, 400, "does not exist"),
    ],
)
def test_http_bad_input(server, body, status, needle):
    base, searcher, _ = server
    searcher._encoder_for = _loader_failing_for_other(searcher._encoder_for)
    r = httpx.post(f"{base}/search", json=body, timeout=30)
    assert r.status_code == status and needle in r.json()["detail"]
    assert "\n" not in r.json()["detail"]


def _loader_failing_for_other(load):
    from embedkd.text_encoder import load_text_encoder

    def wrapped(source):
        return load_text_encoder(source) if source.startswith("/no/") else load(source)

    return wrapped


def test_unknown_item_is_404(server):
    base, _, _ = server
    assert httpx.get(f"{base}/items/none", params={"index": "web"}, timeout=30).status_code == 404


def test_concurrent_writes_are_all_applied(server):
    """Six clients add a document each at once: none is refused, and queued requests share writes."""
    base, searcher, _ = server

    def post(i: int) -> dict:
        with httpx.Client(base_url=base, timeout=120) as c:
            r = c.post("/indexes/web/documents", json={"documents": [{"_id": f"c{i}", "text": f"Concurrent note {i}."}]})
            assert r.status_code == 200, r.text
            return r.json()

    out = run_concurrently(post, list(range(6)))
    assert all(isinstance(o, dict) for o in out), out
    writes = {o["generation"]: o["requests"] for o in out}
    assert sum(writes.values()) == 6  # each request in exactly one write, each write counted by its requests
    with httpx.Client(base_url=base, timeout=120) as c:
        assert c.get("/indexes").json()["indexes"][0]["count"] == 31
        for i in range(6):
            assert c.get(f"/items/c{i}", params={"index": "web"}).status_code == 200
        text = c.get("/metrics").text
    counts = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert counts['embedkd_write_requests_total{kind="add"}'] == 6
    assert counts['embedkd_index_writes_total{kind="add"}'] == len(writes)  # one per generation made
    assert counts['embedkd_write_requests_total{kind="delete"}'] == 0
    assert counts['embedkd_write_refused_total{kind="add"}'] == 0 and counts["embedkd_write_waiting"] == 0


def _deleted_listed(catalog, name: str) -> list[list[int]]:
    """Each shard's deleted ids still in its file, as the index's manifest lists them."""
    import json

    from indexer.catalog import get_index

    with catalog.session() as s:
        file = get_index(s, name).file
    manifest = json.loads((catalog.settings.index_dir / name / file).read_text())
    return [e.get("deleted", []) for e in manifest["shards"]]


def test_documents_are_added_and_deleted_over_http(server):
    base, searcher, docs = server
    new = {"_id": "n1", "title": "Statin therapy", "text": "Statins lower cholesterol and heart attack risk.",
           "metadata": {"source": "http"}}
    changed = {"_id": docs[0].id, "text": "A document about deep-sea octopus camouflage."}
    with httpx.Client(base_url=base, timeout=120) as c:
        out = c.post("/indexes/web/documents", json={"documents": [new, changed]}).json()
        assert (out["added"], out["updated"], out["count"], out["generation"]) == (1, 1, 26, 2)
        hits = c.post("/search", json={"index": "web", "query": "octopus camouflage", "k": 1}).json()["results"]
        assert hits[0]["id"] == docs[0].id
        hits = c.get("/search", params={"index": "web", "q": "statins cholesterol", "k": 3, "where": "metadata.source=http"})
        assert [h["id"] for h in hits.json()["results"]] == ["n1"]
        assert c.delete("/indexes/web/items/n1").json()["deleted"] == 1
        assert c.get("/items/n1", params={"index": "web"}).status_code == 404
        assert _deleted_listed(searcher.catalog, "web") == [[0], []]  # the changed document's old vector: skipped
        c.post("/search", json={"index": "web", "query": "statins", "k": 1})  # the service loads this generation
        metrics = c.get("/metrics").text
        assert 'embedkd_index_shards{index="web"} 2.0' in metrics
        assert 'embedkd_index_deleted_listed{index="web"} 1.0' in metrics
        assert c.delete(f"/indexes/web/items/{docs[1].id}", params={"purge": "true"}).json()["count"] == 24
        assert _deleted_listed(searcher.catalog, "web") == [[], []]  # purged: shard 0 rewritten without both
        for body, status, needle in (({"documents": []}, 400, "send 1 to 10000 documents"),
                                     ({"documents": [{"text": "x"}]}, 400, "document 1 has no id"),
                                     ({"documents": [{"id": "e", "text": " "}]}, 400, "neither title nor text"),
                                     ({"documents": [{"id": "d", "text": "x"}, {"id": "d", "text": "y"}]}, 400,
                                      "document id 'd' appears twice in this request")):
            r = c.post("/indexes/web/documents", json=body)
            assert r.status_code == status and needle in r.json()["detail"], r.text
        assert c.post("/indexes/nope/documents", json={"documents": [new]}).status_code == 404
        r = c.delete("/indexes/web/items/none")
        assert r.status_code == 400 and "has no item with id 'none'" in r.json()["detail"]
    with searcher.catalog.session() as s:
        from indexer.catalog import get_index

        assert get_index(s, "web").count == 24


def test_a_write_on_a_full_disk_is_507_and_changes_nothing_until_sent_again(server, monkeypatch):
    """The server keeps an HTTP write's texts before it commits it: when they cannot be written, nothing is, and
    the client learns why and that it may send the request again."""
    from indexer import text_log
    from tests.indexer.helpers import snapshot

    base, searcher, docs = server
    real = text_log._write

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    before = snapshot(searcher.catalog)
    monkeypatch.setattr(text_log, "_write", full)
    new = {"_id": "n1", "text": "Statins lower cholesterol and heart attack risk."}
    with httpx.Client(base_url=base, timeout=120) as c:
        r = c.post("/indexes/web/documents", json={"documents": [new]})
        assert r.status_code == 507, r.text
        assert "No space left on device; send the request again once it has free disk space" in r.json()["detail"]
        assert snapshot(searcher.catalog) == before
        monkeypatch.setattr(text_log, "_write", real)
        assert c.post("/indexes/web/documents", json={"documents": [new]}).json()["added"] == 1
    assert [d.id for d in Corpora(text_log.files(searcher.catalog, "web"))] == ["n1"]
