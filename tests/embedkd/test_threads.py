"""How many torch threads a CPU job takes: what the environment says, else its share of an idle machine."""

from __future__ import annotations

import os

import pytest

from embedkd.threads import cpu_threads


@pytest.fixture
def machine(monkeypatch):
    """8 cores; `load` sets the load average."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)

    def load(value: float) -> None:
        monkeypatch.setattr(os, "getloadavg", lambda: (value, value, value))

    load(0.0)
    return load


def test_an_idle_machine_gives_all_cores_shared_among_torchrun_processes(machine, monkeypatch):
    assert cpu_threads() == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun, two processes on this machine
    assert cpu_threads() == 4


def test_a_loaded_machine_gives_one(machine):
    machine(8.5)
    assert cpu_threads() == 1


def test_omp_num_threads_is_respected(machine, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "many")  # not a count: ignored
    assert cpu_threads() == 8
