"""Build checks: BuildKit v0.32.2's Dockerfile linter (frontend 1.26, the non-experimental rules).

Pure: it sees the parsed Dockerfile (through a :class:`BuildPlan`), the build
args and the facts the builder passes in (each base image's config, the
.dockerignore rules, the target platform); never files or the network.

``check_config(df, build_args)`` reads ``BUILDKIT_DOCKERFILE_CHECK`` (a build
arg, which wins) or the ``# check=`` directive: ``skip=Rule1,Rule2`` or
``skip=all``, ``error=true``, ``experimental=…`` separated by ``;``. A comment
``# check=skip=Rule`` right above an instruction skips rules for that
instruction only. ``run_checks(plan, …)`` returns a :class:`CheckReport`: the
warnings in the order BuildKit emits them (parse-time rules, then stage by
stage, command by command), each with BuildKit's rule name, description, docs
URL, message and lines; ``report.error_message`` is BuildKit's ``lint
violation found for rules: …`` when ``error=true`` and a rule fired.
``format_check_output(report, df)`` is what ``docker buildx build --check``
prints. Only :class:`DockerfileError` is ever raised (a bad check option).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from mason.dockerfile._refplat import format_platform, parse_platform, valid_reference
from mason.dockerfile._support import suggest
from mason.dockerfile._text import go_quote, go_trim_left, go_trim_space
from mason.dockerfile.document import Dockerfile
from mason.dockerfile.errors import DockerfileError
from mason.dockerfile.expand import expand_command
from mason.dockerfile.instructions import (
    AddCommand,
    ArgCommand,
    CmdCommand,
    Command,
    CopyCommand,
    EntrypointCommand,
    EnvCommand,
    ExposeCommand,
    HealthcheckCommand,
    LabelCommand,
    ShellCommand,
    WorkdirCommand,
)
from mason.dockerfile.parser import Node
from mason.dockerfile.shell import ShellLexer, ShellLexError
from mason.dockerfile.stages import PREDEFINED_ARGS, BuildPlan, PlannedStage
from mason.structs import Struct, field, replace

__all__ = [
    "CHECK_BUILD_ARG",
    "RULES",
    "BaseImageConfig",
    "CheckConfig",
    "CheckReport",
    "CheckWarning",
    "IgnoreRules",
    "Rule",
    "check_config",
    "format_check_output",
    "parse_check_options",
    "run_checks",
]

CHECK_BUILD_ARG = "BUILDKIT_DOCKERFILE_CHECK"
_DOCS = "https://docs.docker.com/go/dockerfile/rule/"
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: build args that never reach a RUN's environment
_NON_ENV_ARGS = frozenset({"BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"})
_RESERVED_STAGE_NAMES = ("context", "scratch")


class Rule(Struct, frozen=True):
    name: str
    description: str
    url: str


def _kebab(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", name).lower()


def _rules(*items: tuple[str, str]) -> dict[str, Rule]:
    out = {n: Rule(n, d, _DOCS + _kebab(n) + "/") for n, d in items}
    out["InvalidBaseImagePlatform"] = replace(
        out["InvalidBaseImagePlatform"], url=""
    )  # BuildKit has no page
    return out


#: BuildKit v0.32.2's rule set (``frontend/dockerfile/linter/ruleset.go``), experimental rules left out
RULES: dict[str, Rule] = _rules(
    ("StageNameCasing", "Stage names should be lowercase"),
    ("FromAsCasing", "The 'as' keyword should match the case of the 'from' keyword"),
    ("NoEmptyContinuation", "Empty continuation lines will become errors in a future release"),
    ("ConsistentInstructionCasing",
     "All commands within the Dockerfile should use the same casing (either upper or lower)"),
    ("DuplicateStageName", "Stage names should be unique"),
    ("ReservedStageName", "Reserved words should not be used as stage names"),
    ("JSONArgsRecommended",
     "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals"),
    ("MaintainerDeprecated",
     "The MAINTAINER instruction is deprecated, use a label instead to define an image author"),
    ("UndefinedArgInFrom", "FROM command must use declared ARGs"),
    ("WorkdirRelativePath",
     "Relative workdir without an absolute workdir declared within the build can have unexpected results "
     "if the base image changes"),
    ("UndefinedVar", "Variables should be defined before their use"),
    ("MultipleInstructionsDisallowed", "Multiple instructions of the same type should not be used in the same stage"),
    ("LegacyKeyValueFormat", "Legacy key/value format with whitespace separator should not be used"),
    ("InvalidBaseImagePlatform", "Base image platform does not match expected target platform"),
    ("RedundantTargetPlatform",
     "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior"),
    ("SecretsUsedInArgOrEnv", "Sensitive data should not be used in the ARG or ENV commands"),
    ("InvalidDefaultArgInFrom", "Default value for global ARG results in an empty or invalid base image name"),
    ("FromPlatformFlagConstDisallowed", "FROM --platform flag should not use a constant value"),
    ("CopyIgnoredFile", "Attempting to Copy file that is excluded by .dockerignore"),
    ("ExposeProtoCasing", "Protocol in EXPOSE instruction should be lowercase"),
    ("ExposeInvalidFormat",
     "IP address and host-port mapping should not be used in EXPOSE instruction. "
     "This will become an error in a future release"),
)  # fmt: skip


class CheckWarning(Struct, frozen=True):
    """One rule violation. ``lines`` is BuildKit's location (first to last line)."""

    rule: str
    description: str
    url: str
    message: str
    lines: tuple[int, ...]

    @property
    def line(self) -> int:
        return self.lines[0] if self.lines else 0

    @property
    def short(self) -> str:
        """``Rule: message (line N)``, what a build's progress prints after ``WARN:``."""
        text = f"{self.rule}: {self.message}"
        return f"{text} (line {self.line})" if self.line > 0 else text


