"""The safe filesystem primitives root uses in folders others write (aifhub.fsafe), attack by attack."""

import logging
import os
import stat
import threading

import pytest

from aifhub import fsafe

UID = 299_999  # a uid nobody uses: the "learner" owning the attacked folder


@pytest.fixture
def area(tmp_path):
    """``victim/`` (root's files the attacks aim at), ``src/`` (materials) and ``dst/`` (the learner's)."""
    victim = tmp_path / "victim"
    victim.mkdir()
    secret = victim / "secret"
    secret.write_text("root only")
    secret.chmod(0o600)
    src = tmp_path / "src"
    (src / "data").mkdir(parents=True)
    (src / "README.md").write_text("materials")
    (src / "data" / "table.csv").write_text("a,b\n")
    dst = tmp_path / "dst"
    dst.mkdir()
    return tmp_path, victim, secret, src, dst


def untouched(secret, victim):
    st = secret.stat()
    assert secret.read_text() == "root only" and st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o600
    assert sorted(p.name for p in victim.iterdir()) == ["secret"]


def copy(src, dst, **kw):
    with fsafe.opened(src) as s, fsafe.opened(dst) as d:
        return fsafe.copy_tree(s, d, existing="keep", uid=UID, gid=UID, **kw)


def test_copy_fills_in_materials_owned_by_the_learner(area):
    _, victim, secret, src, dst = area
    assert copy(src, dst) == (2, len("materials") + 4)
    assert (dst / "README.md").read_text() == "materials" and (dst / "README.md").stat().st_uid == UID
    assert (dst / "data").stat().st_uid == UID and (dst / "data" / "table.csv").stat().st_uid == UID


def test_dangling_link_to_a_new_file_is_not_followed(area, caplog):
    _, victim, secret, src, dst = area
    (dst / "README.md").symlink_to(victim / "payload.pth")
    with caplog.at_level(logging.WARNING, "aifhub.fsafe"):
        copy(src, dst)
    assert not (victim / "payload.pth").exists() and (dst / "README.md").is_symlink()
    assert "README.md" in caplog.text and "symbolic link" in caplog.text
    assert (dst / "data" / "table.csv").exists()  # the rest still copied
    untouched(secret, victim)


def test_link_to_an_existing_root_file_is_neither_written_nor_given_away(area):
    _, victim, secret, src, dst = area
    (dst / "README.md").symlink_to(secret)
    copy(src, dst)
    with fsafe.opened(dst) as d:
        fsafe.set_tree(d, uid=UID, gid=UID, dir_mode=0o700, file_mode=0o600)
    untouched(secret, victim)


def test_link_to_a_folder_is_not_entered(area, caplog):
    _, victim, secret, src, dst = area
    (dst / "data").symlink_to(victim)
    with caplog.at_level(logging.WARNING, "aifhub.fsafe"):
        copy(src, dst)
    untouched(secret, victim)
    assert "data" in caplog.text


def test_fifo_and_socket_are_never_opened(area, caplog):
    import socket

    _, victim, secret, src, dst = area
    os.mkfifo(src / "pipe")  # in the source: would block a reader
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "sock"))
    os.mkfifo(dst / "README.md")  # in the destination: where a material belongs
    with caplog.at_level(logging.WARNING, "aifhub.fsafe"):
        copy(src, dst)
    sock.close()
    assert not (dst / "pipe").exists() and not (dst / "sock").exists()
    assert stat.S_ISFIFO((dst / "README.md").lstat().st_mode)
    assert "a FIFO" in caplog.text and "a socket" in caplog.text


def test_hard_link_is_never_given_away(area, caplog):
    _, victim, secret, src, dst = area
    os.link(secret, dst / "notes.txt")  # what a learner could do where protected_hardlinks is off
    with caplog.at_level(logging.WARNING, "aifhub.fsafe"), fsafe.opened(dst) as d:
        fsafe.set_tree(d, uid=UID, gid=UID, dir_mode=0o700, file_mode=0o644)
    st = secret.stat()
    assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o600
    assert "hard links" in caplog.text


