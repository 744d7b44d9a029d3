"""The model cache: a model.tar.gz is extracted once and found again while the file is unchanged;
a changed file, a cache turned off or unusable, and concurrent extractions each get the right
folder, and old entries go while recently used ones stay."""
import os
import shutil
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from clip_search import artifact
from clip_search.artifact import CACHE_COMPLETE, CACHE_ENTRIES, extract_artifact, verify_artifact


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("CLIP_SEARCH_MODEL_CACHE", str(root))
    return root


def _tar(path, files: dict):
    source = path.parent / (path.name + ".src")
    source.mkdir()
    for name, text in files.items():
        (source / name).write_text(text)
    with tarfile.open(path, "w:gz") as tar:
        for name in files:
            tar.add(source / name, arcname=name)
    shutil.rmtree(source)
    return path


def test_the_test_model_is_extracted_once_and_verified_from_the_cache(cache, test_model_tar, tmp_path, monkeypatch):
    model = tmp_path / "model.tar.gz"
    shutil.copy(test_model_tar, model)
    first = extract_artifact(model, shared=True)
    assert first.parent == cache and (first / CACHE_COMPLETE).is_file()
    verify_artifact(first)

    def no_second_extraction(*args, **kwargs):
        raise AssertionError("extracted again")

    monkeypatch.setattr(tarfile, "open", no_second_extraction)
    assert extract_artifact(model, shared=True) == first
    # A private extraction is never the cache's folder (the server moves it).
    monkeypatch.undo()
    private = extract_artifact(model)
    assert private.parent != cache and private != first
    verify_artifact(private)


def test_a_rewritten_file_is_a_new_entry_with_its_own_content(cache, tmp_path):
    model = _tar(tmp_path / "m.tar.gz", {"a.txt": "one"})
    first = extract_artifact(model, shared=True)
    assert (first / "a.txt").read_text() == "one"
    time.sleep(0.01)
    model.unlink()
    _tar(model, {"a.txt": "two"})
    second = extract_artifact(model, shared=True)
    assert second != first and (second / "a.txt").read_text() == "two"


def test_off_and_an_unusable_cache_extract_privately(tmp_path, monkeypatch):
    model = _tar(tmp_path / "m.tar.gz", {"a.txt": "one"})
    monkeypatch.setenv("CLIP_SEARCH_MODEL_CACHE", "off")
    assert artifact.model_cache_root() is None
    assert (extract_artifact(model, shared=True) / "a.txt").read_text() == "one"
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("CLIP_SEARCH_MODEL_CACHE", str(blocked / "cache"))
    extracted = extract_artifact(model, shared=True)
    assert (extracted / "a.txt").read_text() == "one" and not str(extracted).startswith(str(blocked))


def test_a_broken_tar_is_still_a_model_load_error_and_leaves_nothing(cache, tmp_path):
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"not a tar")
    with pytest.raises(artifact.ModelLoadError, match="not a readable tar.gz"):
        extract_artifact(broken, shared=True)
    assert list(cache.iterdir()) == []


def test_extractions_at_once_end_in_one_whole_entry(cache, tmp_path):
    model = _tar(tmp_path / "m.tar.gz", {f"f{i}.txt": str(i) * 10_000 for i in range(20)})
    with ThreadPoolExecutor(6) as pool:
        found = set(pool.map(lambda _: extract_artifact(model, shared=True), range(6)))
    assert len(found) == 1
    entry = found.pop()
    assert sorted(p.name for p in entry.iterdir()) == sorted([CACHE_COMPLETE] + [f"f{i}.txt" for i in range(20)])
    assert [p.name for p in cache.iterdir()] == [entry.name]  # no scratch folder left


def test_old_entries_go_least_recently_used_first_and_recent_ones_stay(cache, tmp_path):
    old = time.time() - artifact.CACHE_KEEP_SECONDS - 60
    entries = []
    for number in range(CACHE_ENTRIES + 2):
        entry = extract_artifact(_tar(tmp_path / f"m{number}.tar.gz", {"n.txt": str(number)}), shared=True)
        os.utime(entry / CACHE_COMPLETE, (old + number, old + number))  # m0 least recently used
        entries.append(entry)
    recent = extract_artifact(_tar(tmp_path / "recent.tar.gz", {"n.txt": "r"}), shared=True)
    os.utime(recent / CACHE_COMPLETE, (time.time() - 5, time.time() - 5))
    scratch = cache / ".leftover-of-a-killed-process"
    scratch.mkdir()
    os.utime(scratch, (old, old))
    newest = extract_artifact(_tar(tmp_path / "newest.tar.gz", {"n.txt": "new"}), shared=True)
    kept = {path.name for path in cache.iterdir()}
    # The new entry, the recently used one and the most recent old ones up to CACHE_ENTRIES in all.
    expected = {newest.name, recent.name} | {entry.name for entry in entries[-(CACHE_ENTRIES - 2):]}
    assert kept == expected
