"""BuildKit's LLB messages (``solver/pb/ops.proto``, v0.32.2) as typed, frozen structs
(``msgspec.Struct``).

Each message declares its fields once (``FIELDS``: Go JSON name, protobuf field
number, kind), in Go's declaration order, and gets from that:

- ``go_json_fields``: what Go's ``encoding/json`` writes for the generated struct
  (every field ``omitempty``), which is what BuildKit's cache maps hash;
- ``to_proto``: the deterministic protobuf marshal, whose sha256 is the vertex
  digest (``op_digest``);
- ``from_json``: the reverse of the JSON form, to read LLB that BuildKit rendered
  as JSON (the ``llbDefinition`` of a build's provenance).

Three messages have hand-written JSON in BuildKit (``solver/pb/json.go``): ``Op``,
``FileAction`` and ``UserOpt``, whose oneofs become an object with one member
(``"Op":{"exec":…}``, ``"Action":{"copy":…}``, ``"User":{"byId":1000}``); they
override the JSON methods. Only the messages the Dockerfile frontend emits are here.
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Self

from mason.digest import Digest, sha256_bytes
from mason.llb import protowire as pw
from mason.structs import Struct, field, replace

__all__ = [
    "CacheOpt",
    "CacheSharingOpt",
    "ChownOpt",
    "ExecOp",
    "FileAction",
    "FileActionCopy",
    "FileActionMkDir",
    "FileActionMkFile",
    "FileActionRm",
    "FileActionSymlink",
    "FileOp",
    "HostIP",
    "Input",
    "MergeInput",
    "MergeOp",
    "Meta",
    "Mount",
    "MountType",
    "NamedUserOpt",
    "NetMode",
    "Op",
    "Platform",
    "ProxyEnv",
    "SSHOpt",
    "SecretEnv",
    "SecretOpt",
    "SecurityMode",
    "SourceOp",
    "TmpfsOpt",
    "Ulimit",
    "UserOpt",
    "WorkerConstraints",
    "op_digest",
]


class NetMode(enum.IntEnum):
    UNSET = 0  # the sandbox's default network
    HOST = 1
    NONE = 2


class SecurityMode(enum.IntEnum):
    SANDBOX = 0
    INSECURE = 1


class MountType(enum.IntEnum):
    BIND = 0
    SECRET = 1
    SSH = 2
    CACHE = 3
    TMPFS = 4


class CacheSharingOpt(enum.IntEnum):
    SHARED = 0
    PRIVATE = 1
    LOCKED = 2


#: ``pb.Empty`` / ``pb.SkipOutput``: no input, no output.
EMPTY = -1


class Kind(enum.Enum):
    STRING = "string"  # string, or repeated string when the value is a tuple
    BYTES = "bytes"
    BOOL = "bool"
    INT = "int"  # int32, int64, uint32 and enums: varint, zero left out
    MESSAGE = "message"  # one message, or repeated when the value is a tuple
    MAP = "map"  # map<string, string>
    PACKED = "packed"  # repeated int32/int64, packed
    ONEOF_INT = "oneof_int"  # a varint oneof member: written when set, even if 0


class F(Struct, frozen=True):
    """One field: attribute, Go JSON name, protobuf number, kind, message type."""

    attr: str
    json: str
    number: int
    kind: Kind
    message: type[Message] | None = None
    oneof: bool = False


class Message(Struct, frozen=True):
    """Base of the LLB messages: JSON and protobuf from ``FIELDS``."""

    FIELDS: ClassVar[tuple[F, ...]] = ()

    def go_json_fields(self) -> Iterable[tuple[str, object, bool]]:
        for f in self.FIELDS:
            yield f.json, _json_value(getattr(self, f.attr)), True

    def to_proto(self) -> bytes:
        return b"".join([encode(getattr(self, attr)) for attr, encode in _encoders(type(self))])

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Self:
        kwargs = {f.attr: _from_json_value(f, obj[f.json]) for f in cls.FIELDS if f.json in obj}
        return cls(**kwargs)


_ORDER: dict[type[Message], tuple[F, ...]] = {}


def _marshal_order(cls: type[Message]) -> tuple[F, ...]:
    """Go writes a message's oneof member after all its other fields, whatever its number
    (checked against the vertex digests BuildKit reports); computed once per message type."""
    order = _ORDER.get(cls)
    if order is None:
        order = _ORDER[cls] = tuple(sorted(cls.FIELDS, key=lambda f: (f.oneof, f.number)))
    return order


_ENCODERS: dict[type[Message], tuple[tuple[str, Callable[[Any], bytes]], ...]] = {}


def _encoders(cls: type[Message]) -> tuple[tuple[str, Callable[[Any], bytes]], ...]:
    """Each field's attribute and encoder in marshal order, made once per message type (a
    plan marshals every op it makes: this is most of planning's time)."""
    encoders = _ENCODERS.get(cls)
    if encoders is None:
        encoders = _ENCODERS[cls] = tuple((f.attr, _field_encoder(f)) for f in _marshal_order(cls))
    return encoders