# ---------------------------------------------------------------------------
# configuration


class CheckConfig(Struct, frozen=True):
    skip: frozenset[str] = frozenset()
    skip_all: bool = False
    error: bool = False
    experimental: frozenset[str] = frozenset()
    experimental_all: bool = False

    def enabled(self, rule: str) -> bool:
        return not self.skip_all and rule not in self.skip

    def merged(self, other: CheckConfig) -> CheckConfig:
        """``WithMergedConfig``: skips and experiments add up; ``error`` stays this config's."""
        return replace(
            self, skip=self.skip | other.skip, skip_all=self.skip_all or other.skip_all,
            experimental=self.experimental | other.experimental,
            experimental_all=self.experimental_all or other.experimental_all,
        )  # fmt: skip


class _OptionError(Exception):
    pass


_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def _rule_list(value: str) -> tuple[bool, frozenset[str]]:
    value = go_trim_space(value)
    if value == "all":
        return True, frozenset()
    return False, frozenset(go_trim_space(r) for r in value.split(","))


def parse_check_options(text: str) -> CheckConfig:
    """``ParseLintOptions``: ``skip=…;error=…;experimental=…`` (raises DockerfileError)."""
    text = go_trim_space(text)
    if not text:
        return CheckConfig()
    cfg = CheckConfig()
    for part in text.split(";", 2):
        key, eq, value = part.partition("=")
        if not eq:
            raise _OptionError(f"invalid check option {go_quote(part)}")
        key = go_trim_space(key)
        if key == "skip":
            skip_all, rules = _rule_list(value)
            cfg = replace(cfg, skip_all=skip_all, skip=rules)
        elif key == "experimental":
            exp_all, rules = _rule_list(value)
            cfg = replace(cfg, experimental_all=exp_all, experimental=rules)
        elif key == "error":
            v = go_trim_space(value)
            if v not in _GO_TRUE and v not in _GO_FALSE:
                raise _OptionError(
                    f"failed to parse check option {go_quote(part)}: "
                    f"strconv.ParseBool: parsing {go_quote(v)}: invalid syntax"
                )
            cfg = replace(cfg, error=v in _GO_TRUE)
        else:
            raise _OptionError(f"invalid check option {go_quote(key)}")
    return cfg


_BOM = b"\xef\xbb\xbf"
_RE_DIRECTIVE = re.compile(
    r"([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*\Z", re.DOTALL
)
_DIRECTIVES = frozenset({"syntax", "escape", "check"})


