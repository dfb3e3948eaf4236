"""Prometheus metrics of the search service, scraped at `GET /metrics`: requests by route template, method
and status, their latency, and what the searcher holds (each loaded index's generation and vectors, filter
field memory). Route templates, not paths, label requests, so item ids do not make a series each."""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["instrument"]

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Held(Collector):
    """The searcher's state and the catalog's job counts, at scrape time (`Searcher.held`, `jobs.count_by_state`)."""

    def __init__(self, held, job_counts, write_counts, background_counts, kept_texts) -> None:
        self.held, self.job_counts, self.write_counts = held, job_counts, write_counts
        self.background_counts, self.kept_texts = background_counts, kept_texts

    def collect(self):
        jobs = GaugeMetricFamily("embedkd_jobs", "build and add jobs by state (alert on failed, interrupted)",
                                 labels=["state"])
        for name, n in self.job_counts().items():
            jobs.add_metric([name], n)
        yield jobs
        state: dict[str, Any] = self.held()
        generation = GaugeMetricFamily("embedkd_index_generation", "generation of each loaded index", labels=["index"])
        vectors = GaugeMetricFamily("embedkd_index_vectors", "vectors of each loaded index", labels=["index"])
        n_shards = GaugeMetricFamily("embedkd_index_shards", "shards of each loaded index (IVF and HNSW search pays "
                                     "per shard: `embedkd index compact` merges small ones)", labels=["index"])
        deleted = GaugeMetricFamily("embedkd_index_deleted_listed", "deleted vectors still in each loaded index's "
                                    "files, skipped by searches (`index compact` or `delete --purge` removes them)",
                                    labels=["index"])
        for name, row in sorted(state["indexes"].items()):
            generation.add_metric([name], row["generation"])
            vectors.add_metric([name], row["vectors"])
            n_shards.add_metric([name], row["shards"])
            deleted.add_metric([name], row["deleted_listed"])
        yield from (generation, vectors, n_shards, deleted)
        yield GaugeMetricFamily("embedkd_filter_field_bytes", "memory of the filter fields held",
                                value=state["filter_field_bytes"])
        yield GaugeMetricFamily("embedkd_filter_fields", "filter fields held (index, field)", value=state["filter_fields"])
        reads = CounterMetricFamily("embedkd_filter_field_reads", "filter fields read whole, or brought up to date "
                                    "by a write's changes", labels=["kind"])
        for kind in ("whole", "changes"):
            reads.add_metric([kind], state["field_reads"].get(kind, 0))
        yield reads
        counts = self.write_counts()
        requests = CounterMetricFamily("embedkd_write_requests", "HTTP write requests (documents added, items "
                                       "deleted)", labels=["kind"])
        writes = CounterMetricFamily("embedkd_index_writes", "index writes (generations) those requests were "
                                     "applied in: fewer than requests when concurrent ones are combined", labels=["kind"])
        refused = CounterMetricFamily("embedkd_write_refused", "HTTP write requests refused because "
                                      "too many already waited (409): send fewer, larger requests", labels=["kind"])
        for kind in ("add", "delete", "purge"):
            requests.add_metric([kind], counts.get(("requests", kind), 0))
            writes.add_metric([kind], counts.get(("writes", kind), 0))
            refused.add_metric([kind], counts.get(("refused", kind), 0))
        yield requests
        yield writes
        yield refused
        yield GaugeMetricFamily("embedkd_write_waiting", "HTTP write requests waiting behind a write now",
                                value=counts.get("waiting", 0))
        compactions = CounterMetricFamily("embedkd_auto_compactions", "background compactions (`serve --compact-every`) "
                                          "by outcome: done, busy (another process held the index: next round), "
                                          "failed (see the log)", labels=["outcome"])
        background = self.background_counts()
        for outcome in ("done", "busy", "failed"):
            compactions.add_metric([outcome], background["compactions"].get(outcome, 0))
        yield compactions
        gc = background["gc"]
        rounds = CounterMetricFamily("embedkd_gc_rounds", "background `index gc` rounds (`serve --gc-every`) by "
                                     "outcome: done, failed (see the log)", labels=["outcome"])
        for outcome in ("done", "failed"):
            rounds.add_metric([outcome], gc.get(outcome, 0))
        yield rounds
        yield CounterMetricFamily("embedkd_gc_removed_files", "files and folders background gc deleted (left by "
                                  "killed processes; each is in the log)", value=gc.get("removed_files", 0))
        yield CounterMetricFamily("embedkd_gc_removed_bytes", "bytes background gc deleted",
                                  value=gc.get("removed_bytes", 0))
        texts = self.kept_texts()
        kept = GaugeMetricFamily("embedkd_kept_text_bytes", "bytes on disk of the texts kept of each index's HTTP "
                                 "writes, for upgrades (`serve --no-keep-texts`: none)", labels=["index"])
        for name, row in sorted(texts["usage"].items()):
            kept.add_metric([name], row["bytes"])
        yield kept
        merges = CounterMetricFamily("embedkd_kept_text_merges", "background merges of kept texts by outcome: done, "
                                     "failed (see the log; the texts are all still there, in more files)",
                                     labels=["outcome"])
        for outcome in ("done", "failed"):
            merges.add_metric([outcome], texts["merges"].get(outcome, 0))
        yield merges


def instrument(app: FastAPI, held, job_counts, write_counts, background_counts, kept_texts) -> None:
    """Count and time every request of `app` and serve them at /metrics with `held()`'s state,
    `job_counts()`, `write_counts()` (`WriteQueue.counts`), `background_counts()` ({"compactions":
    `AutoCompactor.counts`, "gc": `AutoCollector.counts`}) and
    `kept_texts()` ({"usage": bytes and files by index, "merges": outcomes}, `text_log`)."""
    registry = CollectorRegistry()
    requests = Counter("embedkd_http_requests", "HTTP requests", ["route", "method", "status"], registry=registry)
    seconds = Histogram("embedkd_http_request_seconds", "HTTP request latency", ["route", "method"],
                        buckets=_BUCKETS, registry=registry)
    registry.register(_Held(held, job_counts, write_counts, background_counts, kept_texts))

    @app.middleware("http")
    async def measure(request: Request, call_next):
        t0, status = time.perf_counter(), 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            requests.labels(template, request.method, str(status)).inc()
            seconds.labels(template, request.method).observe(time.perf_counter() - t0)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