def _field_encoder(f: F) -> Callable[[Any], bytes]:
    """``_proto_field`` for one field, its tags encoded once."""
    if f.kind not in (Kind.STRING, Kind.BYTES, Kind.MESSAGE):
        return lambda value: _proto_field(f, value)
    tag = pw.tag(f.number, 2)  # length-delimited
    varint = pw.encode_varint

    def delimited(payload: bytes) -> bytes:
        return tag + varint(len(payload)) + payload

    if f.kind is Kind.STRING:

        def string(value: Any) -> bytes:
            if not value:  # None, "" and an empty repeated field are not written
                return b""
            if isinstance(value, tuple):
                return b"".join([delimited(v.encode("utf-8")) for v in value])
            return delimited(value.encode("utf-8"))

        return string
    if f.kind is Kind.BYTES:
        return lambda value: delimited(value) if value else b""

    def message(value: Any) -> bytes:
        if value is None:
            return b""
        if isinstance(value, tuple):
            return b"".join([delimited(m.to_proto()) for m in value])
        return delimited(value.to_proto())

    return message


def _json_value(value: object) -> object:
    # IntEnum members print as their names in some Python versions; Go writes numbers.
    if isinstance(value, enum.IntEnum):
        return int(value)
    return value


def _proto_field(f: F, value: Any) -> bytes:
    if value is None:
        return b""
    kind = f.kind
    if kind is Kind.STRING:
        if isinstance(value, tuple):
            return b"".join(pw.field_bytes(f.number, v.encode("utf-8")) for v in value)
        return pw.field_bytes(f.number, value.encode("utf-8")) if value else b""
    if kind is Kind.BYTES:
        return pw.field_bytes(f.number, value) if value else b""
    if kind is Kind.BOOL:
        return pw.field_varint(f.number, 1) if value else b""
    if kind is Kind.INT:
        return pw.field_varint(f.number, int(value)) if value else b""
    if kind is Kind.ONEOF_INT:
        return pw.field_varint(f.number, int(value))
    if kind is Kind.PACKED:
        return pw.packed_varints(f.number, value)
    if kind is Kind.MAP:
        entries = sorted(value.items(), key=lambda kv: kv[0].encode("utf-8"))
        return b"".join(
            pw.field_bytes(
                f.number,
                pw.field_bytes(1, k.encode("utf-8")) + pw.field_bytes(2, v.encode("utf-8")),
            )
            for k, v in entries
        )
    if isinstance(value, tuple):
        return b"".join(pw.field_bytes(f.number, m.to_proto()) for m in value)
    return pw.field_bytes(f.number, value.to_proto())


def _from_json_value(f: F, raw: Any) -> Any:
    if raw is None:
        return None
    if f.kind is Kind.BYTES:
        return base64.b64decode(raw)
    if f.kind is Kind.MESSAGE:
        assert f.message is not None
        if isinstance(raw, list):
            return tuple(f.message.from_json(item) for item in raw)
        return f.message.from_json(raw)
    if f.kind is Kind.MAP:
        return dict(raw)
    if isinstance(raw, list):
        return tuple(raw)
    return raw


# --- common ---------------------------------------------------------------------------------


class Platform(Message, frozen=True):
    architecture: str = ""
    os: str = ""
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()
    FIELDS = (
        F("architecture", "Architecture", 1, Kind.STRING),
        F("os", "OS", 2, Kind.STRING),
        F("variant", "Variant", 3, Kind.STRING),
        F("os_version", "OSVersion", 4, Kind.STRING),
        F("os_features", "OSFeatures", 5, Kind.STRING),
    )


class Input(Message, frozen=True):
    """A vertex input: the producing op's digest and its output index."""

    digest: str = ""
    index: int = 0
    FIELDS = (F("digest", "digest", 1, Kind.STRING), F("index", "index", 2, Kind.INT))


class WorkerConstraints(Message, frozen=True):
    filter: tuple[str, ...] = ()
    FIELDS = (F("filter", "filter", 1, Kind.STRING),)