def _directive(text: str) -> tuple[str, str] | None:
    m = _RE_DIRECTIVE.match(go_trim_left(text))
    if m is None or m.group(1).lower() not in _DIRECTIVES:
        return None
    return m.group(1).lower(), m.group(2)


def _check_directive(data: bytes) -> tuple[str, int] | None:
    """``ParseDirective("check", …)``: the first word of the directive's value and its line."""
    data = data.removeprefix(_BOM)
    line = 0
    first, _, rest = data.partition(b"\n")
    if first.startswith(b"#!"):
        data, line = rest, 1
    for raw in data.split(b"\n"):
        line += 1
        text = raw.decode("utf-8", "surrogateescape").removesuffix("\r")
        if not text.startswith("#"):
            return None
        d = _directive(text[1:])
        if d is None:
            return None
        if d[0] == "check":
            return d[1].split(" ", 1)[0], line
    return None


def check_config(df: Dockerfile, build_args: Mapping[str, str]) -> CheckConfig:
    """The build's check configuration: the ``BUILDKIT_DOCKERFILE_CHECK`` build arg, else ``# check=``."""
    if CHECK_BUILD_ARG in build_args:
        try:
            return parse_check_options(build_args[CHECK_BUILD_ARG])
        except _OptionError as exc:
            raise DockerfileError(
                f"failed to parse build-arg:{CHECK_BUILD_ARG}: {exc}",
                file=df.path,
                section="checks",
                hint="e.g. skip=JSONArgsRecommended;error=true",
            ) from None
    found = _check_directive(df.raw)
    if found is None:
        return CheckConfig()
    try:
        return parse_check_options(found[0])
    except _OptionError as exc:
        raise DockerfileError(
            f"failed to parse check options: {exc}",
            file=df.path,
            lines=(found[1],),
            section="checks",
            hint="e.g. # check=skip=JSONArgsRecommended;error=true",
        ) from None


def _comment_config(base: CheckConfig, comments: Sequence[str]) -> CheckConfig:
    """``WithMergedConfigFromComments``: the first ``check=`` comment above an instruction."""
    for comment in comments:
        d = _directive(comment)
        if d is None or d[0] != "check":
            continue
        try:
            return base.merged(parse_check_options(d[1].split(" ", 1)[0]))
        except _OptionError:
            return base
    return base


# ---------------------------------------------------------------------------
# facts from the builder


#: The config of a stage's base image (``os``, ``architecture``, ``variant``, ``config.Env``,
#: ``config.Shell``), or None for ``scratch`` or an image the builder could not resolve.
BaseImageConfig = Callable[[PlannedStage], Mapping[str, Any] | None]


class IgnoreRules(Protocol):
    """.dockerignore as the builder holds it (``mason.engine.context.DockerIgnore``)."""

    def ignored(self, rel: str) -> bool: ...

    @property
    def empty(self) -> bool: ...

    @property
    def has_exceptions(self) -> bool: ...


class CheckReport(Struct, frozen=True):
    config: CheckConfig
    warnings: tuple[CheckWarning, ...]

    @property
    def rules(self) -> tuple[str, ...]:
        """The rules that fired, each once, in order of first appearance."""
        return tuple(dict.fromkeys(w.rule for w in self.warnings))

    @property
    def error_message(self) -> str | None:
        """BuildKit's error when ``error=true`` and a rule fired, else None."""
        if not self.config.error or not self.warnings:
            return None
        return "lint violation found for rules: " + ", ".join(self.rules)


# ---------------------------------------------------------------------------
# the linter


class _Lint:
    def __init__(self, config: CheckConfig) -> None:
        self.config = config
        self.warnings: list[CheckWarning] = []

    def run(
        self, name: str, lines: Sequence[int], message: str, config: CheckConfig | None = None
    ) -> None:
        if not (config or self.config).enabled(name):
            return
        rule = RULES[name]
        self.warnings.append(CheckWarning(name, rule.description, rule.url, message, tuple(lines)))


