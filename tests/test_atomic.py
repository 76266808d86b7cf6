"""sciz.atomic: replacement without a gap, debris of killed writers removed, never deleting what is not ours."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sciz import atomic
from sciz.errors import FormatError

SRC = str(Path(atomic.__file__).resolve().parents[1])


def _is_tree(path: Path) -> bool:
    return (path / "marker").is_file()


def _write_tree(target: Path, text: str) -> None:
    with atomic.atomic_directory(target, replace_if=_is_tree) as temporary:
        (temporary / "marker").write_text(text)
        (temporary / "sub").mkdir()
        (temporary / "sub" / "data").write_text(text * 3)


def _run_child(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=SRC)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_directory_default_refuses_what_is_not_ours(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("precious")
    with pytest.raises(FormatError, match=str(project)), atomic.atomic_directory(project) as temporary:
        (temporary / "x").write_text("never")
    with (
        pytest.raises(FormatError, match="not a file of the format"),
        atomic.atomic_directory(project, replace_if=_is_tree),
    ):
        pytest.fail("the body must not run when the target cannot be replaced")
    assert (project / "notes.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"], "nothing left beside it"
    empty = tmp_path / "empty"
    empty.mkdir()
    with atomic.atomic_directory(empty) as temporary:
        (temporary / "x").write_text("ok")
    assert (empty / "x").read_text() == "ok", "an empty directory may be replaced"


def test_file_refuses_directories_and_fifos(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(FormatError, match="directory is in the way"), atomic.atomic_file(tmp_path / "dir"):
        pass
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(FormatError, match="not a regular file"), atomic.atomic_file(fifo):
        pass
    other = tmp_path / "other.bin"
    other.write_bytes(b"foreign")
    with (
        pytest.raises(FormatError, match="not a file of the format"),
        atomic.atomic_file(other, replace_if=lambda p: p.read_bytes().startswith(b"MINE")),
    ):
        pass
    assert other.read_bytes() == b"foreign"


def test_oserror_while_writing_is_a_format_error_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(FormatError, match=r"out\.bin: No space left") as raised, atomic.atomic_file(target):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert isinstance(raised.value.__cause__, OSError)
    tree = tmp_path / "tree"
    with pytest.raises(FormatError, match=r"tree: No space left"), atomic.atomic_directory(tree):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
    assert target.read_bytes() == b"old"


def test_real_file_size_limit_is_a_format_error(tmp_path: Path) -> None:
    """A write that the system refuses midway (RLIMIT_FSIZE, as a full disk would) leaves no temporary."""
    done = _run_child(
        """
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        from sciz.atomic import atomic_file
        from sciz.errors import FormatError
        try:
            with atomic_file("big.bin") as handle:
                handle.write(b"x" * 100000)
        except FormatError as exc:
            print("FormatError:", exc)
        """,
        tmp_path,
    )
    assert "FormatError: cannot write" in done.stdout and "big.bin" in done.stdout, done.stdout + done.stderr
    assert list(tmp_path.iterdir()) == []


def test_errors_name_the_users_path_not_the_temporary(tmp_path: Path) -> None:
    """A writer's error (a zarr entry, an OSError carrying a file name, h5py's text) names ``x.zspy``,
    never the temporary sibling ``.x.zspy.sciz-tmp-...`` it was writing."""
    done = _run_child(
        """
        import resource, signal
        import numpy as np
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (40960, 40960))
        import sciz
        try:
            sciz.save(sciz.Dataset(np.random.default_rng(0).random((64, 64, 8))), "x.zspy")
        except sciz.errors.FormatError as exc:
            print("FormatError:", exc)
        """,
        tmp_path,
    )
    assert f"FormatError: {tmp_path / 'x.zspy'}: cannot write entry" in done.stdout, done.stdout + done.stderr
    assert "sciz-tmp" not in done.stdout and list(tmp_path.iterdir()) == []
    temporary = atomic._sibling(tmp_path / "x y.h5", "tmp")
    raised = OSError(errno.EACCES, os.strerror(errno.EACCES), str(temporary / "data"))
    assert str(atomic.write_error(tmp_path / "x y.h5", raised)) == (
        f"cannot write {tmp_path / 'x y.h5'}: {os.strerror(errno.EACCES)} ({tmp_path / 'x y.h5' / 'data'})"
    )
    h5py_text = RuntimeError(f"Can't write data (file name = '{temporary}', errno = 5)")
    assert "sciz-tmp" not in str(atomic.write_error("x y.h5", h5py_text))
    with pytest.raises(FormatError) as caught, atomic.atomic_file(tmp_path / "y.bin") as handle:
        raise FormatError(f"{handle.name}: broken")
    assert str(caught.value) == f"{tmp_path / 'y.bin'}: broken"
    assert atomic.public_names("value 3.5 in .x.npz and (.a.b)") == "value 3.5 in .x.npz and (.a.b)"


def test_kill_between_the_renames_loses_nothing(tmp_path: Path) -> None:
    """A writer killed after moving the old tree aside: sciz restores the new tree; the next write cleans up."""
    target = tmp_path / "tree"
    _write_tree(target, "old")
    done = _run_child(
        """
        import os, signal
        from pathlib import Path
        from sciz import atomic
        original = Path.replace
        def replace(self, destination):
            if ".sciz-ready-" in self.name and Path(destination).name == "tree":
                os.kill(os.getpid(), signal.SIGKILL)  # between the two renames
            return original(self, destination)
        Path.replace = replace
        with atomic.atomic_directory("tree", replace_if=lambda p: (p / "marker").is_file()) as tmp:
            (tmp / "marker").write_text("new")
        """,
        tmp_path,
    )
    assert done.returncode == -9, done.stderr
    assert not target.exists(), "the kill landed between the renames"
    kinds = sorted(p.name.split(".sciz-")[1].split("-")[0] for p in tmp_path.iterdir())
    assert kinds == ["old", "ready"]
    assert atomic.recover(target) is True
    assert (target / "marker").read_text() == "new", "the complete new tree wins"
    _write_tree(target, "third")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tree"], "the next write removed the debris"


def test_kill_while_writing_leaves_old_and_debris_the_next_write_removes(tmp_path: Path) -> None:
    target = tmp_path / "tree"
    _write_tree(target, "old")
    (tmp_path / "out.bin").write_bytes(b"old")
    done = _run_child(
        """
        import os, signal
        from sciz import atomic
        with atomic.atomic_file("out.bin") as handle:
            handle.write(b"half")
            handle.flush()
            with atomic.atomic_directory("tree", replace_if=lambda p: (p / "marker").is_file()) as tmp:
                (tmp / "marker").write_text("half")
                os.kill(os.getpid(), signal.SIGKILL)
        """,
        tmp_path,
    )
    assert done.returncode == -9, done.stderr
    assert (target / "marker").read_text() == "old"
    assert (tmp_path / "out.bin").read_bytes() == b"old"
    debris = atomic.debris_of(target) + atomic.debris_of(tmp_path / "out.bin")
    assert len(debris) == 2, sorted(p.name for p in tmp_path.iterdir())
    assert atomic.recover(target) is False, "nothing to restore: the target is there"
    _write_tree(target, "new")
    with atomic.atomic_file(tmp_path / "out.bin") as handle:
        handle.write(b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin", "tree"]


def test_live_writers_siblings_are_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "tree"
    with atomic.atomic_directory(target, replace_if=_is_tree) as temporary:
        assert atomic.debris_of(target) == [], "our own temporary is not debris"
        assert atomic.debris_of(target, include_live=True) == [temporary]
        _write_tree(target, "inner")  # a second write meanwhile must not remove the first's temporary
        assert temporary.is_dir()
        (temporary / "marker").write_text("outer")
    assert (target / "marker").read_text() == "outer", "the last write to complete wins"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tree"]


def test_concurrent_writers_never_fail_and_the_last_wins(tmp_path: Path) -> None:
    code = """
        import sys
        from sciz import atomic
        for i in range(25):
            with atomic.atomic_directory("tree", replace_if=lambda p: (p / "marker").is_file()) as tmp:
                (tmp / "marker").write_text(f"{sys.argv[1]}-{i}")
                (tmp / "data").write_bytes(bytes(2000))
    """
    env = dict(os.environ, PYTHONPATH=SRC)
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), str(n)],
            cwd=tmp_path,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(3)
    ]
    seen = set()
    while any(w.poll() is None for w in writers):
        # FileNotFoundError: the first write has not finished yet, or this reader (not sciz) hit the swap.
        with contextlib.suppress(FileNotFoundError):
            seen.add((tmp_path / "tree" / "marker").read_text())
    outcomes = [(w.returncode, w.communicate()[1]) for w in writers]
    errors = [stderr for code, stderr in outcomes if code != 0]
    assert not errors, errors
    assert (tmp_path / "tree" / "marker").read_text().endswith("-24")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tree"]
    assert seen, "the reader saw the tree"


def test_convert_force_never_wipes_an_unrelated_folder(tmp_path: Path) -> None:
    """`sciz convert x.tmd some_dir --to zspy --force` once wiped a project folder; now it is refused."""
    import numpy as np

    import sciz

    sciz.save(sciz.Dataset(np.zeros((4, 5), np.float32)), tmp_path / "x.tmd")
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("precious")
    env = dict(os.environ, PYTHONPATH=SRC)
    done = subprocess.run(
        [sys.executable, "-m", "sciz", "convert", "x.tmd", "project", "--to", "zspy", "--force"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "project" in done.stderr + done.stdout, done.stderr
    assert sorted(p.name for p in project.iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project", "x.tmd"]
    sciz.save(sciz.Dataset(np.ones((4, 5), np.float32)), tmp_path / "store.zspy")
    again = subprocess.run(
        [sys.executable, "-m", "sciz", "convert", "x.tmd", "store.zspy", "--force"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert not np.asarray(sciz.load(tmp_path / "store.zspy").data).any(), "--force replaced the zspy store"


def test_a_reader_waits_for_a_swap_in_progress(tmp_path: Path) -> None:
    """Between a writer's two renames the name is missing; recover() (called by sciz.load) waits for the swap."""
    import threading
    import time

    target = tmp_path / "tree"
    _write_tree(target, "old")
    moved, done = threading.Event(), threading.Event()

    def writer() -> None:
        with atomic._parent_lock(tmp_path):
            target.rename(tmp_path / "aside")
            moved.set()
            time.sleep(0.3)
            (tmp_path / "aside").rename(target)
            done.set()  # inside the lock: set before any waiter can go on

    thread = threading.Thread(target=writer)
    thread.start()
    moved.wait(5)
    assert not target.exists(), "the swap is in progress"
    atomic.recover(target)
    assert done.is_set() and (target / "marker").read_text() == "old", "recover returned before the swap ended"
    thread.join()