# --- exec -----------------------------------------------------------------------------------


class ProxyEnv(Message, frozen=True):
    http_proxy: str = ""
    https_proxy: str = ""
    ftp_proxy: str = ""
    no_proxy: str = ""
    all_proxy: str = ""
    FIELDS = (
        F("http_proxy", "http_proxy", 1, Kind.STRING),
        F("https_proxy", "https_proxy", 2, Kind.STRING),
        F("ftp_proxy", "ftp_proxy", 3, Kind.STRING),
        F("no_proxy", "no_proxy", 4, Kind.STRING),
        F("all_proxy", "all_proxy", 5, Kind.STRING),
    )


class HostIP(Message, frozen=True):
    host: str = ""
    ip: str = ""
    FIELDS = (F("host", "Host", 1, Kind.STRING), F("ip", "IP", 2, Kind.STRING))


class Ulimit(Message, frozen=True):
    name: str = ""
    soft: int = 0
    hard: int = 0
    FIELDS = (
        F("name", "Name", 1, Kind.STRING),
        F("soft", "Soft", 2, Kind.INT),
        F("hard", "Hard", 3, Kind.INT),
    )


class SecretEnv(Message, frozen=True):
    id: str = ""
    name: str = ""
    optional: bool = False
    FIELDS = (
        F("id", "ID", 1, Kind.STRING),
        F("name", "name", 2, Kind.STRING),
        F("optional", "optional", 3, Kind.BOOL),
    )


class CDIDevice(Message, frozen=True):
    name: str = ""
    optional: bool = False
    FIELDS = (F("name", "name", 1, Kind.STRING), F("optional", "optional", 2, Kind.BOOL))


class Meta(Message, frozen=True):
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    cwd: str = ""
    user: str = ""
    proxy_env: ProxyEnv | None = None
    extra_hosts: tuple[HostIP, ...] = ()
    hostname: str = ""
    ulimit: tuple[Ulimit, ...] = ()
    cgroup_parent: str = ""
    remove_mount_stubs_recursive: bool = False
    valid_exit_codes: tuple[int, ...] = ()
    FIELDS = (
        F("args", "args", 1, Kind.STRING),
        F("env", "env", 2, Kind.STRING),
        F("cwd", "cwd", 3, Kind.STRING),
        F("user", "user", 4, Kind.STRING),
        F("proxy_env", "proxy_env", 5, Kind.MESSAGE, ProxyEnv),
        F("extra_hosts", "extraHosts", 6, Kind.MESSAGE, HostIP),
        F("hostname", "hostname", 7, Kind.STRING),
        F("ulimit", "ulimit", 9, Kind.MESSAGE, Ulimit),
        F("cgroup_parent", "cgroupParent", 10, Kind.STRING),
        F("remove_mount_stubs_recursive", "removeMountStubsRecursive", 11, Kind.BOOL),
        F("valid_exit_codes", "validExitCodes", 12, Kind.PACKED),
    )


class TmpfsOpt(Message, frozen=True):
    size: int = 0
    FIELDS = (F("size", "size", 1, Kind.INT),)


class CacheOpt(Message, frozen=True):
    id: str = ""
    sharing: CacheSharingOpt = CacheSharingOpt.SHARED
    FIELDS = (F("id", "ID", 1, Kind.STRING), F("sharing", "sharing", 2, Kind.INT))


class SecretOpt(Message, frozen=True):
    id: str = ""
    uid: int = 0
    gid: int = 0
    mode: int = 0
    optional: bool = False
    FIELDS = (
        F("id", "ID", 1, Kind.STRING),
        F("uid", "uid", 2, Kind.INT),
        F("gid", "gid", 3, Kind.INT),
        F("mode", "mode", 4, Kind.INT),
        F("optional", "optional", 5, Kind.BOOL),
    )


class SSHOpt(SecretOpt, frozen=True):
    pass


