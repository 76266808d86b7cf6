"""Streams tagged with this user's key decode in-process; every other stream still decodes in the child.

sciz tags the streams of engines that need the child process (sz3) with an HMAC under a secret key
of the user's (sciz.codecs._trust). What is checked here: a tagged stream written in one process
decodes in a fresh one without forking; a stream under another key, damaged, resealed, re-tagged
badly or untagged forks; a key file that others could read or that is a link is not used; no key
at all (``SCIZ_KEY_FILE=""``, a read-only home) only makes decodes go through the child.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from sciz import codecs
from sciz.codecs import _isolate, _stream, _trust
from sciz.errors import StreamKeyWarning

FIELD = np.cumsum(np.random.default_rng(7).normal(size=(8, 64, 64)), axis=2).astype(np.float32)


@pytest.fixture
def key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "config" / "stream.key"
    monkeypatch.setenv("SCIZ_KEY_FILE", str(path))
    # A runner with an address-space limit or strict overcommit sends every sz3 stream to the child
    # (test_own_streams_decode_in_the_child_under_a_memory_limit); these tests are about the tag.
    monkeypatch.setattr(_trust, "allocations_may_fail", lambda: False)
    _trust.forget()
    yield path
    _trust.forget()


@pytest.fixture
def forks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts decodes that went to a child process (and still runs them)."""
    calls: list[int] = []
    real = _isolate.decode_in_child

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(_isolate, "decode_in_child", counting)
    return calls


def _params_raw(stream: bytes) -> bytes:
    ndim = stream[8]
    (length,) = struct.unpack_from("<I", stream, 12)
    start = 16 + 8 * ndim
    return stream[start : start + length]


def _reseal_header(stream: bytearray) -> bytearray:
    """Recompute the header CRC, as a forger would after editing the header."""
    ndim = stream[8]
    (length,) = struct.unpack_from("<I", stream, 12)
    table = 16 + 8 * ndim + length
    (count,) = struct.unpack_from("<I", stream, table + 8)
    end = table + 12 + 32 * count
    stream[end : end + 4] = struct.pack("<I", _stream.crc32(memoryview(stream)[:end]))
    return stream


def test_own_stream_is_tagged_and_decodes_without_a_child(key_file: Path, forks: list[int]) -> None:
    stream = codecs.sz3_encode(FIELD, tolerance=1e-3)
    assert key_file.stat().st_mode & 0o777 == 0o600 and key_file.stat().st_size == 32
    assert key_file.parent.stat().st_mode & 0o777 == 0o700
    assert _params_raw(bytes(stream)).endswith(b'"}') and b'"mac":"' in _params_raw(bytes(stream))
    header = _stream.parse_stream(stream, codecs.Sz3Error)
    assert "mac" not in header.params and header.tag is not None
    restored = codecs.sz3_decode(stream)
    assert forks == [] and np.abs(restored.astype(np.float64) - FIELD).max() <= 1e-3
    assert np.array_equal(codecs.decode(stream, isolated=True), restored) and forks == [1]
    described = codecs.describe_stream(stream)
    assert described["tagged"] and described["own"] and described["params"] == {"tolerance": 1e-3}
    # Streams of engines that need no child carry no tag (and cost no hashing)
    assert _stream.parse_stream(codecs.zfp_encode(FIELD, tolerance=1e-3), codecs.ZfpError).tag is None


def test_streams_of_several_chunks_are_tagged_whole(key_file: Path, forks: list[int]) -> None:
    big = np.tile(FIELD, (1, 16, 18))  # 18 MiB: two chunks on two threads
    split = codecs.sz3_encode(big, tolerance=1e-3, numthreads=2)
    assert len(_stream.parse_stream(split, codecs.Sz3Error).chunks) == 2
    assert np.abs(codecs.sz3_decode(split) - big).max() <= 1e-3
    assert forks == []
    damaged = bytearray(split)
    damaged[-3] ^= 0x40  # the second chunk's body: its CRC fails before any engine runs
    with pytest.raises(codecs.Sz3Error, match="chunk 1 checksum"):
        codecs.sz3_decode(bytes(damaged))