class _RecordingEnv(Mapping[str, str]):
    """An environment that records which names a word looked up, found or not."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.matched: dict[str, None] = {}
        self.unmatched: dict[str, None] = {}

    def __getitem__(self, key: str) -> str:
        if key in self.env:
            self.matched[key] = None
            return self.env[key]
        self.unmatched[key] = None
        raise KeyError(key)

    def __iter__(self) -> Any:
        return iter(self.env)

    def __len__(self) -> int:
        return len(self.env)

    def __contains__(self, key: object) -> bool:
        return key in self.env


def _expand_word(
    word: str, env: Mapping[str, str], escape: str
) -> tuple[str, _RecordingEnv] | None:
    rec = _RecordingEnv(env)
    try:
        return ShellLexer(escape).process_word(word, rec), rec
    except ShellLexError:
        return None


class _StageState(Struct):
    """What BuildKit's dispatch state knows while it walks a stage's commands."""

    env: dict[str, str]
    env_known: bool
    declared: list[str]
    shell: bool
    workdir_set: bool
    used_once: dict[str, tuple[int, ...]] = field(default_factory=dict)


class _Checker:
    def __init__(
        self,
        plan: BuildPlan,
        config: CheckConfig,
        *,
        predefined: Mapping[str, str],
        base_config: BaseImageConfig | None,
        ignore: IgnoreRules | None,
        platform: str,
    ) -> None:
        self.plan = plan
        self.df = plan.dockerfile
        self.lint = _Lint(config)
        self.base_config = base_config
        self.ignore = ignore
        self.platform = platform
        self.nodes: dict[int, Node] = {n.start_line: n for n in self.df.nodes}
        target = plan.all_stages[plan.target].stage.name if plan.all_stages else ""
        extra = {"BUILDOSVERSION": "", "TARGETOSVERSION": "", "TARGETSTAGE": target or "default"}
        self.predefined = {**extra, **predefined}
        self.global_env = {**extra, **{k: v for k, v in plan.global_args if v is not None}}
        self.global_keys = set(self.global_env) | {a.key for m in self.df.meta_args for a in m.args}
        self.build_args = dict(plan.build_args)
        self.states: dict[int, _StageState] = {}

    def comments(self, line: int) -> tuple[str, ...]:
        node = self.nodes.get(line)
        return node.prev_comment if node is not None else ()

    def config_at(self, line: int) -> CheckConfig:
        return _comment_config(self.lint.config, self.comments(line))

    # -- parse time (every stage) ------------------------------------------------

    def parse_time(self) -> None:
        for w in self.df.warnings:
            self.lint.run("NoEmptyContinuation", (w.line,), "Empty continuation line")
        for node in self.df.nodes:
            cfg = _comment_config(self.lint.config, node.prev_comment)
            if node.keyword == "maintainer":
                self.lint.run(
                    "MaintainerDeprecated",
                    (node.start_line, node.end_line),
                    "Maintainer instruction is deprecated in favor of using label",
                    cfg,
                )
            elif node.keyword == "from":
                self.from_casing(node, cfg)
        self.stage_names()
        self.command_casing()
        self.default_args_in_from()

    def from_casing(self, node: Node, cfg: CheckConfig) -> None:
        args = node.args
        loc = (node.start_line, node.end_line)
        if len(args) == 3 and args[2] != args[2].lower():
            self.lint.run(
                "StageNameCasing", loc, f"Stage name '{args[2]}' should be lowercase", cfg
            )
        if len(args) >= 3:
            cmd = node.value
            lower, upper = cmd == cmd.lower(), cmd == cmd.upper()
            if (lower and args[1] != args[1].lower()) or (
                not lower and upper and args[1] != args[1].upper()
            ):
                self.lint.run(
                    "FromAsCasing",
                    loc,
                    f"'{args[1]}' and '{cmd}' keywords' casing do not match",
                    cfg,
                )

    def stage_names(self) -> None:
        seen: set[str] = set()
        for st in self.df.stages:
            if not st.name:
                continue
            loc = (st.start_line, st.end_line)
            if st.name in _RESERVED_STAGE_NAMES:
                self.lint.run(
                    "ReservedStageName",
                    loc,
                    f"Stage name should not use the same name as reserved stage {go_quote(st.name)}",
                )
            if st.name in seen:
                self.lint.run(
                    "DuplicateStageName",
                    loc,
                    f"Duplicate stage name {go_quote(st.name)}, stage names should be unique",
                )
            seen.add(st.name)

    def command_casing(self) -> None:
        named: list[tuple[str, tuple[int, int]]] = []
        for st in self.df.stages:
            node = self.nodes.get(st.start_line)
            named.append((node.value if node is not None else "FROM", (st.start_line, st.end_line)))
            named.extend((c.name, (c.start_line, c.end_line)) for c in st.commands)
        lower = sum(1 for n, _ in named if n == n.lower())
        upper = sum(1 for n, _ in named if n != n.lower() and n == n.upper())
        majority_lower = lower > upper
        for name, loc in named:
            if majority_lower and name.lower() != name:
                casing = "lowercase"
            elif not majority_lower and name.upper() != name:
                casing = "uppercase"
            else:
                continue
            self.lint.run(
                "ConsistentInstructionCasing",
                loc,
                f"Command '{name}' should match the case of the command majority ({casing})",
            )

    def default_args_in_from(self) -> None:
        """InvalidDefaultArgInFrom: the base names with the meta ARGs' defaults only."""
        lexer = ShellLexer(self.df.escape)
        env = dict(self.predefined)
        try:
            for meta in self.df.meta_args:
                for a in meta.args:
                    if a.value is not None:
                        env[a.key] = lexer.process_word(a.value, env)
            names = [(st, lexer.process_word(st.base_name, env)) for st in self.df.stages]
        except ShellLexError:
            return
        for st, name in names:
            if not valid_reference(name):
                self.lint.run(
                    "InvalidDefaultArgInFrom",
                    (st.start_line, st.end_line),
                    f"Default value for ARG {st.base_name} results in empty or invalid base image name",
                )

    # -- FROM lines (every stage) ------------------------------------------------

    def from_lines(self) -> None:
        for ps in self.plan.all_stages:
            st = ps.stage
            cfg = self.config_at(st.start_line)
            loc = (st.start_line, st.end_line)
            base = _expand_word(st.base_name, self.global_env, self.df.escape)
            if base is None:
                return
            self.undefined_in_from(base[1], loc, cfg)
            if not st.platform:
                continue
            plat = _expand_word(st.platform, self.global_env, self.df.escape)
            if plat is None:
                return
            result, rec = plat
            self.undefined_in_from(rec, loc, cfg)
            if (
                list(rec.matched) == ["TARGETPLATFORM"]
                and not rec.unmatched
                and result == self.global_env.get("TARGETPLATFORM")
            ):
                self.lint.run(
                    "RedundantTargetPlatform",
                    loc,
                    "Setting platform to predefined "
                    f"{st.platform} in FROM is redundant as this is the default behavior",
                    cfg,
                )
            if not rec.matched and not rec.unmatched:
                p = parse_platform(result, self.platform)
                if p is not None and p[0] not in st.name and p[1] not in st.name:
                    self.lint.run(
                        "FromPlatformFlagConstDisallowed",
                        loc,
                        f"FROM --platform flag should not use constant value {go_quote(result)}",
                        cfg,
                    )

    def undefined_in_from(self, rec: _RecordingEnv, loc: tuple[int, int], cfg: CheckConfig) -> None:
        for name in rec.unmatched:
            if name in self.global_keys:
                continue
            guess = suggest(name, sorted(self.global_keys), case_sensitive=True)
            msg = f"FROM argument '{name}' is not declared" + (
                f" (did you mean {guess}?)" if guess else ""
            )
            self.lint.run("UndefinedArgInFrom", loc, msg, cfg)

    # -- dispatch (the stages the build runs) ----------------------------------

    def base_image(self, ps: PlannedStage) -> Mapping[str, Any] | None:
        if ps.base.is_scratch or self.base_config is None:
            return None
        return self.base_config(ps)

    def start_stage(self, ps: PlannedStage) -> _StageState:
        if ps.base.stage is not None:
            parent = self.states.get(ps.base.stage)
            if parent is not None:
                return _StageState(
                    dict(parent.env),
                    parent.env_known,
                    list(parent.declared),
                    parent.shell,
                    parent.workdir_set,
                )
            return _StageState({}, False, [], False, False)
        config = self.base_image(ps)
        known = ps.base.is_scratch or config is not None
        image_cfg = (config or {}).get("config") or {}
        env: dict[str, str] = {}
        for item in image_cfg.get("Env") or ():
            k, _, v = str(item).partition("=")
            env[k] = v
        env.setdefault("PATH", _DEFAULT_PATH)
        if config is not None:
            self.base_platform(ps, config)
        return _StageState(env, known, [], bool(image_cfg.get("Shell")), False)

    def base_platform(self, ps: PlannedStage, config: Mapping[str, Any]) -> None:
        expected = parse_platform(ps.platform or self.platform, self.platform)
        actual = (
            str(config.get("os") or ""),
            str(config.get("architecture") or ""),
            str(config.get("variant") or ""),
        )
        if expected is None or (expected[0], expected[1]) == (actual[0], actual[1]):
            return
        st = ps.stage
        self.lint.run(
            "InvalidBaseImagePlatform",
            (st.start_line, st.end_line),
            f"Base image {ps.base_name} was pulled with platform {go_quote(format_platform(*actual))}, "
            f"expected {go_quote(format_platform(*expected))} for current build",
        )

    def dispatch_stages(self, stages: Sequence[PlannedStage]) -> None:
        for ps in stages:
            state = self.start_stage(ps)
            for cmd in ps.stage.commands:
                if not self.dispatch(state, cmd):
                    break
            self.states[ps.index] = state

    def undefined_vars(
        self, state: _StageState, rec: _RecordingEnv, cmd: Command, cfg: CheckConfig
    ) -> None:
        if not state.env_known:
            return
        for name in rec.unmatched:
            if name in state.declared or name in _NON_ENV_ARGS:
                continue
            guess = suggest(name, list(state.env), case_sensitive=True)
            msg = f"Usage of undefined variable '${name}'" + (
                f" (did you mean ${guess}?)" if guess else ""
            )
            self.lint.run("UndefinedVar", (cmd.start_line, cmd.end_line), msg, cfg)

    def dispatch(self, state: _StageState, cmd: Command) -> bool:
        """One command; False when it cannot be expanded (the build stops there)."""
        cfg = self.config_at(cmd.start_line)
        if isinstance(cmd, ArgCommand):
            self.dispatch_arg(state, cmd, cfg)
            return True
        rec = _RecordingEnv(state.env)
        try:
            cmd = expand_command(cmd, rec, self.df.escape)
        except DockerfileError:
            return False
        self.undefined_vars(state, rec, cmd, cfg)
        handler = _HANDLERS.get(type(cmd))
        if handler is not None:
            handler(self, state, cmd, cfg)
        return True

    def dispatch_arg(self, state: _StageState, cmd: ArgCommand, cfg: CheckConfig) -> None:
        glob = dict(self.plan.global_args)
        for a in cmd.args:
            self.no_secret("ARG", a.key, cmd, cfg)
            value: str | None = None
            if a.key in self.build_args:
                value = self.build_args[a.key]
            elif a.value is not None:
                result = _expand_word(a.value, state.env, self.df.escape)
                if result is None:
                    return
                value = result[0]
                self.undefined_vars(state, result[1], cmd, cfg)
            elif glob.get(a.key) is not None:
                value = glob[a.key]
            if value is not None and a.key not in _NON_ENV_ARGS:
                state.env[a.key] = value
            state.declared.append(a.key)

    def no_secret(self, instruction: str, key: str, cmd: Command, cfg: CheckConfig) -> None:
        if _SECRET_DENY.search(key) and not _SECRET_ALLOW.search(key):
            self.lint.run(
                "SecretsUsedInArgOrEnv",
                (cmd.start_line, cmd.end_line),
                f"Do not use ARG or ENV instructions for sensitive data ({instruction} {go_quote(key)})",
                cfg,
            )