class Mount(Message, frozen=True):
    input: int = 0
    selector: str = ""
    dest: str = ""
    output: int = 0
    readonly: bool = False
    mount_type: MountType = MountType.BIND
    tmpfs_opt: TmpfsOpt | None = None
    cache_opt: CacheOpt | None = None
    secret_opt: SecretOpt | None = None
    ssh_opt: SSHOpt | None = None
    result_id: str = ""
    content_cache: int = 0
    FIELDS = (
        F("input", "input", 1, Kind.INT),
        F("selector", "selector", 2, Kind.STRING),
        F("dest", "dest", 3, Kind.STRING),
        F("output", "output", 4, Kind.INT),
        F("readonly", "readonly", 5, Kind.BOOL),
        F("mount_type", "mountType", 6, Kind.INT),
        F("tmpfs_opt", "TmpfsOpt", 19, Kind.MESSAGE, TmpfsOpt),
        F("cache_opt", "cacheOpt", 20, Kind.MESSAGE, CacheOpt),
        F("secret_opt", "secretOpt", 21, Kind.MESSAGE, SecretOpt),
        F("ssh_opt", "SSHOpt", 22, Kind.MESSAGE, SSHOpt),
        F("result_id", "resultID", 23, Kind.STRING),
        F("content_cache", "contentCache", 24, Kind.INT),
    )

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Self:
        m = super().from_json(obj)
        # Typed enums, so that equality with hand-built mounts holds.
        return replace(m, mount_type=MountType(m.mount_type))


class ExecOp(Message, frozen=True):
    meta: Meta | None = None
    mounts: tuple[Mount, ...] = ()
    network: NetMode = NetMode.UNSET
    security: SecurityMode = SecurityMode.SANDBOX
    secretenv: tuple[SecretEnv, ...] = ()
    cdi_devices: tuple[CDIDevice, ...] = ()
    FIELDS = (
        F("meta", "meta", 1, Kind.MESSAGE, Meta),
        F("mounts", "mounts", 2, Kind.MESSAGE, Mount),
        F("network", "network", 3, Kind.INT),
        F("security", "security", 4, Kind.INT),
        F("secretenv", "secretenv", 5, Kind.MESSAGE, SecretEnv),
        F("cdi_devices", "cdiDevices", 6, Kind.MESSAGE, CDIDevice),
    )


# --- source, merge ---------------------------------------------------------------------------


class SourceOp(Message, frozen=True):
    identifier: str = ""
    attrs: Mapping[str, str] = field(default_factory=dict)
    FIELDS = (F("identifier", "identifier", 1, Kind.STRING), F("attrs", "attrs", 2, Kind.MAP))

    def __hash__(self) -> int:
        return hash((self.identifier, tuple(sorted(self.attrs.items()))))


class MergeInput(Message, frozen=True):
    input: int = 0
    FIELDS = (F("input", "input", 1, Kind.INT),)


class MergeOp(Message, frozen=True):
    inputs: tuple[MergeInput, ...] = ()
    FIELDS = (F("inputs", "inputs", 1, Kind.MESSAGE, MergeInput),)


# --- file ------------------------------------------------------------------------------------


class NamedUserOpt(Message, frozen=True):
    name: str = ""
    input: int = 0
    FIELDS = (F("name", "name", 1, Kind.STRING), F("input", "input", 2, Kind.INT))


class UserOpt(Message, frozen=True):
    """A user by name (resolved in input ``by_name.input``) or by id; exactly one is set."""

    by_name: NamedUserOpt | None = None
    by_id: int | None = None
    FIELDS = (
        F("by_name", "byName", 1, Kind.MESSAGE, NamedUserOpt, oneof=True),
        F("by_id", "byId", 2, Kind.ONEOF_INT, oneof=True),
    )

    def go_json_fields(self) -> Iterable[tuple[str, object, bool]]:
        # json.go: {"User":{"byName":…,"byId":N}}, both omitempty (so uid 0 is {"User":{}}).
        yield (
            "User",
            _JSONObject((("byName", self.by_name, True), ("byId", self.by_id or 0, True))),
            False,
        )

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Self:
        inner = obj.get("User") or {}
        if inner.get("byName") is not None:
            return cls(by_name=NamedUserOpt.from_json(inner["byName"]))
        return cls(by_id=int(inner.get("byId", 0)))


class ChownOpt(Message, frozen=True):
    user: UserOpt | None = None
    group: UserOpt | None = None
    FIELDS = (
        F("user", "user", 1, Kind.MESSAGE, UserOpt),
        F("group", "group", 2, Kind.MESSAGE, UserOpt),
    )


