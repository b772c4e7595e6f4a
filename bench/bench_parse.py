"""Times parsing of a ~1 MiB Dockerfile (not a test). Usage: python bench/bench_parse.py [MiB]

Prints seconds for parse_dockerfile (parser + instruction layer), for
expanding every command, and for one 1 MiB logical line made of 15 000
continuation lines, to show the work grows linearly with the input.
"""

from __future__ import annotations

import sys
import time

from mason.dockerfile import expand_command, parse_dockerfile

BLOCK = (
    "# build step {i}\n"
    "FROM alpine:3.18 AS s{i}\n"
    "ARG V{i}=1.{i}\n"
    'ENV A{i}="x y" B{i}=${{V{i}:-none}} PATH=/usr/local/bin:$PATH\n'
    'LABEL org.example.step={i} description="step {i}"\n'
    "RUN --mount=type=cache,target=/var/cache/apk,id=apk{i} \\\n"
    "    apk add --no-cache curl git \\\n"
    "    && echo step {i} > /tmp/{i}\n"
    "COPY --chown=1000:1000 --from=s{i} src/ /app/src/{i}/\n"
    "RUN <<EOF\n"
    "echo heredoc {i}\n"
    "EOF\n"
    'CMD ["sh", "-c", "echo {i}"]\n'
)


def main() -> None:
    mib = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    parts: list[str] = []
    size = 0
    i = 0
    while size < mib * 1024 * 1024:
        block = BLOCK.format(i=i)
        parts.append(block)
        size += len(block)
        i += 1
    data = "".join(parts).encode()

    t0 = time.perf_counter()
    df = parse_dockerfile(data)
    t1 = time.perf_counter()
    n = 0
    for st in df.stages:
        for cmd in st.commands:
            expand_command(cmd, {"PATH": "/bin"}, df.escape)
            n += 1
    t2 = time.perf_counter()
    print(f"input: {len(data) / 1048576:.2f} MiB, {len(df.stages)} stages, {n} commands")
    print(f"parse_dockerfile: {t1 - t0:.3f} s")
    print(f"expand all commands: {t2 - t1:.3f} s")

    long_line = (
        b"FROM a\nRUN true"
        + b" \\\n  && echo 0123456789012345678901234567890123456789012345678901234567" * 15000
        + b"\n"
    )
    t3 = time.perf_counter()
    parse_dockerfile(long_line)
    t4 = time.perf_counter()
    print(f"one {len(long_line) / 1048576:.2f} MiB logical line: {t4 - t3:.3f} s")


if __name__ == "__main__":
    main()