def test_a_tree_a_reader_holds_is_left_to_it_and_removed_by_a_later_write(tmp_path: Path) -> None:
    """A writer never deletes a replaced tree under a reader (another process); the next write removes it."""
    target = tmp_path / "tree"
    _write_tree(target, "old")
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import os, sys
                from sciz import atomic
                fd, _ = atomic.hold_directory({str(target)!r})
                print("held", flush=True)
                sys.stdin.readline()  # the parent replaces the tree meanwhile
                sub = os.open("sub", os.O_RDONLY, dir_fd=fd)
                for name, where in (("marker", fd), ("data", sub)):
                    handle = os.open(name, os.O_RDONLY, dir_fd=where)
                    print(os.read(handle, 100).decode(), flush=True)
                sys.stdin.readline()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=SRC),
    )
    assert reader.stdin is not None and reader.stdout is not None
    try:
        assert reader.stdout.readline().strip() == "held"
        _write_tree(target, "new")
        left = atomic.debris_of(target, include_live=True)
        assert [p.name.split(".sciz-")[1].split("-")[0] for p in left] == ["old"], "the held tree was deleted"
        _write_tree(target, "newer")  # the reader still holds it: a later write leaves it too
        assert atomic.debris_of(target, include_live=True) == left
        reader.stdin.write("\n")
        reader.stdin.flush()
        assert [reader.stdout.readline().strip() for _ in range(2)] == ["old", "oldoldold"], "not the tree it opened"
    finally:
        reader.kill()  # dies holding it: the lock goes with it, the tree stays
        reader.communicate(timeout=30)
    assert atomic.debris_of(target, include_live=True) == left
    _write_tree(target, "last")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tree"], "the next write removes the released tree"
    assert (target / "marker").read_text() == "last"


def test_hold_directory_waits_for_a_missing_name_and_refuses_no_directory(tmp_path: Path) -> None:
    target = tmp_path / "tree"
    with pytest.raises(FileNotFoundError):
        atomic.hold_directory(target)
    _write_tree(target, "old")
    ready = target.with_name(f".tree.sciz-ready-{atomic._host()}-999999999-1-ab")
    target.rename(ready)  # as a writer killed between its two renames leaves it
    fd, identity = atomic.hold_directory(target)
    try:
        assert (target / "marker").read_text() == "old" and identity == (os.fstat(fd).st_dev, os.fstat(fd).st_ino)
    finally:
        atomic.release_directory(fd, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tree"]
