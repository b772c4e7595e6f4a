"""Suite-wide rules.

With ``MASON_REQUIRE_INTEGRATION=1`` (set by CI) an integration test that is
skipped fails the run: a missing registry or runc must never pass silently.
"""

from __future__ import annotations

import os

import pytest

_skipped_integration: list[str] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "integration" in report.keywords:
        _skipped_integration.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("MASON_REQUIRE_INTEGRATION") == "1" and _skipped_integration:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                "MASON_REQUIRE_INTEGRATION=1 but integration tests were skipped: "
                + ", ".join(_skipped_integration[:10]),
                red=True,
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