class FileActionCopy(Message, frozen=True):
    src: str = ""
    dest: str = ""
    owner: ChownOpt | None = None
    mode: int = 0
    follow_symlink: bool = False
    dir_copy_contents: bool = False
    attempt_unpack_docker_compatibility: bool = False
    create_dest_path: bool = False
    allow_wildcard: bool = False
    allow_empty_wildcard: bool = False
    timestamp: int = 0
    include_patterns: tuple[str, ...] = ()
    exclude_patterns: tuple[str, ...] = ()
    always_replace_existing_dest_paths: bool = False
    mode_str: str = ""
    required_paths: tuple[str, ...] = ()
    FIELDS = (
        F("src", "src", 1, Kind.STRING),
        F("dest", "dest", 2, Kind.STRING),
        F("owner", "owner", 3, Kind.MESSAGE, ChownOpt),
        F("mode", "mode", 4, Kind.INT),
        F("follow_symlink", "followSymlink", 5, Kind.BOOL),
        F("dir_copy_contents", "dirCopyContents", 6, Kind.BOOL),
        F("attempt_unpack_docker_compatibility", "attemptUnpackDockerCompatibility", 7, Kind.BOOL),
        F("create_dest_path", "createDestPath", 8, Kind.BOOL),
        F("allow_wildcard", "allowWildcard", 9, Kind.BOOL),
        F("allow_empty_wildcard", "allowEmptyWildcard", 10, Kind.BOOL),
        F("timestamp", "timestamp", 11, Kind.INT),
        F("include_patterns", "include_patterns", 12, Kind.STRING),
        F("exclude_patterns", "exclude_patterns", 13, Kind.STRING),
        F("always_replace_existing_dest_paths", "alwaysReplaceExistingDestPaths", 14, Kind.BOOL),
        F("mode_str", "modeStr", 15, Kind.STRING),
        F("required_paths", "required_paths", 16, Kind.STRING),
    )


class FileActionMkFile(Message, frozen=True):
    path: str = ""
    mode: int = 0
    data: bytes = b""
    owner: ChownOpt | None = None
    timestamp: int = 0
    FIELDS = (
        F("path", "path", 1, Kind.STRING),
        F("mode", "mode", 2, Kind.INT),
        F("data", "data", 3, Kind.BYTES),
        F("owner", "owner", 4, Kind.MESSAGE, ChownOpt),
        F("timestamp", "timestamp", 5, Kind.INT),
    )


class FileActionMkDir(Message, frozen=True):
    path: str = ""
    mode: int = 0
    make_parents: bool = False
    owner: ChownOpt | None = None
    timestamp: int = 0
    FIELDS = (
        F("path", "path", 1, Kind.STRING),
        F("mode", "mode", 2, Kind.INT),
        F("make_parents", "makeParents", 3, Kind.BOOL),
        F("owner", "owner", 4, Kind.MESSAGE, ChownOpt),
        F("timestamp", "timestamp", 5, Kind.INT),
    )


class FileActionRm(Message, frozen=True):
    path: str = ""
    allow_not_found: bool = False
    allow_wildcard: bool = False
    FIELDS = (
        F("path", "path", 1, Kind.STRING),
        F("allow_not_found", "allowNotFound", 2, Kind.BOOL),
        F("allow_wildcard", "allowWildcard", 3, Kind.BOOL),
    )


class FileActionSymlink(Message, frozen=True):
    oldpath: str = ""
    newpath: str = ""
    owner: ChownOpt | None = None
    timestamp: int = 0
    FIELDS = (
        F("oldpath", "oldpath", 1, Kind.STRING),
        F("newpath", "newpath", 2, Kind.STRING),
        F("owner", "owner", 3, Kind.MESSAGE, ChownOpt),
        F("timestamp", "timestamp", 4, Kind.INT),
    )


_ACTION_KINDS: tuple[tuple[str, str, type[Message]], ...] = (
    ("copy", "copy", FileActionCopy),
    ("mkfile", "mkfile", FileActionMkFile),
    ("mkdir", "mkdir", FileActionMkDir),
    ("rm", "rm", FileActionRm),
    ("symlink", "symlink", FileActionSymlink),
)