_SECRET_DENY = re.compile(
    r"(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|passwd|secret|token)(?:_|$)",
    re.IGNORECASE,
)
_SECRET_ALLOW = re.compile(r"(?:_|^)(?:public|file|version)(?:_|$)", re.IGNORECASE)


def _loc(cmd: Command) -> tuple[int, int]:
    return cmd.start_line, cmd.end_line


def _on_env(c: _Checker, state: _StageState, cmd: Any, cfg: CheckConfig) -> None:
    for kv in cmd.env:
        if kv.no_delim:
            c.lint.run(
                "LegacyKeyValueFormat",
                _loc(cmd),
                f'"{cmd.name} key=value" should be used instead of legacy "{cmd.name} key value" format',
                cfg,
            )
        c.no_secret("ENV", kv.key, cmd, cfg)
        state.env[kv.key] = kv.value


def _on_label(c: _Checker, state: _StageState, cmd: Any, cfg: CheckConfig) -> None:
    for kv in cmd.labels:
        if kv.no_delim:
            c.lint.run(
                "LegacyKeyValueFormat",
                _loc(cmd),
                f'"{cmd.name} key=value" should be used instead of legacy "{cmd.name} key value" format',
                cfg,
            )


def _used_once(c: _Checker, state: _StageState, cmd: Any, cfg: CheckConfig) -> None:
    previous = state.used_once.get(cmd.keyword)
    if previous is not None:  # the earlier one is the one that is ignored
        c.lint.run(
            "MultipleInstructionsDisallowed",
            previous,
            f"Multiple {cmd.name} instructions should not be "
            "used in the same stage because only the last one will be used",
            cfg,
        )
    state.used_once[cmd.keyword] = _loc(cmd)


