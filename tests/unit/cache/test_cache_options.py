from __future__ import annotations

import pytest

from mason.cache.options import CacheOptionsError, parse_cache_from, parse_cache_to, split_csv
from mason.errors import UsageError


def test_registry_defaults_follow_buildkit() -> None:
    [opt] = parse_cache_to("type=registry,ref=127.0.0.1:5000/app-cache")
    assert opt.type == "registry"
    assert str(opt.ref) == "127.0.0.1:5000/app-cache:latest"
    assert (opt.mode, opt.compression, opt.compression_level) == ("min", "gzip", None)
    assert (opt.oci_mediatypes, opt.image_manifest, opt.force_compression, opt.ignore_error) == (
        True,
        True,
        False,
        False,
    )
    assert opt.display_name == "registry 127.0.0.1:5000/app-cache:latest"


def test_all_registry_attributes() -> None:
    [opt] = parse_cache_to(
        "type=registry,ref=reg.example/c:main,mode=max,compression=zstd,compression-level=19,"
        "force-compression=true,oci-mediatypes=true,image-manifest=false,ignore-error=true,registry.insecure=true"
    )
    assert (opt.mode, opt.compression, opt.compression_level) == ("max", "zstd", 19)
    assert opt.force_compression and opt.ignore_error and opt.insecure
    assert not opt.image_manifest and opt.oci_mediatypes


def test_oci_mediatypes_false_defaults_to_index_form() -> None:
    [opt] = parse_cache_to("type=registry,ref=r.io/c,oci-mediatypes=false")
    assert not opt.oci_mediatypes and not opt.image_manifest


def test_oci_mediatypes_false_with_image_manifest_is_buildkits_error() -> None:
    with pytest.raises(CacheOptionsError) as info:
        parse_cache_to("type=registry,ref=r.io/c,oci-mediatypes=false,image-manifest=true")
    assert info.value.message == (
        "invalid configuration for remote cache, OCI mediatypes are required for image-manifest cache format"
    )
    assert info.value.exit_code == 2


def test_quoted_values_and_fields() -> None:
    assert split_csv('type=local,"dest=/tmp/a,b",tag=x') == ["type=local", "dest=/tmp/a,b", "tag=x"]
    [opt] = parse_cache_to('type=local,dest="/tmp/with,comma",tag=v1')
    assert opt.path == "/tmp/with,comma" and opt.tag == "v1"
    assert split_csv('a="say ""hi"""') == ['a=say "hi"']
    with pytest.raises(CacheOptionsError, match="unterminated"):
        split_csv('type=local,"dest=/x')


def test_bare_refs_mean_registry() -> None:
    opts = parse_cache_from("reg.io/app-cache,reg.io/app-cache:main")
    assert [o.type for o in opts] == ["registry", "registry"]
    assert [str(o.ref) for o in opts] == ["reg.io/app-cache:latest", "reg.io/app-cache:main"]
    [hub] = parse_cache_from("user/app")
    assert str(hub.ref) == "docker.io/user/app:latest"