def test_ensure_moves_a_link_aside_and_makes_the_folder(area, caplog):
    _, victim, secret, src, dst = area
    (dst / "course").symlink_to(victim)
    with caplog.at_level(logging.WARNING, "aifhub.fsafe"), fsafe.opened(dst) as d:
        d.ensure("course", 0o700, UID, UID).close()
    untouched(secret, victim)
    assert victim.stat().st_uid == 0
    assert (dst / "course").is_dir() and not (dst / "course").is_symlink() and (dst / "course").stat().st_uid == UID
    assert [p for p in dst.iterdir() if p.name.startswith("course.not-a-folder-")][0].is_symlink()
    assert "Moved" in caplog.text


def test_open_dir_refuses_a_link_in_the_path(area):
    root, victim, secret, src, dst = area
    (dst / "sub").symlink_to(victim)
    with pytest.raises(fsafe.UnsafePath):
        fsafe.open_dir(dst / "sub", trusted=root)


def test_write_replaces_a_planted_link_instead_of_writing_through_it(area):
    _, victim, secret, src, dst = area
    (dst / "gradebook.url").symlink_to(secret)
    with fsafe.opened(dst) as d:
        d.write("gradebook.url", "sqlite:///x")
        assert d.read_text("gradebook.url") == "sqlite:///x"
    untouched(secret, victim)
    assert not (dst / "gradebook.url").is_symlink()


def test_read_refuses_links_and_fifos(area):
    _, victim, secret, src, dst = area
    (dst / "l").symlink_to(secret)
    os.mkfifo(dst / "f")
    with fsafe.opened(dst) as d:
        with pytest.raises(fsafe.UnsafePath):
            d.read("l")
        with pytest.raises(fsafe.UnsafePath):
            d.read("f")  # returns at once: opened non-blocking, then refused


def test_over_long_paths_are_refused_or_walked_by_descriptor(area):
    _, victim, secret, src, dst = area
    with fsafe.opened(dst) as d:
        with pytest.raises(fsafe.UnsafePath, match="longer than 255"):
            d.create("x" * 300)
        deep = d.makedirs(["d" * 200] * 30)  # 6000 characters: beyond PATH_MAX, fine through descriptors
        with deep, deep.create("f") as f:
            f.write(b"deep")
        assert sum(1 for _ in fsafe.walk(d)) == 31
        assert fsafe.set_tree(d, uid=UID, gid=UID) == 32


def test_pack_leaves_out_links_and_specials(area):
    import io
    import tarfile

    _, victim, secret, src, dst = area
    (src / "leak").symlink_to(secret)
    (src / "dirleak").symlink_to(victim)
    os.mkfifo(src / "pipe")
    with fsafe.opened(src) as d:
        data = fsafe.pack(d)
    names = tarfile.open(fileobj=io.BytesIO(data)).getnames()
    assert sorted(names) == ["README.md", "data/table.csv"]


def test_a_link_swapped_in_during_copies_is_never_followed(area):
    """A learner's process swaps README.md and data/ between real entries and links to root's folder
    as fast as it can while root copies the materials again and again."""
    root, victim, secret, src, dst = area
    for i in range(50):
        (src / "data" / f"f{i}").write_text("x")
    stop = threading.Event()

    def swapper():
        n = 0
        while not stop.is_set():
            n += 1
            for name, target in (("README.md", victim / "planted"), ("data", victim)):
                link = dst / f".{name}.{n}"
                try:
                    link.symlink_to(target)
                    os.rename(link, dst / name)
                except OSError:
                    pass
            for name in ("README.md", "data"):
                try:
                    fsafe_remove(dst / name)
                except OSError:
                    pass

    thread = threading.Thread(target=swapper)
    thread.start()
    try:
        for _ in range(200):
            try:
                copy(src, dst)
            except OSError:
                pass  # the swap may make a copy fail; it must never land outside
    finally:
        stop.set()
        thread.join()
    assert sorted(p.name for p in victim.iterdir()) == ["secret"]
    untouched(secret, victim)


def fsafe_remove(path):
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        import shutil

        shutil.rmtree(path)