def _on_cmd(c: _Checker, state: _StageState, cmd: Any, cfg: CheckConfig) -> None:
    _used_once(c, state, cmd, cfg)
    if cmd.cmd_line is not None and cmd.prepend_shell and not state.shell:
        c.lint.run(
            "JSONArgsRecommended",
            _loc(cmd),
            f"JSON arguments recommended for {cmd.name} to prevent "
            "unintended behavior related to OS signals",
            cfg,
        )


def _on_shell(c: _Checker, state: _StageState, cmd: Any, cfg: CheckConfig) -> None:
    state.shell = bool(cmd.shell)


def _on_workdir(c: _Checker, state: _StageState, cmd: Any, cfg: CheckConfig) -> None:
    if not state.workdir_set and not cmd.path.startswith("/"):
        c.lint.run(
            "WorkdirRelativePath",
            _loc(cmd),
            f"Relative workdir {go_quote(cmd.path)} can have unexpected results if the base image changes",
            cfg,
        )
    state.workdir_set = True


def _split_port(raw: str) -> tuple[str, str, str, str]:
    """``[ip:]host:container/proto`` -> (ip, host port, container port, proto)."""
    parts = raw.split(":")
    if len(parts) == 1:
        ip, host, container = "", "", parts[0]
    elif len(parts) == 2:
        ip, host, container = "", parts[0], parts[1]
    else:
        ip, host, container = ":".join(parts[:-2]), parts[-2], parts[-1]
    port, _, proto = container.partition("/")
    return ip, host, port, proto


