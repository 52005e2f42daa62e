"""Fixtures of the deployment tests: the chart rendered once per values set (the chart's
defaults and every ``helm/gears-h/ci/*-values.yaml``), with and without the ServiceMonitor CRD."""

from __future__ import annotations

import pytest
from deploy_kit import SERVICE_MONITOR_API, VALUES_IDS, Rendered, load_values, render
from optional_tools import require_module


@pytest.fixture(scope="session")
def releases() -> dict[str, Rendered]:
    """Each values set rendered for a cluster without the Prometheus operator CRDs."""
    require_module("helm_python")
    return {vid: render(load_values(vid)) for vid in VALUES_IDS}


@pytest.fixture(scope="session")
def releases_with_crd() -> dict[str, Rendered]:
    """Each values set rendered for a cluster that has the ServiceMonitor CRD."""
    require_module("helm_python")
    return {
        vid: render(load_values(vid), api_versions=(SERVICE_MONITOR_API,)) for vid in VALUES_IDS
    }