def test_another_users_key_untagged_and_tampered_streams_go_to_the_child(
    key_file: Path, forks: list[int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = bytes(codecs.sz3_encode(FIELD, tolerance=1e-3))
    expected = codecs.sz3_decode(stream)
    assert forks == []

    cases: dict[str, bytes] = {}
    digits = _params_raw(stream).rfind(b'"mac":"') + 7 + 16 + 8 * stream[8]
    wrong = bytearray(stream)
    wrong[digits] = ord("0") if wrong[digits] != ord("0") else ord("1")
    cases["a changed tag digit"] = bytes(_reseal_header(wrong))
    header = _stream.parse_stream(stream, codecs.Sz3Error)
    cases["repacked without the key"] = bytes(_stream.pack_stream(header))
    cases["tagged under another key"] = bytes(_stream.pack_stream(header, key=os.urandom(32)))
    header.params["mac"] = "ab" * 32  # a tag that is not the last parameter sciz writes
    header.params["zz"] = 1
    moved = bytes(_stream.pack_stream(header))
    cases["a tag in the wrong place"] = moved
    for name, forged in cases.items():
        forks.clear()
        assert np.array_equal(codecs.sz3_decode(forged), expected), name
        assert forks == [1], f"{name}: decoded without the child"
        assert not codecs.describe_stream(forged)["own"], name

    # Damaged bodies, checksums resealed, tagged under a key that is not this user's: the child
    # takes any engine abort, the caller gets an array or a clean error
    forged = _stream.parse_stream(stream, codecs.Sz3Error)
    original = bytes(forged.chunks[0].payload)
    outcomes = set()
    for start in range(40, len(original) - 8, max(1, (len(original) - 48) // 12)):
        payload = bytearray(original)
        payload[start : start + 8] = b"\xff" * 8
        forged.chunks[0].payload = bytes(payload)
        forks.clear()
        try:
            codecs.sz3_decode(bytes(_stream.pack_stream(forged, key=os.urandom(32))))
            outcomes.add("array")
        except codecs.Sz3Error:
            outcomes.add("error")
        assert forks == [1]
    assert "error" in outcomes, "no damage the engine noticed: the test proves nothing"

    # Another user's key file: the same stream is no longer "own"
    monkeypatch.setenv("SCIZ_KEY_FILE", str(tmp_path / "other.key"))
    _trust.forget()
    forks.clear()
    assert np.array_equal(codecs.sz3_decode(stream), expected) and forks == [1]


def test_malformed_tags_are_no_tags(key_file: Path) -> None:
    header = _stream.parse_stream(codecs.sz3_encode(FIELD, tolerance=1e-3), codecs.Sz3Error)
    for value in ["zz" * 32, "ab" * 31, 12, None, ["ab"], "AB" * 32 + "0"]:
        header.params["mac"] = value
        stream = bytes(_stream.pack_stream(header))
        parsed = _stream.parse_stream(stream, codecs.Sz3Error)
        assert parsed.tag is None and "mac" not in parsed.params, value
        assert np.abs(codecs.sz3_decode(stream) - FIELD).max() <= 1e-3


@pytest.mark.parametrize("problem", ["group-readable", "symlink", "short", "directory", "empty setting"])
def test_unsafe_or_missing_keys_are_not_used(problem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "stream.key"
    if problem == "group-readable":
        path.write_bytes(os.urandom(32))
        path.chmod(0o640)
    elif problem == "symlink":
        real = tmp_path / "real.key"
        real.write_bytes(os.urandom(32))
        real.chmod(0o600)
        path.symlink_to(real)
    elif problem == "short":
        path.write_bytes(os.urandom(16))
        path.chmod(0o600)
    elif problem == "directory":
        path.mkdir()
    monkeypatch.setenv("SCIZ_KEY_FILE", "" if problem == "empty setting" else str(path))
    _trust.forget()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stream = codecs.sz3_encode(FIELD, tolerance=1e-3)
        assert _stream.parse_stream(stream, codecs.Sz3Error).tag is None
        assert np.abs(codecs.sz3_decode(stream) - FIELD).max() <= 1e-3
        if problem == "symlink":  # not followed, and said so (a dotfile manager's link was ignored silently)
            assert any("symbolic link" in str(w.message) and str(path) in str(w.message) for w in caught)
            assert path.is_symlink(), "the link is left as it was"
        if problem == "group-readable":
            assert any("chmod 600" in str(w.message) for w in caught)
            assert path.read_bytes() and path.stat().st_mode & 0o777 == 0o640, "a user's file is never rewritten"
        if problem == "empty setting":
            assert not list(tmp_path.iterdir()), "no key is made when signing is turned off"
    finally:
        _trust.forget()


def test_a_key_that_cannot_be_made_only_means_no_tags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A home that cannot hold the key (here a file where its folder would be; a read-only home
    is the same OSError, and root ignores permissions) encodes untagged streams, and writes nothing."""
    blocker = tmp_path / "config"
    blocker.write_bytes(b"a file, not a folder")
    monkeypatch.setenv("SCIZ_KEY_FILE", str(blocker / "sciz" / "stream.key"))
    _trust.forget()
    try:
        stream = codecs.sz3_encode(FIELD, tolerance=1e-3)
        assert _stream.parse_stream(stream, codecs.Sz3Error).tag is None
        assert np.abs(codecs.sz3_decode(stream) - FIELD).max() <= 1e-3
        assert sorted(p.name for p in tmp_path.iterdir()) == ["config"]
    finally:
        _trust.forget()


def test_a_relative_key_file_setting_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SCIZ_KEY_FILE=stream.key would name another key in each working directory (a trial user's
    streams became "another key's" after a cd; the attack: a data folder shared later hands the key,
    and in-process decodes, to its readers): it is refused with a warning, and nothing is written."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCIZ_KEY_FILE", "keys/stream.key")
    _trust.forget()
    try:
        with pytest.warns(StreamKeyWarning, match="SCIZ_KEY_FILE='keys/stream.key' is not an absolute path"):
            stream = codecs.sz3_encode(FIELD, tolerance=1e-3)
        assert _trust.key_path() is None and _stream.parse_stream(stream, codecs.Sz3Error).tag is None
        assert not list(tmp_path.iterdir()), "no key is made in the working directory"
        monkeypatch.setenv("SCIZ_KEY_FILE", "~/sciz.key")  # the shell's ~ is no relative path
        assert _trust.key_path() == Path("~/sciz.key").expanduser()
    finally:
        _trust.forget()


def test_info_says_where_and_why_a_stream_decodes(
    tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sciz info`` of a .scz explains the decode path of every sz3 stream, tagged or not (a trial
    user's untagged streams, written under a read-only home, showed nothing)."""
    from sciz.formats.scz import read_scz

    own, zfp = tmp_path / "own.scz", tmp_path / "zfp.scz"
    own.write_bytes(codecs.sz3_encode(FIELD, tolerance=1e-3))
    zfp.write_bytes(codecs.zfp_encode(FIELD, tolerance=1e-3))
    untagged = tmp_path / "untagged.scz"
    monkeypatch.setenv("SCIZ_KEY_FILE", "")
    untagged.write_bytes(codecs.sz3_encode(FIELD, tolerance=1e-3))

    def note(path: Path, setting: str) -> str | None:
        monkeypatch.setenv("SCIZ_KEY_FILE", setting)
        _trust.forget()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StreamKeyWarning)  # the relative setting's own warning
            return read_scz(path)[1].details.get("tag")

    assert note(own, str(key_file)).startswith(f"yours (valid under your key {key_file}): decodes in-process")
    assert note(zfp, str(key_file)) is None, "zfp needs no child: nothing to explain"
    with monkeypatch.context() as limited:  # own, but memory is limited: the child (attack finding)
        limited.setattr(_trust, "allocations_may_fail", lambda: True)
        assert "memory is limited here" in note(own, str(key_file)) and "forked child" in note(own, str(key_file))
    expected = {
        (untagged, str(key_file)): "none (written by another sciz",
        (own, str(tmp_path / "other.key")): f"made with another key than yours ({tmp_path / 'other.key'})",
        (own, str(tmp_path / "missing" / "stream.key")): "not checked: no usable key at",
        (own, ""): "not checked: SCIZ_KEY_FILE is set empty here",
        (own, "relative.key"): "not checked: SCIZ_KEY_FILE='relative.key' is not an absolute path",
    }
    (tmp_path / "other.key").write_bytes(os.urandom(32))
    (tmp_path / "other.key").chmod(0o600)
    for (path, setting), start in expected.items():
        text = note(path, setting)
        assert text is not None and text.startswith(start), (path.name, setting, text)
        assert text.endswith("decodes in a forked child, slower (a fork per stream or zspy chunk)"), text


def test_a_key_made_later_by_another_process_is_found(
    key_file: Path, forks: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that found no key (a dask worker that read a colleague's store first) finds the
    key another process of the user makes later; it used to keep forking for its whole life."""
    monkeypatch.setattr(_trust, "_REREAD_SECONDS", 0.0)  # what a read found is used for no time: read again
    stream = codecs.sz3_encode(FIELD, tolerance=1e-3)  # makes the key, which is then taken away
    key = key_file.read_bytes()
    key_file.unlink()
    _trust.forget()
    assert np.abs(codecs.sz3_decode(stream) - FIELD).max() <= 1e-3 and forks == [1], "no key: the child"
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # as another process makes it
    os.write(fd, key)
    os.close(fd)
    forks.clear()
    assert np.abs(codecs.sz3_decode(stream) - FIELD).max() <= 1e-3 and forks == [], "the key is found"
    assert _trust.signing_key() == key
    key_file.unlink()  # and a key deleted is no longer used
    assert _trust.signing_key() is None


def test_default_key_place_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SCIZ_KEY_FILE", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert _trust.key_path() == tmp_path / "sciz" / "stream.key"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _trust.key_path() == tmp_path / "home" / ".config" / "sciz" / "stream.key"


CHILD = textwrap.dedent(
    """
    import os, sys, json
    import numpy as np
    from sciz import codecs
    from sciz.codecs import _isolate, _trust

    def refuse(*args, **kwargs):
        raise AssertionError("forked")

    if sys.argv[2] == "no-fork":
        _isolate.decode_in_child = refuse
        _trust.allocations_may_fail = lambda: False  # the runner's own memory limits are not the tag's test
    data = open(sys.argv[1], "rb").read()
    result = codecs.sz3_decode(data)
    print(json.dumps([list(result.shape), float(result.sum())]))
    """
)


def test_tagged_in_one_process_trusted_in_a_fresh_one(tmp_path: Path, key_file: Path) -> None:
    """Persistence: the key on disk, not a cache, makes a stream one's own; a fresh process with
    another key forks (and still decodes)."""
    path = tmp_path / "field.sz3"
    path.write_bytes(codecs.sz3_encode(FIELD, tolerance=1e-3))
    expected = codecs.sz3_decode(path.read_bytes())
    environment = {**os.environ, "SCIZ_KEY_FILE": str(key_file)}

    def run(mode: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-c", CHILD, str(path), mode]
        return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120)

    done = run("no-fork")
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == [list(FIELD.shape), float(expected.sum())]
    environment["SCIZ_KEY_FILE"] = str(tmp_path / "someone-else.key")
    refused = run("no-fork")
    assert refused.returncode != 0 and "forked" in refused.stderr
    forked = run("fork")
    assert forked.returncode == 0 and json.loads(forked.stdout)[1] == float(expected.sum())


def test_concurrent_first_encodes_agree_on_one_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "k" / "stream.key"
    script = (
        "import sys, numpy as np; from sciz import codecs\n"
        "s = codecs.sz3_encode(np.arange(4096, dtype='f4').reshape(64, 64), tolerance=1e-3)\n"
        "open(sys.argv[1], 'wb').write(s)\n"
    )
    environment = {**os.environ, "SCIZ_KEY_FILE": str(path)}
    outputs = [tmp_path / f"{i}.sz3" for i in range(4)]
    runs = [subprocess.Popen([sys.executable, "-c", script, str(out)], env=environment) for out in outputs]
    assert [run.wait(timeout=120) for run in runs] == [0] * 4
    assert path.stat().st_size == 32 and sorted(p.name for p in path.parent.iterdir()) == ["stream.key"]
    monkeypatch.setenv("SCIZ_KEY_FILE", str(path))
    _trust.forget()
    try:
        for out in outputs:  # every process tagged with the one key that stayed
            data = out.read_bytes()
            assert _stream.is_own(data, _stream.parse_stream(data, codecs.Sz3Error)), out.name
    finally:
        _trust.forget()


KEY_FILE_PROBE = textwrap.dedent(
    """
    import sys, warnings
    import numpy as np
    from sciz import codecs
    from sciz.codecs import _stream

    warnings.simplefilter("always")
    tagged = open(sys.argv[1], "rb").read()
    with warnings.catch_warnings(record=True) as caught:
        stream = codecs.sz3_encode(np.linspace(0, 1, 4096, dtype="f4").reshape(64, 64), tolerance=1e-3)
        codecs.sz3_decode(tagged)
    warned = any("chmod 600" in str(w.message) for w in caught)
    print(_stream.parse_stream(stream, codecs.Sz3Error).tag is not None, warned)
    """
)


def test_a_key_path_that_is_a_fifo_does_not_hang(tmp_path: Path) -> None:
    """Attack finding: opening the key blocked forever on a FIFO (waiting for a writer), in every
    sz3 encode and in every decode of a tagged stream."""
    fifo = tmp_path / "stream.key"
    os.mkfifo(fifo)
    tagged = tmp_path / "tagged.sz3"
    tagged.write_bytes(codecs.sz3_encode(FIELD, tolerance=1e-3))
    environment = {**os.environ, "SCIZ_KEY_FILE": str(fifo)}
    command = [sys.executable, "-c", KEY_FILE_PROBE, str(tagged)]
    try:
        done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("a FIFO at the key's place blocked the encode or the decode")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "True"], "no tag, and a warning naming the key file"


def test_a_scz_file_is_hashed_once(tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Attack finding: sciz.load and sciz info hashed a .scz stream twice (once for the report of
    whose it is, once to choose where to decode it): 0.15 s more per 256 MB stored."""
    import sciz

    path = tmp_path / "field.scz"
    path.write_bytes(codecs.sz3_encode(FIELD, tolerance=1e-3))
    hashed: list[int] = []
    real = _trust.tag
    monkeypatch.setattr(_trust, "tag", lambda *args: hashed.append(1) or real(*args))
    dataset = sciz.load(path)
    assert np.abs(dataset.data - FIELD).max() <= 1e-3
    assert dataset.storage["data"].details["tag"].startswith("yours") and hashed == [1]


MEMORY_LIMITED = textwrap.dedent(
    """
    import resource, sys
    from sciz import codecs
    from sciz.codecs import _isolate

    forks = []
    child = _isolate.decode_in_child
    _isolate.decode_in_child = lambda *args, **kwargs: forks.append(1) or child(*args, **kwargs)
    data = open(sys.argv[1], "rb").read()
    codecs.sz3_decode(data[:0] + data)  # the engine loaded, warm
    status = open("/proc/self/status").read().split("VmSize:")[1].split()[0]
    limit = int(status) * 1024 + int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    forks.clear()
    try:
        outcome = "array %s" % (codecs.sz3_decode(data).shape,)
    except (codecs.Sz3Error, MemoryError) as exc:
        outcome = type(exc).__name__
    print(outcome, "forked" if forks else "in-process")
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmSize from /proc (Linux)")
def test_own_streams_decode_in_the_child_under_a_memory_limit(tmp_path: Path, key_file: Path) -> None:
    """Fault injection (attack finding): the tag proves who wrote a stream, not that the engine
    cannot abort. With an address-space limit (ulimit -v, as batch schedulers set), SZ3 meets a
    failed allocation with std::terminate (or SIGSEGV): an own 4 MB stream decoded in-process killed
    the caller, where the child had turned the same failure into an Sz3Error."""
    field = np.cumsum(np.random.default_rng(0).normal(size=(4, 512, 512)), axis=2).astype(np.float32)
    path = tmp_path / "field.sz3"
    path.write_bytes(codecs.sz3_encode(field, tolerance=1e-2))
    environment = {**os.environ, "SCIZ_KEY_FILE": str(key_file)}
    command = [sys.executable, "-c", MEMORY_LIMITED, str(path), str(2 * field.nbytes)]
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"the decoding process died ({done.returncode}): {done.stderr[-500:]}"
    assert done.stdout.split()[-1] == "forked", done.stdout


def test_a_key_that_cannot_be_linked_is_made_once_per_process(key_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Attack finding: on a file system without hard links (FAT, some network homes) every sz3
    encode wrote, fsynced and deleted a new random key, and never tagged."""
    attempts: list[int] = []

    def no_links(source: object, target: object) -> None:
        attempts.append(1)
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    for _ in range(3):
        stream = codecs.sz3_encode(FIELD, tolerance=1e-3)
        assert _stream.parse_stream(stream, codecs.Sz3Error).tag is None
    assert attempts == [1] and list(key_file.parent.iterdir()) == []


KILLED_CREATOR = (
    "import os, signal\n"
    "from sciz.codecs import _trust\n"
    "os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # killed between writing and linking\n"
    "_trust.signing_key(create=True)\n"
)


def test_temporary_keys_of_killed_creators_are_removed(key_file: Path) -> None:
    """Attack finding: a creator killed before linking its key left its temporary key (a secret
    nobody uses) for ever; the next creator removed none. They are sciz writers' temporary siblings
    (``.stream.key.sciz-tmp-...``), removed as any killed writer's debris."""
    environment = {**os.environ, "SCIZ_KEY_FILE": str(key_file)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", KILLED_CREATOR], env=environment, timeout=120)
    left = sorted(p.name for p in key_file.parent.iterdir())
    first_removed = len(left) == 1 and left[0].startswith(".stream.key.sciz-tmp-")
    assert first_removed, f"the second creator removes the first's: {left}"
    assert _trust.signing_key(create=True) is not None
    assert [p.name for p in key_file.parent.iterdir()] == ["stream.key"]


RACE = textwrap.dedent(
    """
    import mmap, os, sys
    from sciz import codecs
    from sciz.codecs import _isolate, _stream, _trust

    path = sys.argv[1]
    stream = open(path, "rb").read()
    start = len(stream) - len(_stream.parse_stream(stream, codecs.Sz3Error).chunks[0].payload)
    forks = []
    child = _isolate.decode_in_child
    _isolate.decode_in_child = lambda *args, **kwargs: forks.append(1) or child(*args, **kwargs)
    real = _trust.tag

    def tag_then_rewrite(*args):  # another process rewrites the file just after the tag check
        value = real(*args)
        fd = os.open(path, os.O_WRONLY)
        os.pwrite(fd, b"\\xff" * 8, start + 60)  # inside the SZ3 body: the engine would abort
        os.close(fd)
        return value

    _trust.tag = tag_then_rewrite
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        try:
            outcome = "array %s" % (codecs.sz3_decode(mapped).shape,)
        except codecs.Sz3Error:
            outcome = "Sz3Error"
    print(outcome, "forked" if forks else "in-process")
    """
)


def test_an_own_stream_in_a_file_mapping_decodes_in_the_child(tmp_path: Path, key_file: Path, forks: list[int]) -> None:
    """Attack finding (time of check, time of use): a file mapping is memory another process can
    rewrite between the tag check and the decode; an own stream mapped from a group-writable
    file, its SZ3 body rewritten right after the check, aborted the caller. Only bytes, bytearrays
    and arrays owning their memory are decoded in-process; the rest, as before tags, in the child."""
    path = tmp_path / "field.sz3"
    path.write_bytes(codecs.sz3_encode(np.linspace(0, 1, 19200, dtype=np.float32).reshape(12, 40, 40), tolerance=1e-3))
    environment = {**os.environ, "SCIZ_KEY_FILE": str(key_file)}
    done = subprocess.run(
        [sys.executable, "-c", RACE, str(path)], env=environment, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"the decoding process died ({done.returncode}): {done.stderr[-500:]}"
    assert done.stdout.split()[-1] == "forked", done.stdout
    stream = path.read_bytes()
    for private in (stream, bytearray(stream), np.frombuffer(stream, np.uint8), np.frombuffer(stream, np.uint8).copy()):
        assert codecs.sz3_decode(memoryview(private)).shape == (12, 40, 40)
    assert forks == [], "memory of this process alone decodes in-process"


def test_no_home_directory_means_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection (attack finding): with HOME unset and no passwd entry (a container run as
    an arbitrary user id), every sz3 encode, every decode of a tagged stream and describe_stream
    raised RuntimeError "Could not determine home directory"; now there is simply no key."""
    import pwd

    tagged = bytes(codecs.sz3_encode(FIELD, tolerance=1e-3))

    def no_entry(uid: int) -> None:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    for name in ("HOME", "XDG_CONFIG_HOME", "SCIZ_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    _trust.forget()
    try:
        assert _trust.key_path() is None
        stream = codecs.sz3_encode(FIELD, tolerance=1e-3)
        assert _stream.parse_stream(stream, codecs.Sz3Error).tag is None
        assert np.abs(codecs.sz3_decode(tagged) - FIELD).max() <= 1e-3
        assert codecs.describe_stream(tagged)["tagged"] and not codecs.describe_stream(tagged)["own"]
    finally:
        _trust.forget()


def test_a_deleted_or_replaced_key_stops_being_trusted(
    key_file: Path, forks: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack finding: a process read the key once; after the user deleted or replaced a key that
    had leaked, every running process (a notebook, a server) went on decoding streams tagged under
    it in-process. The key is read again after ``_REREAD_SECONDS`` (here at once)."""
    monkeypatch.setattr(_trust, "_REREAD_SECONDS", 0.0)
    stream = codecs.sz3_encode(FIELD, tolerance=1e-3)
    codecs.sz3_decode(stream)
    assert forks == []
    key_file.unlink()
    codecs.sz3_decode(stream)
    assert forks == [1], "a deleted key is no longer trusted"
    replacement = key_file.with_name("new.key")
    replacement.write_bytes(os.urandom(32))
    replacement.chmod(0o600)
    replacement.replace(key_file)
    codecs.sz3_decode(stream)
    assert forks == [1, 1], "nor a replaced one"
    fresh = codecs.sz3_encode(FIELD, tolerance=1e-3)
    codecs.sz3_decode(fresh)
    assert forks == [1, 1], "new streams are tagged under the new key"


FORK_WHILE_READING = textwrap.dedent(
    """
    import os, signal, threading, time
    from sciz.codecs import _trust

    held, release = threading.Event(), threading.Event()

    def slow_read():  # another thread inside signing_key (a key on a slow network home)
        with _trust._lock:
            held.set()
            release.wait()

    thread = threading.Thread(target=slow_read)
    thread.start()
    held.wait()
    pid = os.fork()
    if pid == 0:  # e.g. a multiprocessing worker, which then encodes sz3
        _trust.signing_key(create=True)
        os._exit(0)
    for _ in range(200):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    release.set()
    thread.join()
    print("ok" if done else "hung")
    """
)


def test_a_process_forked_while_another_thread_reads_the_key_does_not_hang(key_file: Path) -> None:
    """Fault injection (attack finding): a fork while another thread held the key lock left the
    lock held for ever in the child, whose first sz3 encode then hung."""
    environment = {**os.environ, "SCIZ_KEY_FILE": str(key_file)}
    done = subprocess.run(
        [sys.executable, "-c", FORK_WHILE_READING], env=environment, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.split() == ["ok"], done.stdout + done.stderr[-1000:]