def _on_expose(c: _Checker, state: _StageState, cmd: Any, cfg: CheckConfig) -> None:
    lexer = ShellLexer(c.df.escape)
    try:
        ports = [w for p in cmd.ports for w in lexer.process_words(p, state.env)]
    except ShellLexError:
        return
    for raw in ports:
        ip, host, port, proto = _split_port(raw)
        if not port or proto.lower() not in ("", "tcp", "udp", "sctp"):
            return  # BuildKit fails here: "invalid port", the builder reports it
        if proto != proto.lower():
            c.lint.run(
                "ExposeProtoCasing",
                _loc(cmd),
                f"Defined protocol '{raw}' in EXPOSE instruction should be lowercase",
                cfg,
            )
        if ip or host:
            c.lint.run(
                "ExposeInvalidFormat",
                _loc(cmd),
                "EXPOSE instruction should not define an IP address or "
                f"host-port mapping, found '{raw}'",
                cfg,
            )


def _clean(path: str) -> str:
    parts: list[str] = []
    rooted = path.startswith("/")
    for seg in path.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append(seg)
            continue
        parts.append(seg)
    out = ("/" if rooted else "") + "/".join(parts)
    return out or "."


def _on_copy(c: _Checker, state: _StageState, cmd: Any, cfg: CheckConfig) -> None:
    ignore = c.ignore
    if ignore is None or ignore.empty or ignore.has_exceptions:
        return  # BuildKit does not guess when '!' exceptions could re-include a file
    if isinstance(cmd, CopyCommand) and cmd.from_:
        return
    verb = "Add" if isinstance(cmd, AddCommand) else "Copy"
    for src in cmd.sources:
        if isinstance(cmd, AddCommand) and ("://" in src or src.startswith("git@")):
            continue
        path = _clean(src)
        # the root counts only when a pattern excludes every root entry ("*", "**")
        if ignore.ignored("*" if path in (".", "/") else path.lstrip("/")):
            c.lint.run(
                "CopyIgnoredFile",
                _loc(cmd),
                f"Attempting to {verb} file {go_quote(path)} that is excluded by .dockerignore",
                cfg,
            )