def test_keys_are_case_insensitive() -> None:
    [opt] = parse_cache_to("TYPE=registry,Ref=r.io/c,MODE=max")
    assert opt.mode == "max"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("type=s3,ref=x", "unknown cache type 's3'"),
        ("type=nope", "unknown cache type 'nope'"),
        ("type=registry,ref=r.io/c,colour=red", "unknown attribute colour for type=registry"),
        ("type=registry,ref=r.io/c,mode=medium", "mode='medium'"),
        ("type=registry,ref=r.io/c,compression=brotli", "compression='brotli'"),
        ("type=registry,ref=r.io/c,compression-level=10", "out of range for gzip"),
        ("type=registry,ref=r.io/c,compression=zstd,compression-level=23", "out of range for zstd"),
        ("type=registry,ref=r.io/c,compression=zstd,compression-level=-1", "out of range for zstd"),
        ("type=registry,ref=r.io/c,compression-level=fast", "not an integer"),
        ("type=registry,ref=r.io/c,ignore-error=maybe", "not a boolean"),
        ("type=registry", "requires ref"),
        ("type=registry,ref=UPPER/Case", "lowercase"),
        ("type=local", "requires dest"),
        ("type=local,dest=/x,src=/y", "unknown attribute src for type=local"),
        ("type=inline,mode=max", "unknown attribute mode for type=inline"),
        ("ref=r.io/c", "type is required"),
        ("type=registry,ref=r.io/c,ref=r.io/d", "ref given twice"),
    ],
)
def test_cache_to_errors(text: str, fragment: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_cache_to(text)
    assert fragment in str(info.value)


def test_zstd_level_range_allows_22_and_gzip_0() -> None:
    assert (
        parse_cache_to("type=registry,ref=r.io/c,compression=zstd,compression-level=22")[
            0
        ].compression_level
        == 22
    )
    assert parse_cache_to("type=registry,ref=r.io/c,compression-level=0")[0].compression_level == 0


def test_ref_equal_to_image_is_refused() -> None:
    with pytest.raises(CacheOptionsError) as info:
        parse_cache_to("type=registry,ref=reg.io/app", image_refs=["reg.io/app:latest"])
    assert info.value.reference == "cache-ref-is-image"
    # another tag of the same repository is fine (the docs' foo/bar:build-cache)
    assert parse_cache_to("type=registry,ref=reg.io/app:buildcache", image_refs=["reg.io/app"])


def test_cache_from_attributes() -> None:
    [local] = parse_cache_from("type=local,src=/cache,digest=sha256:" + "a" * 64)
    assert local.path == "/cache" and local.digest == "sha256:" + "a" * 64
    with pytest.raises(CacheOptionsError, match="unknown attribute bogus"):
        parse_cache_from("type=registry,ref=r.io/c,bogus=1")
    with pytest.raises(CacheOptionsError, match="unknown cache type 'inline'"):
        parse_cache_from("type=inline")
    with pytest.raises(CacheOptionsError, match="invalid digest"):
        parse_cache_from("type=local,src=/c,digest=sha256:zz")


def test_cache_from_accepts_and_ignores_export_only_attributes() -> None:
    # one string for both flags, as CI lines written for docker buildx do
    text = (
        "type=registry,ref=r.io/c:main,mode=max,compression=zstd,compression-level=3,force-compression=true,"
        "oci-mediatypes=false,image-manifest=false,ignore-error=true,tag=x"
    )
    [reg] = parse_cache_from(text)
    assert reg.ref is not None and str(reg.ref) == "r.io/c:main"
    # nothing of the export side leaks into the import entry (defaults stay)
    assert (reg.mode, reg.compression, reg.oci_mediatypes, reg.ignore_error) == (
        "min",
        "gzip",
        True,
        False,
    )
    [to] = parse_cache_to(text.removesuffix(",tag=x"))
    assert (to.mode, to.compression, to.compression_level) == ("max", "zstd", 3)
    [local] = parse_cache_from("type=local,src=/c,dest=/c,mode=max,reset=true,compression=gzip")
    assert local.path == "/c" and local.tag == "latest"
    # still strict about what is neither import nor export syntax
    with pytest.raises(CacheOptionsError, match="unknown attribute src for type=registry"):
        parse_cache_from("type=registry,ref=r.io/c,src=/x")
    with pytest.raises(CacheOptionsError, match="unknown cache type 'gha2'"):
        parse_cache_from("type=gha2,mode=max")
    with pytest.raises(CacheOptionsError, match="unterminated double quote"):
        parse_cache_from('type=registry,ref="r.io/c,mode=max')
    with pytest.raises(CacheOptionsError, match="not key=value"):
        parse_cache_from("type=registry,ref=r.io/c,max")


def test_inline_and_local_to() -> None:
    [inline] = parse_cache_to("type=inline")
    assert inline.type == "inline" and inline.mode == "min"
    [local] = parse_cache_to("type=local,dest=/tmp/c,mode=max,compression=uncompressed")
    assert local.tag == "latest" and local.mode == "max" and local.compression == "uncompressed"


def test_duplicate_exports_are_refused_but_several_allowed() -> None:
    from mason.cache.options import check_cache_exports

    many = [
        *parse_cache_to("type=registry,ref=r.io/c:a"),
        *parse_cache_to("type=registry,ref=r.io/c:b"),
        *parse_cache_to("type=local,dest=/tmp/c"),
        *parse_cache_to("type=inline"),
    ]
    check_cache_exports(many)
    with pytest.raises(CacheOptionsError, match="duplicate cache exports"):
        check_cache_exports([*many, *parse_cache_to("type=registry,ref=r.io/c:a,mode=max")])
    with pytest.raises(CacheOptionsError, match="duplicate"):
        check_cache_exports([*parse_cache_to("type=inline"), *parse_cache_to("type=inline")])


def test_insecure_hosts() -> None:
    from mason.cache.options import insecure_hosts

    opts = [
        *parse_cache_to("type=registry,ref=reg.lan:5000/c,registry.insecure=true"),
        *parse_cache_from("other.io/c"),
    ]
    assert insecure_hosts(opts) == {"reg.lan:5000"}


# -- scopes (mason.cache.scopes) ---------------------------------------------------------


def test_scope_reads_the_scope_then_main_and_writes_only_the_scope() -> None:
    sources = parse_cache_from("type=registry,ref=reg.example/app-cache,scope=feature/login")
    assert [str(o.ref) for o in sources] == [
        "reg.example/app-cache:feature-login",
        "reg.example/app-cache:main",
    ]
    [target] = parse_cache_to("type=registry,ref=reg.example/app-cache,scope=feature/login")
    assert str(target.ref) == "reg.example/app-cache:feature-login"


def test_scope_fallbacks_in_order_and_once() -> None:
    sources = parse_cache_from('type=registry,ref=r.example/c,"scope=pr-7;release;main;release"')
    assert [o.ref.tag for o in sources if o.ref] == ["pr-7", "release", "main"]
    [main] = parse_cache_from("type=registry,ref=r.example/c,scope=main")
    assert main.ref is not None and main.ref.tag == "main"


@pytest.mark.parametrize(
    ("flag", "text", "says"),
    [
        ("to", "type=registry,ref=r.example/c:v1,scope=main", "not a tag"),
        ("from", "type=registry,ref=r.example/c:v1,scope=main", "not a tag"),
        ("to", "type=registry,ref=r.example/c,scope=a;b", "one scope"),
        ("from", "type=registry,ref=r.example/c,scope=;", "scope is empty"),
        ("to", "type=registry,ref=r.example/c,scope=///", "no character a tag can hold"),
        ("to", "type=local,dest=/tmp/x,scope=main", "unknown attribute scope"),
    ],
)
def test_scope_errors_say_what(flag: str, text: str, says: str) -> None:
    parse = parse_cache_to if flag == "to" else parse_cache_from
    with pytest.raises(CacheOptionsError, match=says):
        parse(text)
