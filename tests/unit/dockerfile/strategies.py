"""Shared by tests: moved from test_dockerfile_errors_and_properties.py so that test modules never import each other."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from tests.support.testdata import TESTDATA

GOLDEN = TESTDATA / "dockerfile-v0.32.2"


CORPUS = (
    sorted((p / "Dockerfile").read_bytes() for p in GOLDEN.iterdir() if p.is_dir())
    if GOLDEN.is_dir()
    else []
)


_KEYWORDS = st.sampled_from(
    ["FROM", "RUN", "COPY", "ADD", "ENV", "ARG", "LABEL", "ONBUILD", "HEALTHCHECK", "SHELL",
     "CMD", "ENTRYPOINT", "EXPOSE", "VOLUME", "USER", "WORKDIR", "STOPSIGNAL", "MAINTAINER",
     "# escape=`", "# syntax=x", "--mount=type=cache,target=/x", "--from=0", "<<EOF", "EOF",
     "<<-'E'", "\\", "`", "${A:-b}", "${", '["a"', '["a", 1]', "'", '"', "\t", "\r\n", "\n", " ", "=",
     "--chown=a", "--link", "--network=host", "AS", "\ufeff", "#"]
)  # fmt: skip


_LINES = st.lists(st.one_of(_KEYWORDS, st.text(max_size=12)), max_size=30).map("".join)


PROPS = settings(max_examples=150, deadline=15_000, suppress_health_check=[HealthCheck.too_slow])