_Handler = Callable[[_Checker, _StageState, Any, CheckConfig], None]
_HANDLERS: dict[type, _Handler] = {
    EnvCommand: _on_env,
    LabelCommand: _on_label,
    CmdCommand: _on_cmd,
    EntrypointCommand: _on_cmd,
    HealthcheckCommand: _used_once,
    ShellCommand: _on_shell,
    WorkdirCommand: _on_workdir,
    ExposeCommand: _on_expose,
    CopyCommand: _on_copy,
    AddCommand: _on_copy,
}


def run_checks(
    plan: BuildPlan,
    *,
    stages: Sequence[PlannedStage] | None = None,
    predefined: Mapping[str, str] | None = None,
    base_config: BaseImageConfig | None = None,
    ignore: IgnoreRules | None = None,
    platform: str = "linux/amd64",
) -> CheckReport:
    """The build checks of ``plan`` (see the module docstring). ``stages`` are the stages the build
    dispatches (default: the target's, ``plan.stages``; ``--check`` without a target passes
    ``plan.all_stages``); ``platform`` is the target platform (``os/arch[/variant]``)."""
    df = plan.dockerfile
    config = check_config(df, dict(plan.build_args))
    if predefined is None:
        predefined = {k: v for k, v in plan.global_args if k in PREDEFINED_ARGS and v is not None}
    checker = _Checker(
        plan,
        config,
        predefined=predefined,
        base_config=base_config,
        ignore=ignore,
        platform=platform,
    )
    checker.parse_time()
    checker.from_lines()
    checker.dispatch_stages(plan.stages if stages is None else stages)
    return CheckReport(config, tuple(checker.lint.warnings))


# ---------------------------------------------------------------------------
# docker buildx build --check


def _source_block(filename: str, data: bytes, start: int, end: int) -> list[str]:
    """BuildKit's ``errdefs.Source.Print``: the lines around a location, the location marked ``>>>``."""
    lines = data.decode("utf-8", "replace").split("\n")
    if start > len(lines) or start < 1:
        return []
    first, last = start, min(max(end, start), len(lines))
    pad = 4 if last == first else 2
    p = 0
    while p < pad:
        if first > 1:
            first -= 1
            p += 1
        if last != len(lines):
            last += 1
            p += 1
        p += 1
    out = [f"{filename}:{start}", "-" * 20]
    for i in range(first, last + 1):
        mark = ">>>" if start <= i <= max(end, start) else "   "
        out.append(f" {i:3d} | {mark} {lines[i - 1]}")
    out.append("-" * 20)
    return out


def format_check_output(report: CheckReport, df: Dockerfile) -> str:
    """What ``docker buildx build --check`` prints on stdout for ``report`` (warnings by line)."""
    warnings = sorted(report.warnings, key=lambda w: (w.line > 0, w.line))
    if not warnings:
        return "Check complete, no warnings found.\n"
    n = len(warnings)
    out = [f"Check complete, {'1 warning has' if n == 1 else f'{n} warnings have'} been found!"]
    for w in warnings:
        out.append("")
        out.append(f"WARNING: {w.rule}" + (f" - {w.url}" if w.url else ""))
        out.append(w.message)
        if w.lines:
            out.extend(_source_block(df.path, df.raw, w.lines[0], w.lines[-1]))
    return "\n".join(out) + "\n"