class FileAction(Message, frozen=True):
    """One action of a file op; exactly one of copy/mkfile/mkdir/rm/symlink is set.

    ``input`` and ``secondary_input`` index the op's inputs, or (at or past their
    count) an earlier action's output; ``-1`` is none (scratch). ``output`` is -1
    for an action whose result only a later action uses.
    """

    input: int = 0
    secondary_input: int = 0
    output: int = 0
    copy: FileActionCopy | None = None
    mkfile: FileActionMkFile | None = None
    mkdir: FileActionMkDir | None = None
    rm: FileActionRm | None = None
    symlink: FileActionSymlink | None = None
    FIELDS = (
        F("input", "input", 1, Kind.INT),
        F("secondary_input", "secondaryInput", 2, Kind.INT),
        F("output", "output", 3, Kind.INT),
        F("copy", "copy", 4, Kind.MESSAGE, FileActionCopy, oneof=True),
        F("mkfile", "mkfile", 5, Kind.MESSAGE, FileActionMkFile, oneof=True),
        F("mkdir", "mkdir", 6, Kind.MESSAGE, FileActionMkDir, oneof=True),
        F("rm", "rm", 7, Kind.MESSAGE, FileActionRm, oneof=True),
        F("symlink", "symlink", 8, Kind.MESSAGE, FileActionSymlink, oneof=True),
    )

    @property
    def action(self) -> Message:
        for attr, _, _ in _ACTION_KINDS:
            value = getattr(self, attr)
            if value is not None:
                return value  # type: ignore[no-any-return]
        raise ValueError("file action without an action")

    def go_json_fields(self) -> Iterable[tuple[str, object, bool]]:
        # json.go: the indexes are written even when 0; the oneof is {"copy":{…}}
        # (json.go knows no symlink action, so a symlink writes "Action":{}).
        yield "input", self.input, False
        yield "secondaryInput", self.secondary_input, False
        yield "output", self.output, False
        members = tuple((name, getattr(self, attr), True) for attr, name, _ in _ACTION_KINDS[:4])
        yield "Action", _JSONObject(members), False

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Self:
        inner = obj.get("Action") or {}
        kwargs: dict[str, Any] = {
            "input": int(obj.get("input", 0)),
            "secondary_input": int(obj.get("secondaryInput", 0)),
            "output": int(obj.get("output", 0)),
        }
        for attr, name, kind in _ACTION_KINDS:
            if inner.get(name) is not None:
                kwargs[attr] = kind.from_json(inner[name])
        return cls(**kwargs)


class FileOp(Message, frozen=True):
    actions: tuple[FileAction, ...] = ()
    FIELDS = (F("actions", "actions", 2, Kind.MESSAGE, FileAction),)


# --- the op ----------------------------------------------------------------------------------

_OP_KINDS: tuple[tuple[str, type[Message]], ...] = (
    ("exec", ExecOp),
    ("source", SourceOp),
    ("file", FileOp),
    ("merge", MergeOp),
)


class Op(Message, frozen=True):
    """One LLB vertex. With no op set it is the definition's terminal (inputs only)."""

    inputs: tuple[Input, ...] = ()
    exec: ExecOp | None = None
    source: SourceOp | None = None
    file: FileOp | None = None
    merge: MergeOp | None = None
    platform: Platform | None = None
    constraints: WorkerConstraints | None = None
    FIELDS = (
        F("inputs", "inputs", 1, Kind.MESSAGE, Input),
        F("exec", "exec", 2, Kind.MESSAGE, ExecOp, oneof=True),
        F("source", "source", 3, Kind.MESSAGE, SourceOp, oneof=True),
        F("file", "file", 4, Kind.MESSAGE, FileOp, oneof=True),
        F("merge", "merge", 6, Kind.MESSAGE, MergeOp, oneof=True),
        F("platform", "platform", 10, Kind.MESSAGE, Platform),
        F("constraints", "constraints", 11, Kind.MESSAGE, WorkerConstraints),
    )

    def go_json_fields(self) -> Iterable[tuple[str, object, bool]]:
        yield "inputs", self.inputs, True
        yield (
            "Op",
            _JSONObject(tuple((name, getattr(self, name), True) for name, _ in _OP_KINDS)),
            False,
        )
        yield "platform", self.platform, True
        yield "constraints", self.constraints, True

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Self:
        inner = obj.get("Op") or {}
        kwargs: dict[str, Any] = {
            "inputs": tuple(Input.from_json(i) for i in obj.get("inputs") or ()),
        }
        for name, kind in _OP_KINDS:
            if inner.get(name) is not None:
                kwargs[name] = kind.from_json(inner[name])
        if obj.get("platform") is not None:
            kwargs["platform"] = Platform.from_json(obj["platform"])
        if obj.get("constraints") is not None:
            kwargs["constraints"] = WorkerConstraints.from_json(obj["constraints"])
        return cls(**kwargs)


def op_digest(op: Op) -> Digest:
    """The vertex digest: sha256 of the deterministic protobuf marshal of ``op``."""
    return sha256_bytes(op.to_proto())


class _JSONObject(Struct, frozen=True):
    """An anonymous Go struct (the oneof wrappers of json.go)."""

    members: tuple[tuple[str, object, bool], ...]

    def go_json_fields(self) -> Iterable[tuple[str, object, bool]]:
        return self.members
